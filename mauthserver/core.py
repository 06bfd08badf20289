"""mauthserver's core: desired state, commands, and one reconciler per router, all pure.

Strategy (faucet's Valve: the core decides, a thin shell acts). Nothing here
touches a socket, SQLite or the clock; `now` is a parameter everywhere.

* **Commands** (`plan_add`, `plan_remove`, `plan_authorize`, `plan_revoke`,
  `plan_session_gone`, and `plan_follow` when an authorized session's
  announcement changes) look at the desired state and a request and return the
  list of `Change`s to make, or raise a `Refused` naming why in one sentence.
  The service commits those changes to the store in one transaction and only
  then applies them to the in-memory `Fleet` and acknowledges the client.
* **Reconcilers** (`RouterCore`): one per router. It is told what happened
  (`on_hello`, `on_probe`, `on_listed`, `on_done`, `on_refused`, `on_unreachable`) and
  says what to do next (`next_action`: probe, LIST, MODE, one install or
  removal, or wait until some time). Convergence is level-triggered: the
  reconciler compares the desired state with what it believes the router
  holds, so a command that arrives mid-way, a router that restarted or a
  mediator that was killed in the middle of a fan-out all end in the same
  place. What it believes is verified with LIST after every contact that
  could invalidate it: the first contact after our start, a new epoch (the
  daemon restarted), a new state_id (the router's tables were recreated: it
  lost its rules), a rule count that disagrees with our belief (someone
  changed the router behind our back), and periodically (`verify_interval`).
* The router table converges to exactly the desired state: rules the router
  holds that are not desired are removed. The mediator owns the tables of the
  routers it manages (see README, "mauthserver").

Installs use REPLACE and removals treat NOT_FOUND as done, so every router
operation is idempotent and may be repeated after any crash or restart.
Operations the router refuses for good (TABLE_FULL, INVALID_ARGUMENT,
UNSUPPORTED) are remembered per rule and not retried until the rule changes
or the next verification; anything else (no answer, BUSY, INTERNAL) backs
off exponentially and tries again.

A bound rule reaches each router as that router is to hold it (`Rule.on`: an
interface named per router, "r1=eth1", is eth1 with the MAC and learning on
r1 and the reverse-path check alone elsewhere), and what a router holds is
compared with that (`Held`: the terms and the resolved binding), so a router
found holding another binding gets REPLACE like one holding another TTL. A
re-arm (REARM: forget the sender a learning rule pinned) is an event, not a
state: each router's reconciler keeps the keys asked for until the router
answered (`RouterCore.rearm`), and sends one once the router holds the rule.

The probe (every `probe_interval`) is COUNTERS on the session we hold: a
router that restarted answers STALE_EPOCH, upon which the client core says
HELLO and we learn the new epoch and state_id; a router that kept running
tells its rule count, which betrays drift. Probing with HELLO instead would
open a new session on the router at every probe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mauthcore.protocol.model import Counters, IfaceReceiversEntry, Mode, ReceiverEntry, RuleEntry
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Binding, IPAddress, Rule, RuleError, RuleKey, check_source, check_ttl

# =============================================================================
# Desired state and commands
# =============================================================================


@dataclass(frozen=True)
class DesiredRule:
    """A rule the operator wants on every router, with where it came from."""

    rule: Rule
    session_id: str | None = None
    expire_with_session: bool = False
    created: float = 0.0
    updated: float = 0.0
    actor: str = ""

    @property
    def key(self) -> RuleKey:
        return self.rule.key

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.rule.as_json(),
            "session": self.session_id,
            "expire_with_session": self.expire_with_session,
            "created": self.created,
            "updated": self.updated,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class Put:
    """Create or overwrite a desired rule."""

    rule: DesiredRule
    previous: DesiredRule | None = None

    @property
    def key(self) -> RuleKey:
        return self.rule.key

    @property
    def kind(self) -> str:
        return "added" if self.previous is None else "changed"


@dataclass(frozen=True)
class Delete:
    """Remove a desired rule."""

    previous: DesiredRule

    @property
    def key(self) -> RuleKey:
        return self.previous.key

    kind = "removed"


Change = Put | Delete


class Refused(Exception):
    """A command we will not carry out; the message is one sentence.

    `status` is the HTTP status the API answers with, `code` a stable slug
    for scripts, `details` extra JSON-ready facts (e.g. suggested senders).
    """

    status = 400
    code = "invalid"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(Refused):
    status, code = 400, "invalid"


class NotFound(Refused):
    status, code = 404, "not_found"


class Conflict(Refused):
    status, code = 409, "exists"


class Unprocessable(Refused):
    status, code = 422, "needs_input"


@dataclass(frozen=True)
class DesiredReceiver:
    """A receiver rule the operator wants on every router (each router refuses one naming an interface it
    does not guard, and carries on with the others)."""

    rule: ReceiverRule
    created: float = 0.0
    actor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.rule.as_json(), "created": self.created, "actor": self.actor}


@dataclass(frozen=True)
class DesiredPolicy:
    """The receiver policy wanted for interface `policy.iface` on router `router` ('': every router that has
    the interface; a router's own row wins over it)."""

    router: str
    policy: IfacePolicy
    updated: float = 0.0
    actor: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.router, self.policy.iface

    def to_dict(self) -> dict[str, Any]:
        return {"router": self.router or None, **self.policy.as_json(), "updated": self.updated,
                "actor": self.actor}


def make_receiver(obj: object) -> ReceiverRule:
    """A receiver rule from its JSON (the API's body); Invalid (one sentence) when it is not one."""
    try:
        return ReceiverRule.from_json(obj)
    except RuleError as exc:
        raise Invalid(str(exc)) from None


def make_policy(iface: object, mode: object, limit: object) -> IfacePolicy:
    try:
        return IfacePolicy.make(iface, mode, limit)
    except RuleError as exc:
        raise Invalid(str(exc)) from None


def make_rule(source: object, group: object, max_ttl: object, *, pps: object = 0, bps: object = 0,
              binding: object = None) -> Rule:
    """A validated rule; `binding` is a Binding, its JSON (`Binding.as_json`, as the API takes it) or None."""
    try:
        if binding is not None and not isinstance(binding, Binding):
            binding = Binding.from_json(binding)
        return Rule.make(source, group, max_ttl, pps=pps, bps=bps, binding=binding)  # type: ignore[arg-type]
    except RuleError as exc:
        raise Invalid(str(exc)) from None


def make_key(source: object, group: object) -> RuleKey:
    try:
        return RuleKey.make(source, group)  # type: ignore[arg-type]
    except RuleError as exc:
        raise Invalid(str(exc)) from None


def plan_add(desired: Mapping[RuleKey, DesiredRule], rule: Rule, *, replace_existing: bool, actor: str,
             now: float, session_id: str | None = None, expire_with_session: bool = False) -> list[Change]:
    """Add `rule`; an identical rule is left as it is (so a retried command is harmless)."""
    old = desired.get(rule.key)
    if old is not None and old.rule == rule:
        return []
    if old is not None and not replace_existing:
        limits = "".join(f", {n} {v}" for n, v in (("pps", old.rule.pps), ("bps", old.rule.bps)) if v)
        limits += f", bound {old.rule.binding}" if old.rule.bound else ""
        raise Conflict(f"a rule for {rule.key} already exists with max TTL {old.rule.max_ttl}{limits};"
                       " use replace to change it", rule=old.to_dict())
    new = DesiredRule(rule, session_id, expire_with_session and session_id is not None,
                      created=old.created if old else now, updated=now, actor=actor)
    return [Put(new, old)]


def plan_remove(desired: Mapping[RuleKey, DesiredRule], key: RuleKey) -> list[Change]:
    old = desired.get(key)
    if old is None:
        raise NotFound(f"there is no rule for {key}")
    return [Delete(old)]


def plan_flush(desired: Mapping[RuleKey, DesiredRule]) -> list[Change]:
    return [Delete(r) for _, r in sorted(desired.items())]


def plan_revoke(desired: Mapping[RuleKey, DesiredRule], session_id: str) -> list[Change]:
    """Remove every rule that `authorize` made from session `session_id`."""
    changes: list[Change] = [Delete(r) for k, r in sorted(desired.items()) if r.session_id == session_id]
    if not changes:
        raise NotFound(f"no rule was authorized from session {session_id}")
    return changes


# Why a session left the directory -> whether its expiring rules go with it.
# Eviction is the directory protecting its memory, not the session ending.
ENDING_REASONS = frozenset({"deleted", "timeout", "stopped"})


def plan_session_gone(desired: Mapping[RuleKey, DesiredRule], session_id: str, reason: str) -> list[Change]:
    """The rules to remove because session `session_id` ended (`reason`)."""
    if reason not in ENDING_REASONS:
        return []
    return [Delete(r) for k, r in sorted(desired.items())
            if r.session_id == session_id and r.expire_with_session]


# -- authorize: a session's announced flows -> sender rules --------------------

IPV6_DEFAULT_MAX_TTL = 255
"""The max TTL (hop limit) of a rule authorized from an IPv6 group when no max TTL is given.

An IPv6 c= line has no TTL (RFC 8866 section 5.7: "IPv6 multicast does not
use TTL scoping, and hence the TTL value MUST NOT be present"): how far a
group's packets go is bounded by the scope in its address (ff05:: site,
ff08:: organization, ff0e:: global), which routers enforce at zone
boundaries, not by a hop count. So the announcement gives no hop limit to
check against, and a guessed one would drop the packets of a sender the
operator just authorized whenever the sender's hop limit is higher. The
default therefore does not restrict the hop limit; an operator who wants a
cap gives one (`mauthctl authorize --max-ttl`)."""


@dataclass(frozen=True)
class FlowView:
    """What `authorize` needs to know about one group of a session."""

    group: IPAddress
    ttl: int | None
    declared: tuple[IPAddress, ...]  # "incl" sources; empty: any-source (or excl)
    excluded: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class SessionView:
    """The parts of a `sap.directory.Session` that `authorize` uses."""

    id: str
    name: str
    origin: str
    announcer: IPAddress
    flows: tuple[FlowView, ...]

    @classmethod
    def of(cls, session: Any) -> SessionView:  # a sap.directory.Session
        desc = session.description
        declared = desc.senders
        excluded = desc.excluded
        flows = tuple(
            FlowView(g.address, g.ttl, declared.get(g.address, ()), excluded.get(g.address, ()))
            for g in session.groups
        )
        return cls(session.id, session.name, session.origin, session.announcer, flows)

    def suggestions(self) -> list[str]:
        """Addresses an operator might mean as the sender: never assumed, only offered."""
        out: dict[str, None] = {}
        try:
            origin = ipaddress.ip_address(self.origin)
        except ValueError:
            origin = None
        for addr in (origin, self.announcer):
            if addr is None:
                continue
            try:
                check_source(addr)  # never suggest what cannot be a rule: multicast, link-local...
            except RuleError:
                continue
            out.setdefault(str(addr))
        return list(out)


@dataclass(frozen=True)
class AuthorizePlan:
    changes: list[Change]
    rules: list[DesiredRule]  # every rule the session now has (new, changed or already there)
    skipped: list[dict[str, str]]  # {"group", "source"?, "reason"}: flows that gave no rule


def _authorize_params(senders: Iterable[object], max_ttl: object) -> tuple[list[IPAddress], int | None]:
    """The senders and the max TTL override of an authorization, checked."""
    given: list[IPAddress] = []
    for s in senders:
        try:
            given.append(ipaddress.ip_address(str(s).strip()))
        except ValueError:
            raise Invalid(f"sender {s!r} is not an IP address") from None
    ttl_override = None
    if max_ttl is not None:
        try:
            ttl_override = check_ttl(max_ttl)
        except RuleError as exc:
            raise Invalid(str(exc)) from None
    return given, ttl_override


def _wanted_rules(session: SessionView, given: list[IPAddress],
                  ttl_override: int | None) -> tuple[dict[RuleKey, Rule], list[dict[str, str]]]:
    """The rules an authorization with these parameters asks of `session` as announced now, and the
    flows that give none; raises Unprocessable when it asks for nothing (see `plan_authorize`)."""
    if not session.flows:
        raise Unprocessable(f"session {session.id} ({session.name!r}) announces no multicast group")
    if not given and not any(f.declared for f in session.flows):
        raise Unprocessable(
            f"session {session.id} ({session.name!r}) is any-source: it declares no sender, so give the"
            f" sender's address (suggestions: {', '.join(session.suggestions()) or 'none'})",
            suggestions=session.suggestions(), session=session.id)

    wanted: dict[RuleKey, Rule] = {}
    skipped: list[dict[str, str]] = []
    for flow in session.flows:
        group = str(flow.group)
        if given:
            same_family = [s for s in given if s.version == flow.group.version]
            if not same_family:
                skipped.append({"group": group, "reason": f"no sender of its address family (IPv{flow.group.version})"
                                                          " was given"})
                continue
            sources = [s for s in same_family if s not in flow.excluded]
            for s in same_family:
                if s in flow.excluded:
                    skipped.append({"group": group, "source": str(s),
                                    "reason": f"the session excludes {s} from {group}"})
        else:
            sources = list(flow.declared)
            if not sources:
                skipped.append({"group": group, "reason": "the session declares no sender for this group"})
                continue
        ttl = ttl_override if ttl_override is not None else flow.ttl
        if ttl is None and flow.group.version == 6:
            ttl = IPV6_DEFAULT_MAX_TTL
        if ttl is None or ttl == 0:
            what = "no TTL" if ttl is None else "TTL 0"
            skipped.append({"group": group, "reason": f"its c= line gives {what}; give a max TTL"})
            continue
        for s in sources:
            try:
                rule = Rule.make(s, flow.group, ttl)
            except RuleError as exc:
                skipped.append({"group": group, "source": str(s), "reason": str(exc)})
                continue
            old = wanted.get(rule.key)
            if old is None or old.max_ttl < rule.max_ttl:  # a sender on one group twice: the larger TTL
                wanted[rule.key] = rule
    if not wanted:
        raise Unprocessable(f"session {session.id} ({session.name!r}) gives no rule this mediator can install: "
                            + "; ".join(f"{s['group']}: {s['reason']}" for s in skipped),
                            skipped=skipped, session=session.id)
    return wanted, skipped


def plan_authorize(desired: Mapping[RuleKey, DesiredRule], session: SessionView, *,
                   senders: Iterable[object] = (), max_ttl: object = None,
                   expire_with_session: bool = False, replace_existing: bool = False,
                   actor: str, now: float) -> AuthorizePlan:
    """Turn an announced session into sender rules (see README, "authorize").

    For each group: the senders the session's "incl" source filters declare
    for it, or the `senders` given (which then apply to every group of their
    address family), with the max TTL of its c= line unless `max_ttl` is
    given; an IPv6 group, whose c= line has no TTL, gets IPV6_DEFAULT_MAX_TTL.
    A session that declares no sender at all needs `senders`; its origin and
    announcer are only offered as suggestions. A given sender that the
    session excludes from a group ("excl") is not authorized there.
    """
    given, ttl_override = _authorize_params(senders, max_ttl)
    wanted, skipped = _wanted_rules(session, given, ttl_override)

    changes: list[Change] = []
    result: list[DesiredRule] = []
    conflicts = []
    for key, rule in sorted(wanted.items()):
        held = desired.get(key)
        if held is not None and held.rule.max_ttl == rule.max_ttl:
            if expire_with_session and held.session_id == session.id and not held.expire_with_session:
                new = replace(held, expire_with_session=True, updated=now, actor=actor)
                changes.append(Put(new, held))
                result.append(new)
            else:
                result.append(held)  # already there: keep its provenance
            continue
        if held is not None and not replace_existing:
            conflicts.append(f"{key} has max TTL {held.rule.max_ttl}, the session asks for {rule.max_ttl}")
            continue
        new = DesiredRule(rule, session.id, expire_with_session, created=held.created if held else now,
                          updated=now, actor=actor)
        changes.append(Put(new, held))
        result.append(new)
    if conflicts:
        raise Conflict("rules already exist with another max TTL (" + "; ".join(conflicts)
                       + "); use replace to overwrite them", session=session.id)
    return AuthorizePlan(changes, result, skipped)


# -- following: an authorization re-planned against a session's new announcement --------


@dataclass(frozen=True)
class Authorization:
    """What an operator asked `authorize` for, kept (table `authorizations`) so that its rules can follow
    the session: the senders given (empty: the ones the session declares), the max TTL override,
    whether the rules expire with the session, and whether they follow its later announcements."""

    session_id: str
    senders: tuple[str, ...] = ()
    max_ttl: int | None = None
    expire_with_session: bool = False
    follow: bool = True
    actor: str = ""
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"senders": list(self.senders), "max_ttl": self.max_ttl,
                "expire_with_session": self.expire_with_session, "follow": self.follow,
                "actor": self.actor, "created": self.created, "updated": self.updated}

    def again(self, senders: Iterable[object], max_ttl: int | None, expire_with_session: bool, follow: bool,
              actor: str, now: float) -> Authorization:
        """This authorization after `authorize` of its session again. Senders given both times add up, so
        that naming a second sender does not, at the session's next change, drop the first one's rules
        (revoke and authorize again to drop one); otherwise (the session's declared senders before or now)
        the latest senders are followed. Max TTL, expire-with-session and follow are the latest."""
        latest = tuple(dict.fromkeys(str(s) for s in senders))
        if self.senders and latest:
            latest = tuple(dict.fromkeys(self.senders + latest))
        return replace(self, senders=latest, max_ttl=max_ttl, expire_with_session=expire_with_session,
                       follow=follow, actor=actor, updated=now)


