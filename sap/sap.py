"""SAP, the Session Announcement Protocol (RFC 2974): a sans-IO codec.

Strategy: like h11, no sockets, clocks or logging. ``decode(bytes)`` returns a
frozen :class:`SAPMessage` or raises :class:`~sap.errors.SAPDecodeError`;
``encode(SAPMessage)`` returns bytes. All framing and length checks live here,
so a fuzz test of ``decode`` exercises exactly what the listener runs.

What a listener gets out of a packet:

* Encrypted packets (E=1) are recognised, not rejected: RFC 2974 §7 leaves the
  cipher unspecified, so the payload (payload type included, §6) comes back
  opaque with ``encrypted=True``; the directory counts and sets them aside.
* Compressed packets (C=1) are inflated with ``zlib.decompressobj`` and a hard
  cap on the *output* (``max_payload``, 64 KiB by default): a few hundred bytes
  of deflate can expand to gigabytes, so a plain ``zlib.decompress`` on a
  packet from the network is a denial of service. Oversized uncompressed
  payloads are refused with the same cap.
* Authentication data (auth len, in 32-bit words) is skipped by its length and
  kept verbatim in ``auth_data``; signatures are not verified (§8 leaves the
  key infrastructure to PGP/CMS, which mauth does not have).
* The optional payload type is split off; ``None`` means it was absent, which
  §6 allows only for SDP: "the payload section of such a packet will start
  with an SDP `v=0' field, which is not a legal MIME content type specifier".

Versions: §6 says V "MUST be set to 1"; Appendix A says a v1 tool can parse a
SAPv0 header (sdr 2.2), so V=0 is accepted too. Other values are refused:
their layout is unknown.
"""

from __future__ import annotations

import hashlib
import ipaddress
import zlib
from dataclasses import dataclass

from mauthcore.constants import SAP_GROUPS, SAP_PORT  # noqa: F401 (SAP_PORT: RFC 2974 section 3)
from sap.errors import SAPDecodeError, SAPUsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SAP_GROUP_IPV4_GLOBAL = ipaddress.IPv4Address(SAP_GROUPS[0])
"""RFC 2974 §3: the IPv4 global scope SAP group (sap.mcast.net)."""

MIME_SDP = "application/sdp"
DEFAULT_MAX_PAYLOAD = 64 * 1024
"""Largest payload (after inflating) that decode() accepts, in bytes."""

DEFAULT_BANDWIDTH_LIMIT = 4000
"""RFC 2974 §3.1: bits per second, "if not otherwise specified"."""

MIN_ANNOUNCEMENT_INTERVAL = 300.0
"""RFC 2974 §3.1: interval = max(300; (8*no_of_ads*ad_size)/limit) seconds."""

_MAX_AUTH_BYTES = 255 * 4

# First byte of the header: | V (3 bits) | A | R | T | E | C |
_VERSION_SHIFT = 5
_BIT_A = 0x10  # originating source is IPv6
_BIT_R = 0x08  # reserved: announcers send 0, listeners MUST ignore it
_BIT_T = 0x04  # 1 = session deletion
_BIT_E = 0x02  # payload (and payload type) encrypted
_BIT_C = 0x01  # payload (and payload type) zlib-compressed
_SUPPORTED_VERSIONS = (0, 1)


def sap_group_ipv6(scope: int) -> ipaddress.IPv6Address:
    """The IPv6 SAP group of a scope: RFC 2974 §3, ``FF0X:0:0:0:0:0:2:7FFE``."""
    if not isinstance(scope, int) or isinstance(scope, bool) or not 0 <= scope <= 0xF:
        raise SAPUsageError(f"IPv6 multicast scope {scope!r} is not 0-15")
    return ipaddress.IPv6Address(f"ff0{scope:x}::2:7ffe")


