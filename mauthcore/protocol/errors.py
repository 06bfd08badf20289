"""The router protocol's one error hierarchy, and the reply codes it maps to.

Strategy (after h11 `_util.py` and ExaBGP `Notify`): every exception carries
the reply code a server answers with, so the server's error handling is a
lookup, never an if-chain. `code is None` means "stay silent": the datagram
was not addressed to us in any way we can answer safely (wrong length for v1,
no v2 magic, a response fed to the server...).

    ProtocolError                      .code: ReplyCode | None
    ├── RemoteProtocolError            the peer sent something we cannot accept
    │   ├── NotV1, NotV2               not our framing at all        (silence)
    │   ├── Malformed                  our framing, broken content   MALFORMED
    │   ├── UnknownCommand                                           UNKNOWN_COMMAND
    │   ├── InvalidArgument            e.g. a group that is not multicast
    │   ├── Unsupported                valid, but a field this version cannot act on
    │   ├── UnknownKey, BadAuth        v2 authentication failures
    ├── LocalProtocolError             we misused the API (a bug on our side)
    ├── CommandError                   a well-formed command the backend refused
    │   ├── Exists, NotFound, TableFull, BadCursor, BackendUnsupported (IPv6 on nfqueue)
    │   └── BackendFailure             the data plane failed: INTERNAL
    ├── RouterError                    client side: the router answered an error code
    │   ├── RouterExists, RouterNotFound, RouterTableFull, RouterBusy,
    │   ├── RouterRejected (MALFORMED, UNKNOWN_COMMAND, INVALID_ARGUMENT, UNSUPPORTED)
    │   ├── RouterAuthError (BAD_AUTH, UNKNOWN_KEY, STALE_*, REPLAY)
    │   └── RouterInternal
    └── Timeout                        client side: no valid answer after all tries
        └── RouterUnreachable          ... said by the UDP shell, naming the router

Any other exception escaping a `decode` function is a bug; the tests feed
random bytes to every decoder to keep it that way.
"""

from __future__ import annotations

import enum


class ReplyCode(enum.IntEnum):
    """Status byte of a v2 response (see docs/protocol.md, "Reply codes").

    0x0_: outcome of a command that was executed; 0x1_: the request was refused
    as invalid; 0x2_: authentication and session state; 0x3_: server conditions.
    A v1 server maps every code other than OK to the single v1 ERROR.
    """

    OK = 0x00
    EXISTS = 0x01
    NOT_FOUND = 0x02
    TABLE_FULL = 0x03
    MALFORMED = 0x10
    UNKNOWN_COMMAND = 0x11
    INVALID_ARGUMENT = 0x12
    UNSUPPORTED = 0x13
    BAD_AUTH = 0x20
    UNKNOWN_KEY = 0x21
    STALE_EPOCH = 0x22
    STALE_SESSION = 0x23
    REPLAY = 0x24
    BUSY = 0x30
    INTERNAL = 0x31