def authorization_params(senders: Iterable[object], max_ttl: object) -> tuple[tuple[str, ...], int | None]:
    """The senders (canonical text, each once) and the max TTL override of an authorization, checked."""
    given, ttl_override = _authorize_params(senders, max_ttl)
    return tuple(dict.fromkeys(str(s) for s in given)), ttl_override


def rule_text(rule: Rule) -> str:
    """A rule as the audit detail lists it: "SOURCE GROUP MAX_TTL"."""
    return f"{rule.source} {rule.group} {rule.max_ttl}"


@dataclass(frozen=True)
class FollowPlan:
    changes: list[Change]
    untouched: list[dict[str, str]]  # {"source", "group", "reason"}: wanted, but held by a rule not this one's
    skipped: list[dict[str, str]]  # as in AuthorizePlan

    def detail(self) -> dict[str, list[str]]:
        """What the follow-up does, for its audit row and the session event."""
        out: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for c in self.changes:
            if isinstance(c, Delete):
                out["removed"].append(rule_text(c.previous.rule))
            elif c.previous is None:
                out["added"].append(rule_text(c.rule.rule))
            else:
                out["changed"].append(f"{rule_text(c.rule.rule)} (was max TTL {c.previous.rule.max_ttl})"
                                      if c.previous.rule.max_ttl != c.rule.rule.max_ttl
                                      else f"{rule_text(c.rule.rule)} (now expires with the session)")
        return out


