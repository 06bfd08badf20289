"""The kinds of events mauthserver publishes, and the shape of each one's data.

mauthserver publishes (mauthserver/events.py is the bus, mauthserver/service.py,
mauthserver/fanout.py and mauthserver/denied.py the publishers); the dashboard
(mauthclient/board.py) and `mauthctl events` (mauthclient/cli.py) consume.
Both sides name a kind with `EventKind` and ask its `family` instead of
matching strings. The values are the wire strings of the event stream
(`event:` lines of `GET /api/v1/events`); a kind a newer server sends that
this one does not know parses as None (`EventKind.parse`).

The data of each kind, besides the stream's own `at` (Unix time):

* `session.added|changed|removed` (`SessionEvent`): session, the session's
  view as `GET /api/v1/sessions` answers it; reason (removed only: deleted,
  timeout, stopped, evicted); follow (added and changed, only for a session
  whose authorization follows its announcements: what re-planning it against
  this announcement did, `added`, `changed`, `removed` (rules as "SOURCE
  GROUP MAX_TTL"), `untouched` and `skipped`; or `error` and `kept` when the
  announcement asks for no rule and the rules were kept as they were).
* `rule.added|changed|removed` (`RuleEvent`): rule (the desired rule),
  actor, reason (the audit action; `session-changed` when the rule follows
  its session's new announcement), previous (changed only); for added and
  changed also routers (each router's state of the rule as the server
  decides it, as in `GET /api/v1/rules`) and state (the rule's overall
  state: applied, pending or refused).
* `router.changed`: the router's view as `GET /api/v1/routers` answers it.
* `mode.changed` (`ModeEvent`): mode (enforce, monitor or null), actor.
* `denied` (`DeniedEvent`): a router's filter dropped packets of a (source,
  group) pair that is new or still growing; see mauthserver/denied.py.
* `denied.suppressed` (`DeniedSuppressedEvent`): router, suppressed (reports
  the rate limit held back in one poll), pairs (the router's denied pairs).
* `receiver.added|removed` (`ReceiverEvent`): receiver (the rule's JSON with
  created and actor), actor; added also routers (each router's state of the
  rule, as in `GET /api/v1/receivers`).
* `receiver.policy` (`ReceiverPolicyEvent`): policy (router, null for every
  router that has the interface; iface, mode, limit, updated, actor), actor.
* `receiver.denied` (`ReceiverDeniedEvent`): a router refused joins (or, in
  monitor, would have) of a (receiver, group, source) on an interface, new or
  still growing; see mauthserver/denied.py.
* The stream's own: `hello` (boot, last), `resync` and `overflow` (message).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NotRequired, TypedDict


class Family(StrEnum):
    """What an event is about."""

    SESSION = "session"
    RULE = "rule"
    ROUTER = "router"
    MODE = "mode"
    DENIED = "denied"
    RECEIVER = "receiver"
    STREAM = "stream"  # the stream's own: hello, resync, overflow


class EventKind(StrEnum):
    SESSION_ADDED = "session.added"
    SESSION_CHANGED = "session.changed"
    SESSION_REMOVED = "session.removed"
    RULE_ADDED = "rule.added"
    RULE_CHANGED = "rule.changed"
    RULE_REMOVED = "rule.removed"
    ROUTER_CHANGED = "router.changed"
    MODE_CHANGED = "mode.changed"
    DENIED = "denied"
    DENIED_SUPPRESSED = "denied.suppressed"
    SENDER_MOVED = "sender.moved"
    RECEIVER_ADDED = "receiver.added"
    RECEIVER_REMOVED = "receiver.removed"
    RECEIVER_POLICY = "receiver.policy"
    RECEIVER_DENIED = "receiver.denied"
    HELLO = "hello"
    RESYNC = "resync"
    OVERFLOW = "overflow"

    @property
    def family(self) -> Family:
        return _FAMILY[self]

    @classmethod
    def parse(cls, text: str) -> EventKind | None:
        """The kind named `text` on the wire; None for a kind this version does not know."""
        try:
            return cls(text)
        except ValueError:
            return None

    @classmethod
    def for_rule(cls, change: str) -> EventKind:
        """The kind of a rule change ("added", "changed", "removed")."""
        return _RULE[change]

    @classmethod
    def for_session(cls, change: str) -> EventKind:
        """The kind of a session directory event ("added", "changed", "removed")."""
        return _SESSION[change]


_FAMILY = {
    EventKind.SESSION_ADDED: Family.SESSION, EventKind.SESSION_CHANGED: Family.SESSION,
    EventKind.SESSION_REMOVED: Family.SESSION,
    EventKind.RULE_ADDED: Family.RULE, EventKind.RULE_CHANGED: Family.RULE, EventKind.RULE_REMOVED: Family.RULE,
    EventKind.ROUTER_CHANGED: Family.ROUTER,
    EventKind.MODE_CHANGED: Family.MODE,
    EventKind.DENIED: Family.DENIED, EventKind.DENIED_SUPPRESSED: Family.DENIED,
    EventKind.SENDER_MOVED: Family.DENIED,
    EventKind.RECEIVER_ADDED: Family.RECEIVER, EventKind.RECEIVER_REMOVED: Family.RECEIVER,
    EventKind.RECEIVER_POLICY: Family.RECEIVER, EventKind.RECEIVER_DENIED: Family.RECEIVER,
    EventKind.HELLO: Family.STREAM, EventKind.RESYNC: Family.STREAM, EventKind.OVERFLOW: Family.STREAM,
}
_RULE = {"added": EventKind.RULE_ADDED, "changed": EventKind.RULE_CHANGED, "removed": EventKind.RULE_REMOVED}
_SESSION = {"added": EventKind.SESSION_ADDED, "changed": EventKind.SESSION_CHANGED,
            "removed": EventKind.SESSION_REMOVED}

# Kinds that remove what they name (the others add or replace it).
REMOVALS = frozenset({EventKind.SESSION_REMOVED, EventKind.RULE_REMOVED, EventKind.RECEIVER_REMOVED})


# -- the data of each kind ------------------------------------------------------------


class SessionEvent(TypedDict):
    session: dict
    reason: NotRequired[str]
    follow: NotRequired[dict]


class RuleEvent(TypedDict):
    rule: dict
    actor: str
    reason: str
    previous: NotRequired[dict]
    routers: NotRequired[dict[str, dict]]
    state: NotRequired[str]


class ModeEvent(TypedDict):
    mode: str | None
    actor: str


class DeniedEvent(TypedDict):
    router: str
    source: str
    group: str
    reason: str
    packets: int
    bytes: int
    new_packets: int
    first: bool
    last_ttl: int
    last_seen: float | None
    iface: NotRequired[str]  # a pair a binding dropped: where its last offender came from
    mac: NotRequired[str]


class SenderMovedEvent(TypedDict):
    """A learning rule's sender showed up from another interface or MAC than the one its first packet pinned."""

    router: str
    source: str
    group: str
    reason: str  # wrong_iif (another interface) or wrong_mac (another MAC)
    packets: int  # the pair's dropped packets in the router's denied table
    new_packets: int