def announcement_interval(no_of_ads: int, ad_size: int, limit: float = DEFAULT_BANDWIDTH_LIMIT) -> float:
    """Base announcement interval in seconds (RFC 2974 §3.1 step 2).

    ``interval = max(300; (8*no_of_ads*ad_size)/limit)``. An announcer adds
    the random offset of step 3 itself; a listener uses this to predict how
    often it should hear each session (§4, implicit timeout).
    """
    if limit <= 0:
        raise SAPUsageError(f"bandwidth limit {limit!r} must be positive")
    return max(MIN_ANNOUNCEMENT_INTERVAL, 8.0 * no_of_ads * ad_size / limit)


def make_msg_id_hash(payload: bytes) -> int:
    """A message identifier hash for an announcer (RFC 2974 §6).

    §6 leaves the choice open, except that it MUST change when the session
    description changes and SHOULD NOT be zero; a 16-bit digest of the payload
    does both (0 is mapped to 1).
    """
    value = int.from_bytes(hashlib.blake2b(payload, digest_size=2).digest(), "big")
    return value or 1


@dataclass(frozen=True)
class SAPMessage:
    """One SAP packet, announcement or deletion.

    ``payload`` is the payload after the payload type, *inflated* when the
    packet was compressed (``compressed`` tells how it travelled). For an
    encrypted packet the payload is the opaque bytes after the authentication
    data and ``payload_type`` is None (it is inside the ciphertext).

    Built by decode(), or by hand to announce a session; construction checks
    that the message can be put on the wire and raises SAPUsageError if not.
    """

    origin: IPAddress
    msg_id_hash: int
    payload: bytes
    payload_type: str | None = MIME_SDP
    is_deletion: bool = False
    encrypted: bool = False
    compressed: bool = False
    auth_data: bytes = b""
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.origin, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise SAPUsageError(f"origin {self.origin!r} is not an ipaddress address")
        if (
            not isinstance(self.msg_id_hash, int)
            or isinstance(self.msg_id_hash, bool)
            or not 0 <= self.msg_id_hash <= 0xFFFF
        ):
            raise SAPUsageError(f"message id hash {self.msg_id_hash!r} is not 0-65535")
        if self.version not in _SUPPORTED_VERSIONS or isinstance(self.version, bool):
            raise SAPUsageError(f"SAP version {self.version!r} is not 0 or 1")
        for name in ("is_deletion", "encrypted", "compressed"):
            if not isinstance(getattr(self, name), bool):
                raise SAPUsageError(f"{name} must be a bool")
        if not isinstance(self.payload, bytes):
            raise SAPUsageError("payload must be bytes")
        if not isinstance(self.auth_data, bytes):
            raise SAPUsageError("auth_data must be bytes")
        if len(self.auth_data) % 4 or len(self.auth_data) > _MAX_AUTH_BYTES:
            raise SAPUsageError(
                f"authentication data is {len(self.auth_data)} bytes; "
                f"it must be a multiple of 4 and at most {_MAX_AUTH_BYTES}"
            )
        if self.payload_type is not None:
            if self.encrypted:
                raise SAPUsageError(
                    "an encrypted message carries its payload type inside the "
                    "ciphertext: payload_type must be None"
                )
            _check_payload_type(self.payload_type)
        elif self.encrypted:
            if not self.payload:
                raise SAPUsageError("an encrypted message needs a non-empty payload")
        elif not self.payload.startswith(b"v="):
            raise SAPUsageError(
                "the payload type may only be omitted when the payload is SDP "
                "starting with 'v=' (RFC 2974 section 6)"
            )

    @property
    def is_announcement(self) -> bool:
        return not self.is_deletion

    @property
    def is_sdp(self) -> bool:
        """True if the payload is (or claims to be) an SDP description."""
        if self.encrypted:
            return False
        if self.payload_type is None:
            return True
        return self.payload_type.split(";", 1)[0].strip().lower() == MIME_SDP


def _check_payload_type(text: object) -> None:
    if not isinstance(text, str):
        raise SAPUsageError("payload_type must be a str or None")
    if not text or not all(0x20 <= ord(ch) < 0x7F for ch in text):
        raise SAPUsageError(f"payload type {text!r} must be non-empty printable ASCII")