def plan_follow(desired: Mapping[RuleKey, DesiredRule], own: Mapping[RuleKey, DesiredRule], session: SessionView,
                auth: Authorization, *, actor: str, now: float) -> FollowPlan:
    """Re-plan authorization `auth` against `session` as announced now (its rules follow the session).

    `own` are the desired rules authorized from this session (`Fleet.session_rules`), `desired` all of
    them. The rules `auth`'s parameters ask for now are computed exactly as `plan_authorize` does; then
    a wanted rule that no rule holds is added, one of the session's own rules with other terms is
    changed (keeping when it was created), and an own rule no longer wanted is removed. A wanted
    (source, group) held by a rule the session did not make (added by hand, or from another session) is
    never touched: it is reported as untouched. An authorization that does not follow plans nothing.
    When the new announcement asks for no rule at all (an any-source session now needs a sender that
    was not given, a group without TTL...), `Unprocessable` is raised, as `plan_authorize` would: the
    caller keeps the rules as they are.
    """
    if not auth.follow:
        return FollowPlan([], [], [])
    given, ttl_override = _authorize_params(auth.senders, auth.max_ttl)
    wanted, skipped = _wanted_rules(session, given, ttl_override)
    changes: list[Change] = []
    untouched: list[dict[str, str]] = []
    for key, rule in sorted(wanted.items()):
        held = desired.get(key)
        if held is None:
            changes.append(Put(DesiredRule(rule, session.id, auth.expire_with_session, created=now, updated=now,
                                           actor=actor)))
        elif key not in own:
            untouched.append({"source": str(key.source), "group": str(key.group),
                              "reason": "held by a rule not made by this authorization"
                                        + (f" (session {held.session_id})" if held.session_id else "")})
        else:
            expire = held.expire_with_session or auth.expire_with_session
            if held.rule != rule or held.expire_with_session != expire:
                changes.append(Put(replace(held, rule=rule, expire_with_session=expire, updated=now, actor=actor),
                                   held))
    changes += [Delete(r) for k, r in sorted(own.items()) if k not in wanted]
    return FollowPlan(changes, untouched, skipped)