class ReceiverEvent(TypedDict):
    receiver: dict
    actor: str
    routers: NotRequired[dict[str, dict]]


class ReceiverPolicyEvent(TypedDict):
    policy: dict
    actor: str


class ReceiverDeniedEvent(TypedDict):
    """A router's filter refused joins of (receiver, group, source) on an interface: new, or more of them."""

    router: str
    iface: str
    receiver: str
    group: str
    source: str | None  # a source-specific join's source; None: any source
    reason: str  # join_refused or join_limit
    records: int  # refused join records in the router's table
    new_records: int  # since the last report (all of them when first)
    first: bool
    last_seen: float | None
    version: int  # of the last report: IGMP 1..3, MLD 1..2


class DeniedSuppressedEvent(TypedDict):
    router: str
    suppressed: int
    pairs: int


def session_event(session: dict, reason: str | None = None) -> SessionEvent:
    data = SessionEvent(session=session)
    if reason is not None:
        data["reason"] = reason
    return data


def rule_event(rule: dict, *, actor: str, reason: str, previous: dict | None = None,
               view: dict | None = None) -> RuleEvent:
    """A rule event's data; `view` (the rule's view, for added and changed) gives its routers and state."""
    data = RuleEvent(rule=rule, actor=actor, reason=reason)
    if previous is not None:
        data["previous"] = previous
    if view is not None:
        data["routers"] = view["routers"]
        data["state"] = view["state"]
    return data


def mode_event(mode: str | None, actor: str) -> ModeEvent:
    return ModeEvent(mode=mode, actor=actor)


def denied_suppressed_event(router: str, suppressed: int, pairs: int) -> DeniedSuppressedEvent:
    return DeniedSuppressedEvent(router=router, suppressed=suppressed, pairs=pairs)