class ProtocolError(Exception):
    """Root of every error the protocol package raises on purpose."""

    code: ReplyCode | None = ReplyCode.INTERNAL

    def __init__(self, message: str, *, code: ReplyCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


# --- the peer sent garbage ---------------------------------------------------


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot accept.

    `seq` (v1) or `header` (v2, a RequestHeader) say what the bad datagram
    claimed to be, when the decoder got that far, so that a reply can name it.
    For v2, `header.authenticated` tells whether that claim can be trusted.
    """

    code: ReplyCode | None = ReplyCode.MALFORMED

    def __init__(self, message: str, *, seq: int | None = None, header: object = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.header = header


class NotV1(RemoteProtocolError):
    """Not an 11-byte v1 request (or 2-byte v1 response): ignore silently."""

    code = None


class NotV2(RemoteProtocolError):
    """No v2 magic/version, too short, or the wrong kind of message: ignore silently."""

    code = None


class Malformed(RemoteProtocolError):
    code = ReplyCode.MALFORMED


class UnknownCommand(RemoteProtocolError):
    code = ReplyCode.UNKNOWN_COMMAND


class InvalidArgument(RemoteProtocolError):
    code = ReplyCode.INVALID_ARGUMENT


class Unsupported(RemoteProtocolError):
    code = ReplyCode.UNSUPPORTED


class UnknownKey(RemoteProtocolError):
    code = ReplyCode.UNKNOWN_KEY


class BadAuth(RemoteProtocolError):
    code = ReplyCode.BAD_AUTH


# --- we misused the API ------------------------------------------------------


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on this side)."""

    code = ReplyCode.INTERNAL


# --- a backend refused or failed a well-formed command -----------------------


class CommandError(ProtocolError):
    """Raised by a Backend; the server answers with `code`."""


class Exists(CommandError):
    code = ReplyCode.EXISTS


class NotFound(CommandError):
    code = ReplyCode.NOT_FOUND


class TableFull(CommandError):
    code = ReplyCode.TABLE_FULL


class BadCursor(CommandError):
    code = ReplyCode.INVALID_ARGUMENT


class BackendInvalid(CommandError):
    """Well formed, but not so on this router: an interface it lacks, a rearm of a rule that does not learn."""

    code = ReplyCode.INVALID_ARGUMENT


class BackendUnsupported(CommandError):
    code = ReplyCode.UNSUPPORTED


class BackendFailure(CommandError):
    """The data plane failed (e.g. a map update returned an errno)."""

    code = ReplyCode.INTERNAL


# --- client side: what the router answered -----------------------------------


class RouterError(ProtocolError):
    """The router answered with an error code (v1: with ERROR, code None)."""

    def __init__(self, message: str, *, code: ReplyCode | None) -> None:
        super().__init__(message)
        self.code = code


class RouterExists(RouterError):
    pass


class RouterNotFound(RouterError):
    pass


class RouterTableFull(RouterError):
    pass


class RouterRejected(RouterError):
    """The router found the request invalid or could not do it (MALFORMED, INVALID_ARGUMENT...)."""


class RouterAuthError(RouterError):
    """Authentication or session trouble that retrying did not cure."""


class RouterBusy(RouterError):
    pass


class RouterInternal(RouterError):
    pass


_ROUTER_ERRORS: dict[ReplyCode, type[RouterError]] = {
    ReplyCode.EXISTS: RouterExists,
    ReplyCode.NOT_FOUND: RouterNotFound,
    ReplyCode.TABLE_FULL: RouterTableFull,
    ReplyCode.MALFORMED: RouterRejected,
    ReplyCode.UNKNOWN_COMMAND: RouterRejected,
    ReplyCode.INVALID_ARGUMENT: RouterRejected,
    ReplyCode.UNSUPPORTED: RouterRejected,
    ReplyCode.BAD_AUTH: RouterAuthError,
    ReplyCode.UNKNOWN_KEY: RouterAuthError,
    ReplyCode.STALE_EPOCH: RouterAuthError,
    ReplyCode.STALE_SESSION: RouterAuthError,
    ReplyCode.REPLAY: RouterAuthError,
    ReplyCode.BUSY: RouterBusy,
    ReplyCode.INTERNAL: RouterInternal,
}


def router_error(code: ReplyCode | None, message: str) -> RouterError:
    """The typed RouterError for an error reply (code None: a v1 ERROR)."""
    cls = _ROUTER_ERRORS.get(code, RouterError) if code is not None else RouterError
    return cls(message, code=code)


class Timeout(ProtocolError):
    """No acceptable answer after the configured number of tries; `hint` may say why."""

    code = None

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message + (f" ({hint})" if hint else ""))
        self.hint = hint


class RouterUnreachable(Timeout):
    """`Timeout`, said by the UDP shell with the router's address in the message."""