# =============================================================================
# The per-router reconciler
# =============================================================================

Held = tuple[int, int, int, Binding]
"""What a router holds for a key: the rule's terms (max TTL, pps, bps) and its binding as that router
holds it (`Rule.on`). Two routers may rightly hold one desired rule differently ("r1=eth1" is eth1 on r1,
rpf alone elsewhere), so the binding is compared after resolving it for the router, never as written."""


def held(rule: Rule) -> Held:
    """What a router holding `rule` (already resolved for it) holds."""
    return (*rule.terms, rule.binding)


@dataclass(frozen=True)
class Install:
    rule: Rule

    @property
    def key(self) -> RuleKey:
        return self.rule.key


@dataclass(frozen=True)
class Uninstall:
    key: RuleKey


Op = Install | Uninstall


@dataclass(frozen=True)
class Probe:
    """Ask the router how it is (COUNTERS on our session; the client core says HELLO when it must)."""


@dataclass(frozen=True)
class ReadRules:
    """Read every rule the router holds (LIST, page by page) to learn what is applied there."""


@dataclass(frozen=True)
class SetMode:
    mode: Mode


@dataclass(frozen=True)
class RearmRule:
    """Make the router forget the (interface, MAC) its learning rule for `key` pinned (REARM)."""

    key: RuleKey


@dataclass(frozen=True)
class Apply:
    op: Op


@dataclass(frozen=True)
class ReadReceivers:
    """Read the router's receiver rules (RECV_LIST, page by page) and interface policies (RECV_POLICY get)."""


@dataclass(frozen=True)
class ApplyReceiver:
    """RECV_ADD (`add`) or RECV_REMOVE one receiver rule."""

    rule: ReceiverRule
    add: bool


@dataclass(frozen=True)
class SetPolicy:
    """RECV_POLICY set: one interface's receiver policy."""

    policy: IfacePolicy


@dataclass(frozen=True)
class Wait:
    until: float


Action = Probe | ReadRules | SetMode | RearmRule | Apply | ReadReceivers | ApplyReceiver | SetPolicy | Wait


class ReceiverWants:
    """The desired receiver rules and interface policies (a mirror of the store), which every router's
    reconciler reads (`Fleet.add_router` hands it the fleet's)."""

    def __init__(self, rules: Iterable[DesiredReceiver] = (), policies: Iterable[DesiredPolicy] = ()) -> None:
        self.rules: dict[ReceiverRule, DesiredReceiver] = {d.rule: d for d in rules}
        self.policies: dict[tuple[str, str], DesiredPolicy] = {d.key: d for d in policies}

    def policies_for(self, router: str, guarded: Iterable[str]) -> dict[str, IfacePolicy]:
        """Interface -> the policy `router` is to hold there: its own row, else the every-router row of an
        interface it guards (`guarded`, as its RECV_POLICY said); an interface named by neither is left alone."""
        guarded = set(guarded)
        out = {iface: d.policy for (name, iface), d in self.policies.items() if name == "" and iface in guarded}
        out.update({iface: d.policy for (name, iface), d in self.policies.items() if name == router})
        return out