def announcement(
    origin: IPAddress | str,
    payload: bytes,
    *,
    msg_id_hash: int | None = None,
    payload_type: str | None = MIME_SDP,
    compressed: bool = False,
    auth_data: bytes = b"",
) -> SAPMessage:
    """Build an announcement; the hash defaults to make_msg_id_hash(payload)."""
    return SAPMessage(
        origin=_as_address(origin),
        msg_id_hash=make_msg_id_hash(payload) if msg_id_hash is None else msg_id_hash,
        payload=payload,
        payload_type=payload_type,
        compressed=compressed,
        auth_data=auth_data,
    )


def deletion(
    origin: IPAddress | str,
    payload: bytes,
    *,
    msg_id_hash: int,
    payload_type: str = MIME_SDP,
    compressed: bool = False,
    auth_data: bytes = b"",
) -> SAPMessage:
    """Build a deletion for the announcement sent with ``msg_id_hash``.

    RFC 2974 §6: "the deletion message is a single SDP line consisting of the
    origin field of the announcement to be deleted" (see
    ``sap.sdp.deletion_payload``). The hash is that of the announcement being
    deleted, so that listeners keyed on (hash, origin) find it too.
    """
    return SAPMessage(
        origin=_as_address(origin),
        msg_id_hash=msg_id_hash,
        payload=payload,
        payload_type=payload_type,
        is_deletion=True,
        compressed=compressed,
        auth_data=auth_data,
    )


def _as_address(value: IPAddress | str) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise SAPUsageError(f"origin {value!r} is not an IP address") from None


# RFC 2974 §6, Figure 1: packet format.
#
#    0                   1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   | V=1 |A|R|T|E|C|   auth len    |         msg id hash           |
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |                                                               |
#   :                originating source (32 or 128 bits)            :
#   :                                                               :
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |                    optional authentication data               |
#   :                              ....                             :
#   *-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*
#   |                      optional payload type                    |
#   +                                         +-+- - - - - - - - - -+
#   |                                         |0|                   |
#   + - - - - - - - - - - - - - - - - - - - - +-+                   |
#   |                                                               |
#   :                            payload                            :
#   |                                                               |
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# "If the E or C bits are set in the header both the payload type and payload
# are encrypted and/or compressed." (§6). "If the payload is to be compressed
# and encrypted, the compression MUST be performed first." (§6, C bit)


