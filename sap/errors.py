"""Error hierarchies of the SAP and SDP codecs and of the session directory.

Strategy (as in h11's `_util.py`): one hierarchy per protocol, split in two.

* ``...DecodeError``: the peer sent garbage. A listener counts it, logs it with
  the packet's context and carries on; it is never a reason to crash.
* ``...UsageError``: we misused the API (built a message that cannot be put on
  the wire, passed a wrong type). That is a bug in our code.

SAP and SDP have no replies, so instead of a reply code every decode error
carries a short, stable ``reason`` slug (``"truncated"``, ``"zip-bomb"``,
``"c-missing-ttl"``...) that the directory uses as a counter name and a log
field. Any exception other than these escaping ``decode()``/``parse_sdp()`` is a
bug.
"""

from __future__ import annotations


class SAPError(Exception):
    """Base class of every error raised by the SAP codec."""

    reason: str = "sap-error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class SAPDecodeError(SAPError, ValueError):
    """The peer sent a packet that is not a valid SAP message (RFC 2974)."""

    reason = "malformed"


class SAPUsageError(SAPError, TypeError):
    """We asked the codec for something impossible (a bug on our side)."""

    reason = "usage"


class SDPError(Exception):
    """Base class of every error raised by the SDP codec."""

    reason: str = "sdp-error"

    def __init__(self, message: str, reason: str | None = None, line: int | None = None) -> None:
        self.detail = message
        self.line = line
        if reason is not None:
            self.reason = reason
        super().__init__(f"line {line}: {message}" if line else message)


class SDPDecodeError(SDPError, ValueError):
    """The peer sent a session description we cannot interpret safely.

    ``line`` is the 1-based line number in the body (None when the problem is
    not tied to one line, e.g. a missing ``o=``).
    """

    reason = "malformed"


class SDPUsageError(SDPError, TypeError):
    """We asked the SDP encoder for something impossible (a bug on our side)."""

    reason = "usage"