UNKNOWN, UP, DOWN, CONVERGING = "unknown", "up", "down", "converging"


@dataclass(frozen=True)
class Timers:
    probe_interval: float = 2.0  # probe this often when idle, to notice restarts and drift
    verify_interval: float = 60.0  # LIST this often even when nothing looks wrong (0: never)
    retry_base: float = 0.5  # first back-off after a failure
    retry_max: float = 10.0  # back-off cap

    def backoff(self, failures: int, jitter: float) -> float:
        """Delay after the `failures`-th consecutive failure; `jitter` in [0, 1) spreads routers apart."""
        delay = min(self.retry_max, self.retry_base * 2.0 ** max(0, failures - 1))
        return delay * (0.75 + 0.5 * jitter)


class RouterCore:
    """What mauthserver knows and believes about one router, and what to do next."""

    def __init__(self, name: str, host: str, port: int, timers: Timers | None = None, *,
                 jitter: Callable[[], float] = lambda: 0.5,
                 applied: Mapping[RuleKey, Held] | None = None) -> None:
        self.name, self.host, self.port = name, host, port
        self.timers = timers or Timers()
        self._jitter = jitter
        self.status = UNKNOWN
        self.epoch: int | None = None
        self.state_id: int | None = None
        self.mode: Mode | None = None
        self.backend = ""
        self.rule_count: int | None = None  # as the router last said
        self.last_contact: float | None = None
        self.last_error = ""
        self.failures = 0  # consecutive
        self.retry_at: float | None = None
        self.probe_due: float | None = None  # None: probe now
        self.verify_due: float | None = None
        self.verified = False
        # What we believe the router holds: key -> Held, (max TTL, pps, bps, binding as it holds it)
        # (from the store until verified).
        self.applied: dict[RuleKey, Held] = dict(applied or {})
        self.traffic: dict[RuleKey, RuleEntry] = {}  # from the last LIST
        self.filter: Counters | None = None  # the router's filter counters, as last read
        # key -> (what we wanted it to hold, why), not retried
        self.refused: dict[RuleKey, tuple[Held | None, str]] = {}
        self.dirty: dict[RuleKey, None] = {}  # keys that may differ; an ordered set
        # Learning rules to re-arm (an ordered set): asked once, kept until the router answered, so
        # that a router that was down when the operator asked forgets its pinned sender when it is back.
        self.rearms: dict[RuleKey, None] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("probes", "hellos", "lists", "installs", "removals", "refused", "failures", "restarts_seen",
             "state_losses", "drifts", "verifications", "rearms"), 0)
        # Receivers (reconciled only once a fleet hands over its `ReceiverWants`): what the last RECV_LIST and
        # RECV_POLICY said, changed since by our own commands; read again after every contact that could
        # invalidate it (a new state_id or epoch, an outage, the periodic verification).
        self.receiver_wants: ReceiverWants | None = None
        self.recv_verified = False
        self.recv_reread = False  # verified, but due to be read again (the periodic verification): not pending
        self.recv_unsupported = ""  # why the router holds no receiver rules at all ("": it holds them)
        self.recv_applied: dict[ReceiverRule, ReceiverEntry] = {}
        self.recv_refused: dict[ReceiverRule, str] = {}  # rule -> why, not retried until touched or verified
        self.recv_dirty: dict[ReceiverRule, None] = {}  # an ordered set
        self.ifaces: dict[str, IfaceReceiversEntry] = {}  # guarded interface -> its policy, groups, counters
        self.policy_refused: dict[str, tuple[IfacePolicy, str]] = {}  # iface -> (policy refused, why)
        self.recv_counters: dict[str, int] = dict.fromkeys(
            ("lists", "installs", "removals", "refused", "policies_set"), 0)

    def want(self, desired: DesiredRule | None) -> Held | None:
        """What this router should hold for a desired rule: its terms and its binding resolved for this
        router (`Rule.on`); None when the rule is not desired."""
        return None if desired is None else held(desired.rule.on(self.name))

    # -- what to do next ---------------------------------------------------

    def next_action(self, desired: Mapping[RuleKey, DesiredRule], mode: Mode | None, now: float) -> Action:
        if self.retry_at is not None and now < self.retry_at:
            return Wait(self.retry_at)
        if self.probe_due is None or now >= self.probe_due:
            return Probe()
        if not self.verified or (self.verify_due is not None and now >= self.verify_due):
            return ReadRules()
        if mode is not None and self.mode is not None and self.mode != mode:
            return SetMode(mode)
        rearm = self._next_rearm(desired)
        if rearm is not None:
            return RearmRule(rearm)
        op = self._next_op(desired)
        if op is not None:
            return Apply(op)
        recv = self._next_receiver_action()
        if recv is not None:
            return recv
        until = self.probe_due
        if self.verify_due is not None:
            until = min(until, self.verify_due)
        return Wait(until)

    def _next_op(self, desired: Mapping[RuleKey, DesiredRule]) -> Op | None:
        while self.dirty:
            key = next(iter(self.dirty))
            want = desired.get(key)
            want_terms = self.want(want)
            if self.applied.get(key) == want_terms:
                del self.dirty[key]
                self.refused.pop(key, None)
                continue
            refused = self.refused.get(key)
            if refused is not None and refused[0] == want_terms:
                del self.dirty[key]  # refused for good; retried when it changes or at verification
                continue
            # The rule as this router is to hold it: an interface named per router resolved for it.
            return Install(want.rule.on(self.name)) if want is not None else Uninstall(key)
        return None

    # -- receivers -------------------------------------------------------------

    def _next_receiver_action(self) -> ReadReceivers | ApplyReceiver | SetPolicy | None:
        """Read the router's receivers when unverified; then each rule to add or remove (removals first:
        they make room), then each interface policy to set; None when all is as wanted (or the router holds
        no receivers: `recv_unsupported`)."""
        wants = self.receiver_wants
        if wants is None:
            return None
        if not self.recv_verified or self.recv_reread:
            return ReadReceivers()
        if self.recv_unsupported:
            return None
        while self.recv_dirty:
            rule = next(iter(self.recv_dirty))
            want, have = rule in wants.rules, rule in self.recv_applied
            if want == have or rule in self.recv_refused:
                del self.recv_dirty[rule]
                continue
            return ApplyReceiver(rule, want)
        policy = self._next_policy(wants)
        return None if policy is None else SetPolicy(policy)

    def _next_policy(self, wants: ReceiverWants) -> IfacePolicy | None:
        for iface, want in sorted(wants.policies_for(self.name, self.ifaces).items()):
            have = self.ifaces.get(iface)
            if have is not None and have.policy == want:
                continue
            refused = self.policy_refused.get(iface)
            if refused is not None and refused[0] == want:
                continue
            return want
        return None

    def receivers_pending(self) -> bool:
        """Whether some receiver rule or interface policy still differs (and is not refused)."""
        wants = self.receiver_wants
        if wants is None:
            return False
        if not self.recv_verified:
            return True
        if self.recv_unsupported:
            return False
        if any((r in wants.rules) != (r in self.recv_applied) and r not in self.recv_refused
               for r in self.recv_dirty):
            return True
        return self._next_policy(wants) is not None

    def touch_receivers(self, rules: Iterable[ReceiverRule]) -> None:
        """These desired receiver rules changed: look at them again (a refusal is forgotten: the rule is new)."""
        for rule in rules:
            self.recv_dirty[rule] = None
            self.recv_refused.pop(rule, None)

    def on_receivers_listed(self, entries: Iterable[ReceiverEntry], ifaces: Iterable[IfaceReceiversEntry],
                            now: float) -> None:
        """A complete RECV_LIST and RECV_POLICY: the router holds exactly these; diff them with what is wanted."""
        self.recv_applied = {e.rule: e for e in entries}
        self.ifaces = {e.policy.iface: e for e in ifaces}
        self.recv_verified, self.recv_reread, self.recv_unsupported = True, False, ""
        self.recv_refused.clear()
        self.policy_refused.clear()
        wanted = self.receiver_wants.rules if self.receiver_wants is not None else {}
        self.recv_dirty = dict.fromkeys(r for r in sorted(self.recv_applied) if r not in wanted)
        self.recv_dirty.update(dict.fromkeys(sorted(wanted)))
        self.recv_counters["lists"] += 1
        self._contact(now)

    def on_receivers_unsupported(self, reason: str, now: float) -> None:
        """The router holds no receiver rules (UNSUPPORTED: its filter has no receiver half; UNKNOWN_COMMAND:
        an older musersd): every rule is shown refused there, and nothing is sent until the next verification."""
        self.recv_verified, self.recv_reread, self.recv_unsupported = True, False, reason
        self.recv_applied.clear()
        self.ifaces.clear()
        self.recv_dirty.clear()
        self._contact(now)

    def on_receiver_done(self, op: ApplyReceiver, now: float) -> None:
        """The router added (EXISTS counts) or removed (NOT_FOUND counts) `op.rule`."""
        if op.add:
            self.recv_applied.setdefault(op.rule, ReceiverEntry(op.rule))
            self.recv_counters["installs"] += 1
        else:
            self.recv_applied.pop(op.rule, None)
            self.recv_counters["removals"] += 1
        self.recv_refused.pop(op.rule, None)
        self._contact(now)

    def on_receiver_refused(self, op: ApplyReceiver, reason: str, now: float) -> None:
        """The router refused `op` for good (INVALID_ARGUMENT: an interface it does not guard; TABLE_FULL)."""
        self.recv_refused[op.rule] = reason
        self.recv_counters["refused"] += 1
        self.last_error = reason
        self._contact(now)

    def on_policy(self, ifaces: Iterable[IfaceReceiversEntry], now: float) -> None:
        """RECV_POLICY answered (after a set, with the policy as set): every guarded interface as it is now."""
        self.ifaces = {e.policy.iface: e for e in ifaces}
        self.recv_counters["policies_set"] += 1
        self._contact(now)

    def on_policy_refused(self, policy: IfacePolicy, reason: str, now: float) -> None:
        self.policy_refused[policy.iface] = (policy, reason)
        self.recv_counters["refused"] += 1
        self.last_error = reason
        self._contact(now)

    def receiver_state(self, rule: ReceiverRule) -> dict[str, Any]:
        """This router's side of one desired receiver rule: state (applied, pending, refused), and the joins
        it allowed as the last RECV_LIST read them ("matched", "last_seen": Unix seconds or None)."""
        if self.recv_unsupported:
            return {"state": "refused", "error": self.recv_unsupported, "matched": 0, "last_seen": None}
        if rule in self.recv_refused:
            return {"state": "refused", "error": self.recv_refused[rule], "matched": 0, "last_seen": None}
        entry = self.recv_applied.get(rule)
        if entry is None:
            return {"state": "pending", "matched": 0, "last_seen": None}
        out: dict[str, Any] = {"state": "applied", "matched": entry.matched,
                               "last_seen": entry.last_seen_ms / 1000 if entry.last_seen_ms else None}
        if not self.recv_verified:
            out["verified"] = False
        return out

    def rearm(self, key: RuleKey) -> None:
        """The operator asked that the learning rule for `key` forget what it pinned (`next_action` sends it)."""
        self.rearms[key] = None

    def _next_rearm(self, desired: Mapping[RuleKey, DesiredRule]) -> RuleKey | None:
        """The next re-arm to send: only once the router holds the learning rule as wanted (a rule still
        to install learns afresh anyway); dropped when the rule no longer learns here or was refused."""
        for key in list(self.rearms):
            want = self.want(desired.get(key))
            if want is None or not want[3].learn:
                del self.rearms[key]
            elif self.applied.get(key) == want:
                return key
            elif key in self.refused and self.refused[key][0] == want:
                del self.rearms[key]
        return None

    def pending(self, desired: Mapping[RuleKey, DesiredRule]) -> int:
        """How many rules still differ (and are not refused), without changing anything."""
        return sum(1 for _ in self._pending_keys(desired))

    def has_pending(self, desired: Mapping[RuleKey, DesiredRule]) -> bool:
        """Whether any rule still differs: stops at the first one, so a status check after each of
        100,000 installs does not walk every key still to do (which made re-convergence quadratic)."""
        return next(self._pending_keys(desired), None) is not None

    def _pending_keys(self, desired: Mapping[RuleKey, DesiredRule]) -> Iterator[RuleKey]:
        for key in self.dirty:
            want_terms = self.want(desired.get(key))
            if self.applied.get(key) == want_terms:
                continue
            refused = self.refused.get(key)
            if refused is not None and refused[0] == want_terms:
                continue
            yield key

    def rule_state(self, desired: DesiredRule) -> dict[str, Any]:
        """This router's side of one desired rule (its terms and its binding as this router is to hold it),
        for listings; a bound rule's "moved" and "learned" as the last LIST read them."""
        key, want_terms = desired.key, self.want(desired)
        out: dict[str, Any] = {}
        if self.applied.get(key) == want_terms:
            out["state"] = "applied"
            if not self.verified:
                out["verified"] = False  # believed from the store, not yet checked with LIST
        elif key in self.refused and self.refused[key][0] == want_terms:
            out["state"] = "refused"
            out["error"] = self.refused[key][1]
        else:
            out["state"] = "pending"
        entry = self.traffic.get(key)
        if entry is not None:
            out.update(packets=entry.packets, bytes=entry.octets,
                       last_seen=entry.last_seen / 1000 if entry.last_seen else None)
            if entry.rule.bound:
                learned = entry.as_json()
                out.update(moved=learned["moved"], learned=learned["learned"])
        return out

    # -- desired state changed ---------------------------------------------------

    def touch(self, keys: Iterable[RuleKey]) -> None:
        for key in keys:
            self.dirty[key] = None

    # -- what happened -----------------------------------------------------------

    def on_hello(self, epoch: int, state_id: int, rule_count: int, mode: Mode, backend: str,
                 now: float) -> list[str]:
        """The client core got a HELLO answer (first contact, or the router restarted or forgot us).

        Returns log-worthy observations (a restart, lost tables).
        """
        notes = []
        self.counters["hellos"] += 1
        if self.state_id is not None and state_id != self.state_id:
            notes.append(f"the router's tables were recreated (state_id {self.state_id:016x} -> {state_id:016x}):"
                         " it lost its rules; re-installing")
            self.counters["state_losses"] += 1
            self.applied.clear()
            self.traffic.clear()
            self.verified = self.recv_verified = False
        elif self.epoch is not None and epoch != self.epoch:
            notes.append(f"musersd restarted (epoch {self.epoch:016x} -> {epoch:016x}); checking its rules")
            self.counters["restarts_seen"] += 1
            self.verified = self.recv_verified = False
        self.epoch, self.state_id, self.rule_count, self.mode, self.backend = (
            epoch, state_id, rule_count, mode, backend)
        self._contact(now)
        return notes

    def on_probe(self, counters: Counters, now: float) -> list[str]:
        """The router answered the probe (COUNTERS): notice drift, schedule the next probe."""
        notes = []
        self.counters["probes"] += 1
        if self.verified and counters.rule_count != len(self.applied):
            notes.append(f"the router holds {counters.rule_count} rules where {len(self.applied)} were"
                         " expected; checking its rules")
            self.counters["drifts"] += 1
            self.verified = False
        self.rule_count, self.mode, self.backend, self.filter = (
            counters.rule_count, counters.mode, counters.backend, counters)
        self._contact(now)
        self.probe_due = now + self.timers.probe_interval
        return notes

    def on_listed(self, entries: Iterable[RuleEntry], desired: Mapping[RuleKey, DesiredRule],
                  now: float) -> None:
        """A complete LIST: this is now exactly what the router holds."""
        entries = list(entries)
        self.counters["lists"] += 1
        if self.verified:
            self.counters["verifications"] += 1
        self.applied = {e.rule.key: held(e.rule) for e in entries}
        self.traffic = {e.rule.key: e for e in entries}
        self.rule_count = len(self.applied)
        self.verified = True
        # Receivers are read again with every verification of the rules; until then the router keeps the
        # state the last reading gave it (a periodic re-read is not "converging", as for its rules).
        self.recv_reread = self.recv_verified
        self.refused.clear()
        # Removals first (they make room in a full table), then installs and changes.
        self.dirty = dict.fromkeys(k for k in self.applied if k not in desired)
        self.dirty.update(dict.fromkeys(desired))
        self._contact(now)
        self.verify_due = now + self.timers.verify_interval if self.timers.verify_interval > 0 else None

    def on_mode(self, mode: Mode, now: float) -> None:
        self.mode = mode
        self._contact(now)

    def on_done(self, op: Op, now: float) -> None:
        """The router executed `op` (NOT_FOUND for a removal counts as done)."""
        if isinstance(op, Install):
            self.applied[op.key] = held(op.rule)
            self.counters["installs"] += 1
        else:
            self.applied.pop(op.key, None)
            self.traffic.pop(op.key, None)
            self.counters["removals"] += 1
        self.refused.pop(op.key, None)
        # The key stays dirty: the desired rule may have changed while `op` was in flight;
        # `_next_op` drops it once what the router holds is what we want.
        self._contact(now)

    def on_refused(self, op: Op, reason: str, now: float) -> None:
        """The router refused `op` for good (TABLE_FULL, INVALID_ARGUMENT, UNSUPPORTED)."""
        want_terms = held(op.rule) if isinstance(op, Install) else None
        self.refused[op.key] = (want_terms, reason)  # the key stays dirty, as in on_done
        self.counters["refused"] += 1
        self.last_error = reason
        self._contact(now)

    def on_rearmed(self, key: RuleKey, now: float, refused: str | None = None) -> None:
        """The router answered the re-arm of `key`: done, or `refused` (it holds no such learning rule: the
        answer will not change by asking again)."""
        self.rearms.pop(key, None)
        if refused is None:
            self.counters["rearms"] += 1
        else:
            self.counters["refused"] += 1
            self.last_error = refused
        self._contact(now)

    def on_unreachable(self, reason: str, now: float) -> None:
        """No answer, or an answer meaning "try again later": back off, then HELLO again."""
        self.failures += 1
        self.counters["failures"] += 1
        self.last_error = reason
        self.status = DOWN
        self.recv_verified = False  # back in contact: read its receivers again
        self.retry_at = now + self.timers.backoff(self.failures, self._jitter())
        self.probe_due = None  # start over with a probe

    def _contact(self, now: float) -> None:
        self.last_contact = now
        self.failures = 0
        self.retry_at = None
        self.status = CONVERGING

    def refresh_status(self, desired: Mapping[RuleKey, DesiredRule],
                       mode: Mode | None = None) -> str:
        """Recompute up/converging after contact (down/unknown are set by the events)."""
        if self.status in (UNKNOWN, DOWN):
            return self.status
        busy = not self.verified or self.has_pending(desired) or (
            mode is not None and self.mode is not None and self.mode != mode) or self.receivers_pending()
        self.status = CONVERGING if busy else UP
        return self.status

    def to_dict(self, desired: Mapping[RuleKey, DesiredRule], mode: Mode | None, now: float,
                wall: Callable[[float], float]) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}",
            "state": self.refresh_status(desired, mode),
            "epoch": f"{self.epoch:016x}" if self.epoch is not None else None,
            "state_id": f"{self.state_id:016x}" if self.state_id is not None else None,
            "mode": str(self.mode) if self.mode is not None else None,
            "backend": self.backend or None,
            "rule_count": self.rule_count,
            "pending": self.pending(desired),
            "refused": len(self.refused),
            "verified": self.verified,
            "last_contact": wall(self.last_contact) if self.last_contact is not None else None,
            "last_error": self.last_error or None,
            "retry_in": round(max(0.0, self.retry_at - now), 3) if self.retry_at is not None else None,
            "counters": dict(self.counters),
            "receivers": None if self.receiver_wants is None else {
                "held": len(self.recv_applied), "refused": len(self.recv_refused),
                "unsupported": self.recv_unsupported or None, "verified": self.recv_verified,
                "interfaces": sorted(self.ifaces), "counters": dict(self.recv_counters)},
            "filter": None if self.filter is None else {
                str(c.reason): {"packets": c.packets, "bytes": c.octets} for c in self.filter.reasons},
        }