def decode(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> SAPMessage:
    """Decode one SAP packet (a whole UDP payload).

    Raises SAPDecodeError (with a ``reason`` slug) for anything that is not a
    SAP packet this module can represent; never any other exception.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SAPUsageError("decode() takes bytes")
    if not isinstance(max_payload, int) or max_payload < 1:
        raise SAPUsageError(f"max_payload {max_payload!r} must be a positive int")
    data = bytes(data)
    if len(data) < 4:
        raise SAPDecodeError(f"packet of {len(data)} bytes is shorter than the SAP header", "truncated")

    flags, auth_words = data[0], data[1]
    version = flags >> _VERSION_SHIFT
    if version not in _SUPPORTED_VERSIONS:
        raise SAPDecodeError(f"SAP version {version} is not supported (only 0 and 1)", "version")
    msg_id_hash = int.from_bytes(data[2:4], "big")

    addr_len = 16 if flags & _BIT_A else 4
    auth_end = 4 + addr_len + 4 * auth_words
    if len(data) < auth_end:
        raise SAPDecodeError(
            f"packet of {len(data)} bytes is shorter than its header with "
            f"{'IPv6' if addr_len == 16 else 'IPv4'} origin and {auth_words} words "
            f"of authentication data ({auth_end} bytes)",
            "truncated",
        )
    raw_origin = data[4 : 4 + addr_len]
    origin: IPAddress = (
        ipaddress.IPv6Address(raw_origin) if addr_len == 16 else ipaddress.IPv4Address(raw_origin)
    )
    auth_data = data[4 + addr_len : auth_end]
    body = data[auth_end:]
    if not body:
        raise SAPDecodeError("packet has no payload after its header", "empty-payload")

    encrypted = bool(flags & _BIT_E)
    compressed = bool(flags & _BIT_C)
    is_deletion = bool(flags & _BIT_T)

    if encrypted:
        # Opaque: the payload type is inside the ciphertext (and compression,
        # if any, was applied before encryption), so nothing more to parse.
        if len(body) > max_payload:
            raise SAPDecodeError(
                f"encrypted payload of {len(body)} bytes exceeds the {max_payload}-byte cap",
                "too-large",
            )
        payload_type, payload = None, body
    else:
        if compressed:
            body = _inflate(body, max_payload)
        elif len(body) > max_payload:
            raise SAPDecodeError(
                f"payload of {len(body)} bytes exceeds the {max_payload}-byte cap", "too-large"
            )
        payload_type, payload = _split_payload_type(body)

    return SAPMessage(
        origin=origin,
        msg_id_hash=msg_id_hash,
        payload=payload,
        payload_type=payload_type,
        is_deletion=is_deletion,
        encrypted=encrypted,
        compressed=compressed,
        auth_data=auth_data,
        version=version,
    )


def _inflate(body: bytes, max_payload: int) -> bytes:
    """Inflate a zlib payload, refusing to produce more than max_payload bytes.

    RFC 2974 §6 specifies zlib (RFC 1950); Appendix B notes SAPv1 said gzip
    "by mistake", so a gzip header is accepted too (wbits 32+15 autodetects).
    """
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        out = inflater.decompress(body, max_payload)
        if inflater.unconsumed_tail:
            # Output hit the cap with input left over: a zip bomb, or just a
            # description far larger than any SAP packet should carry.
            raise SAPDecodeError(f"compressed payload inflates to more than {max_payload} bytes", "zip-bomb")
        out += inflater.flush()
    except zlib.error as exc:
        raise SAPDecodeError(f"compressed payload is not valid zlib data: {exc}", "bad-compression") from None
    if len(out) > max_payload:
        raise SAPDecodeError(f"compressed payload inflates to more than {max_payload} bytes", "zip-bomb")
    if not inflater.eof:
        raise SAPDecodeError("compressed payload is truncated", "bad-compression")
    if inflater.unused_data:
        raise SAPDecodeError(
            f"{len(inflater.unused_data)} bytes of garbage follow the compressed payload",
            "bad-compression",
        )
    if not out:
        raise SAPDecodeError("compressed payload inflates to nothing", "empty-payload")
    return out


def _split_payload_type(body: bytes) -> tuple[str | None, bytes]:
    """Split "<MIME type> NUL <payload>", or recognise a type-less SDP payload."""
    if body.startswith(b"v="):
        # §6: no payload type; "v=" is not a legal start of a MIME type.
        return None, body
    nul = body.find(b"\0")
    if nul < 0:
        raise SAPDecodeError(
            "payload neither starts with an SDP 'v=' line nor carries a NUL-terminated payload type",
            "payload-type",
        )
    raw = body[:nul]
    if not raw or not all(0x20 <= b < 0x7F for b in raw):
        raise SAPDecodeError(f"payload type {raw[:64]!r} is not printable ASCII", "payload-type")
    return raw.decode("ascii"), body[nul + 1 :]


def encode(msg: SAPMessage, *, compress_level: int = 9) -> bytes:
    """Encode a message; a ``compressed`` one is deflated here (zlib format).

    For an encrypted message the payload is written as given: the caller has
    already compressed (if ``compressed``) and encrypted it.
    """
    if not isinstance(msg, SAPMessage):
        raise SAPUsageError(f"encode() takes a SAPMessage, not {type(msg).__name__}")
    flags = msg.version << _VERSION_SHIFT
    if msg.origin.version == 6:
        flags |= _BIT_A
    if msg.is_deletion:
        flags |= _BIT_T
    if msg.encrypted:
        flags |= _BIT_E
    if msg.compressed:
        flags |= _BIT_C
    body = msg.payload
    if msg.payload_type is not None:
        body = msg.payload_type.encode("ascii") + b"\0" + body
    if msg.compressed and not msg.encrypted:
        body = zlib.compress(body, compress_level)
    return (
        bytes((flags, len(msg.auth_data) // 4))
        + msg.msg_id_hash.to_bytes(2, "big")
        + msg.origin.packed
        + msg.auth_data
        + body
    )
