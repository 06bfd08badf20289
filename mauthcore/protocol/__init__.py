"""The router protocol: v1 (the original design's message, docs/protocol.md "Version 1") and v2 (docs/protocol.md).

Sans-IO codecs (`v1`, `v2`), the server's at-most-once state machine
(`server.ServerCore`), the client's retransmitting calls (`client`), the
backend interface (`backend.Backend`) and thin blocking UDP shells (`udp`).
"""

from mauthcore.protocol.backend import Backend, MemoryBackend
from mauthcore.protocol.client import Call, ClientCore, HelloInfo, RetryPolicy, V1Call, V1ClientCore
from mauthcore.protocol.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ReplyCode,
    RouterError,
    RouterUnreachable,
    Timeout,
)
from mauthcore.protocol.keys import Key, KeyFileError, KeyRing, load_keys, parse_keys
from mauthcore.protocol.model import Counters, DeniedEntry, Mode, Reason, ReasonCounter, RuleEntry
from mauthcore.protocol.server import ServerCore, new_epoch, new_state_id

__all__ = [
    "Backend", "MemoryBackend",
    "Call", "ClientCore", "HelloInfo", "RetryPolicy", "V1Call", "V1ClientCore",
    "LocalProtocolError", "ProtocolError", "RemoteProtocolError", "ReplyCode", "RouterError",
    "RouterUnreachable", "Timeout",
    "Key", "KeyFileError", "KeyRing", "load_keys", "parse_keys",
    "Counters", "DeniedEntry", "Mode", "Reason", "ReasonCounter", "RuleEntry",
    "ServerCore", "new_epoch", "new_state_id",
]