# =============================================================================
# The fleet: desired state shared by every reconciler
# =============================================================================


class Fleet:
    """The desired state in memory (a mirror of the store) and the routers' reconcilers.

    Besides the rules by key, it keeps an index from session id to the keys
    of the rules authorized from that session, updated by `apply` (the only
    way the desired state changes), so that per-session work (the view
    published with every SAP session event, a session ending, revoke) costs
    in proportion to that session's rules, not to every rule: sorting all
    100,000 rules for each announcement held mauthserver to a few session
    events a second.
    """

    def __init__(self, desired: Iterable[DesiredRule] = (), mode: Mode | None = None, *,
                 receivers: Iterable[DesiredReceiver] = (), policies: Iterable[DesiredPolicy] = ()) -> None:
        self.receiver_wants = ReceiverWants(receivers, policies)
        self.desired: dict[RuleKey, DesiredRule] = {}
        self._by_session: dict[str, dict[RuleKey, None]] = {}  # session id -> its rules' keys (a set)
        for r in desired:
            self._put(r)
        self.mode = mode
        self.routers: dict[str, RouterCore] = {}
        self._sorted: list[RuleKey] | None = None

    def add_router(self, core: RouterCore) -> None:
        self.routers[core.name] = core
        core.touch(self.desired)
        core.touch(core.applied)
        core.receiver_wants = self.receiver_wants
        core.touch_receivers(self.receiver_wants.rules)

    @property
    def receivers(self) -> dict[ReceiverRule, DesiredReceiver]:
        return self.receiver_wants.rules

    def put_receiver(self, desired: DesiredReceiver) -> None:
        """Mirror a committed receiver rule; every router will look at it."""
        self.receiver_wants.rules[desired.rule] = desired
        for core in self.routers.values():
            core.touch_receivers([desired.rule])

    def drop_receiver(self, rule: ReceiverRule) -> None:
        self.receiver_wants.rules.pop(rule, None)
        for core in self.routers.values():
            core.touch_receivers([rule])

    def put_policy(self, desired: DesiredPolicy) -> None:
        """Mirror a committed interface policy (each router compares it with what it holds at once)."""
        self.receiver_wants.policies[desired.key] = desired
        for core in self.routers.values():
            core.policy_refused.pop(desired.policy.iface, None)

    def apply(self, changes: Iterable[Change]) -> list[RuleKey]:
        """Mirror committed changes; every router will look at the keys touched."""
        keys = []
        for change in changes:
            if isinstance(change, Put):
                self._put(change.rule)
            else:
                self._drop(change.key)
            keys.append(change.key)
        if keys:
            self._sorted = None
            for core in self.routers.values():
                core.touch(keys)
        return keys

    def _put(self, rule: DesiredRule) -> None:
        old = self.desired.get(rule.key)
        if old is not None and old.session_id != rule.session_id:
            self._unindex(old)
        self.desired[rule.key] = rule
        if rule.session_id is not None:
            self._by_session.setdefault(rule.session_id, {})[rule.key] = None

    def _drop(self, key: RuleKey) -> None:
        old = self.desired.pop(key, None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, rule: DesiredRule) -> None:
        keys = self._by_session.get(rule.session_id)  # type: ignore[arg-type]
        if keys is not None:
            keys.pop(rule.key, None)
            if not keys:
                del self._by_session[rule.session_id]  # type: ignore[arg-type]

    def session_ids(self) -> list[str]:
        """The sessions that some desired rule was authorized from."""
        return list(self._by_session)

    def session_rules(self, session_id: str) -> dict[RuleKey, DesiredRule]:
        """The desired rules authorized from `session_id`, in key order (a mapping the `plan_*` take)."""
        return {k: self.desired[k] for k in sorted(self._by_session.get(session_id, ()))}

    def sorted_keys(self) -> list[RuleKey]:
        """Desired keys in the order of their wire cursor (family, source, group)."""
        if self._sorted is None:
            self._sorted = sorted(self.desired)
        return self._sorted
