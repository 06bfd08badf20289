"""The mediator: commands, sessions and views, glued to the store and the event stream.

Strategy: this is the shell around the pure pieces. A command is decided by
`core.plan_*` (pure), committed by `Store` in one transaction with its audit
row, mirrored into the in-memory `Fleet`, published on the event bus, and
only then acknowledged (the method returns). The routers' reconcilers are
woken after the commit; fan-out is asynchronous and its progress is visible
per rule and per router.

Sessions: every SAP packet goes to `sap.directory.Directory` (pure, `now`
given). Its events are persisted in one transaction per packet: added or
changed sessions with the packet that made them, removed sessions deleted
together with the rules that were to expire with them. When sessions are
only refreshed (no event) nothing is written; the time each was last heard
is flushed periodically (`flush_heard`), which only matters for rebuilding
the directory after a restart (`restore_sessions` replays the stored packets
at the times they were heard, then expires what timed out meanwhile).

Following: `authorize` stores what it was asked (`core.Authorization`, table
`authorizations`) in the transaction of its rules. When an authorized
session is announced anew (`SessionChanged`, or `SessionAdded` for one the
directory had evicted) and its authorization follows, `core.plan_follow`
re-plans it against the new announcement, and the rule changes are committed
in the transaction of the packet, with an audit row `session-followed`, then
published as rule events with reason `session-changed`; the session event
says what the follow-up did (`follow`). A new version that asks for no rule
at all changes no rule: it is logged, audited and said in the event. The
authorization is dropped by `revoke` and when the session ends (deleted,
timed out, stopped; not when merely evicted).

Nothing here blocks for long: SQLite commits are short; router I/O is the
fan-out's business. Every method is called from the event loop's thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from mauthcore.events import EventKind, ReceiverEvent, ReceiverPolicyEvent, mode_event, rule_event, session_event
from mauthcore.protocol.model import Mode
from sap.directory import Directory, RemovalReason, Session, SessionAdded, SessionChanged, SessionRemoved
from sap.errors import SAPDecodeError, SDPDecodeError

from . import core
from .core import (
    Authorization,
    Change,
    Delete,
    DesiredPolicy,
    DesiredReceiver,
    DesiredRule,
    Fleet,
    FollowPlan,
    NotFound,
    Put,
    RouterCore,
    SessionView,
)
from .events import EventBus
from .store import SessionRow, Store, Tx

log = logging.getLogger("mauthserver")

MIN_SESSION_PREFIX = 4


def _wall_of(mono: float) -> float:
    """A monotonic timestamp as Unix time (for display)."""
    return time.time() - (time.monotonic() - mono)


class Mediator:
    def __init__(self, store: Store, directory: Directory, bus: EventBus, routers: Iterable[RouterCore], *,
                 clock: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.directory = directory
        self.bus = bus
        self.clock = clock
        self.mono = mono
        self.fleet = Fleet()
        # session id -> what it was authorized with (a mirror of the store's table `authorizations`)
        self.authorizations: dict[str, Authorization] = {}
        self._load(routers)
        self.wake: Callable[[], None] = lambda: None  # set by the fan-out: desired state changed
        self._heard: dict[str, float] = {}  # session id -> last_heard as stored
        self._first_heard: dict[str, float] = {}  # session id -> first_heard as stored (survives restarts)
        self._full = False  # the directory evicted since it last had room: warned once per episode
        self.counters: Counter[str] = Counter()

    # =========================================================================
    # leadership (mauthserver/leader.py): a standby's views, a new leader's state
    # =========================================================================

    def lead(self, directory: Directory, routers: Iterable[RouterCore]) -> None:
        """Become the leader's mediator: desired state, authorizations, routers and sessions as the store has
        them now.

        Called once the lease is held and the store fenced with its term, so nothing written by a previous
        leader is missed: the desired state, each router's applied rules (given in `routers`) and the
        stored sessions are read again, then the sessions are restored as after a restart.
        """
        self._load(routers)
        self.directory = directory
        self._heard.clear()
        self._first_heard.clear()
        self.restore_sessions()

    def _load(self, routers: Iterable[RouterCore]) -> None:
        """The desired state and the authorizations as the store holds them, `routers` reconciling them."""
        self.fleet = Fleet(self.store.rules(), self.store.desired_mode(), receivers=self.store.receivers(),
                           policies=self.store.receiver_policies())
        for router in routers:
            self.fleet.add_router(router)
        self._load_authorizations()

    def _load_authorizations(self) -> None:
        self.authorizations = {a.session_id: a for a in self.store.authorizations()}

    def follow_store(self, directory: Directory) -> None:
        """A standby's views, re-read from the store the leader writes (nothing is written here).

        The desired rules are brought in line with the store by applying the difference (so the views
        keep their per-router states), the mode is read, each router's applied rules are read into its
        core, and the session directory is rebuilt from the stored announcements at the times they were
        heard, then expired to now, in memory only.
        """
        stored = {r.key: r for r in self.store.rules()}
        changes: list[Change] = [Delete(old) for key, old in self.fleet.desired.items() if key not in stored]
        changes += [Put(r, self.fleet.desired.get(key)) for key, r in stored.items()
                    if self.fleet.desired.get(key) != r]
        self.fleet.apply(changes)
        self.fleet.mode = self.store.desired_mode()
        receivers = {d.rule: d for d in self.store.receivers()}
        for rule in [r for r in self.fleet.receivers if r not in receivers]:
            self.fleet.drop_receiver(rule)
        for d in receivers.values():
            if self.fleet.receivers.get(d.rule) != d:
                self.fleet.put_receiver(d)
        for p in self.store.receiver_policies():
            self.fleet.put_policy(p)
        self._load_authorizations()
        applied = self.store.applied()
        for name, router in self.fleet.routers.items():
            router.applied = dict(applied.get(name, {}))
        rows = self.store.sessions()
        for row in rows:
            try:
                directory.handle_packet(row.packet, row.last_heard)
            except (SAPDecodeError, SDPDecodeError):
                continue
        directory.expire(self.clock())
        self._first_heard = {row.id: row.first_heard for row in rows}
        self.directory = directory

    # =========================================================================
    # commands (each returns only after its changes are committed)
    # =========================================================================

    def _commit(self, changes: list[Change], *, actor: str, action: str, detail: dict) -> int | None:
        if not changes:
            return None
        now = self.clock()
        audit_id = self.store.commit(changes, actor=actor, action=action, detail=detail, now=now)
        self._mirror(changes, actor=actor, reason=action, now=now)
        return audit_id

    def _mirror(self, changes: list[Change], *, actor: str, reason: str, now: float) -> None:
        self.fleet.apply(changes)
        for change in changes:
            if isinstance(change, Put):
                # The rule's view: each router's state of it, as decided here (see rule_view).
                data = rule_event(change.rule.to_dict(), actor=actor, reason=reason,
                                  previous=None if change.previous is None else change.previous.to_dict(),
                                  view=self.rule_view(change.rule))
            else:
                data = rule_event(change.previous.to_dict(), actor=actor, reason=reason)
            self.bus.publish(EventKind.for_rule(change.kind), data, now)
            log.info("rule %s %s by %s (%s)", change.kind,
                     change.rule.rule if isinstance(change, Put) else change.previous.rule, actor, reason)
        self.counters["rule_changes"] += len(changes)
        self.wake()

    def add_rule(self, source: object, group: object, max_ttl: object, *, replace: bool = False,
                 actor: str, pps: object = 0, bps: object = 0, binding: object = None) -> dict:
        """Add (or with `replace` change) a rule; `binding` a Binding or its JSON, None for an unbound rule."""
        rule = core.make_rule(source, group, max_ttl, pps=pps, bps=bps, binding=binding)
        changes = core.plan_add(self.fleet.desired, rule, replace_existing=replace, actor=actor, now=self.clock())
        result = "unchanged" if not changes else changes[0].kind
        self._commit(changes, actor=actor, action="add-sender",
                     detail={**rule.as_json(), "replace": replace})
        return {"result": result, "rule": self.rule_view(self.fleet.desired[rule.key])}

    def remove_rule(self, source: object, group: object, *, actor: str) -> dict:
        key = core.make_key(source, group)
        changes = core.plan_remove(self.fleet.desired, key)
        self._commit(changes, actor=actor, action="del-sender",
                     detail=key.as_json())
        [change] = changes
        assert isinstance(change, core.Delete)  # plan_remove plans the one deletion
        return {"result": "removed", "rule": change.previous.to_dict()}

    def rearm_rule(self, source: object, group: object, *, actor: str) -> dict:
        """Make every router whose rule for (source, group) learns its sender forget what it pinned.

        The request is audited ("rule-rearmed") and handed to those routers' reconcilers, which send
        REARM once the router holds the rule as desired (a router that is down gets it when it is back);
        a router the rule reaches without learning (not named in a per-router interface list) is left
        alone, since it pinned nothing.
        """
        key = core.make_key(source, group)
        dr = self.fleet.desired.get(key)
        if dr is None:
            raise NotFound(f"there is no rule for {key}")
        if not dr.rule.binding.learn:
            raise core.Invalid(f"the rule for {key} does not learn its sender, so it has nothing to forget")
        names = [name for name in sorted(self.fleet.routers) if dr.rule.on(name).binding.learn]
        now = self.clock()
        with self.store.transaction(now) as tx:
            tx.audit(actor, "rule-rearmed", {**key.as_json(), "routers": names})
        for name in names:
            self.fleet.routers[name].rearm(key)
        log.info("rule %s re-armed by %s on %s", dr.rule, actor, ", ".join(names) or "no router")
        self.wake()
        return {"result": "rearming", "routers": names, "rule": self.rule_view(dr)}

    def flush(self, *, actor: str) -> int:
        changes = core.plan_flush(self.fleet.desired)
        self._commit(changes, actor=actor, action="flush", detail={"removed": len(changes)})
        return len(changes)

    def set_mode(self, mode: Mode | None, *, actor: str) -> None:
        """Desired filter mode for every router (None: leave each router's mode alone)."""
        now = self.clock()
        with self.store.transaction(now) as tx:
            tx.set_meta("mode", None if mode is None else str(mode))
            tx.audit(actor, "mode", {"mode": None if mode is None else str(mode)})
        self.fleet.mode = mode
        self.bus.publish(EventKind.MODE_CHANGED, mode_event(None if mode is None else str(mode), actor), now)
        self.wake()

    # -- receivers -------------------------------------------------------------

    def add_receiver(self, fields: object, *, actor: str) -> dict:
        """Add a receiver rule (its JSON, `ReceiverRule.from_json`) for every router; Conflict if it exists."""
        rule = core.make_receiver(fields)
        if rule in self.fleet.receivers:
            raise core.Conflict(f"the receiver rule {rule} already exists",
                                receiver=self.receiver_view(self.fleet.receivers[rule]))
        now = self.clock()
        desired = DesiredReceiver(rule, now, actor)
        with self.store.transaction(now) as tx:
            tx.put_receiver(desired)
            tx.audit(actor, "receiver-added", rule.as_json())
        self.fleet.put_receiver(desired)
        view = self.receiver_view(desired)
        self.bus.publish(EventKind.RECEIVER_ADDED,
                         ReceiverEvent(receiver=desired.to_dict(), actor=actor, routers=view["routers"]), now)
        log.info("receiver rule added by %s: %s", actor, rule)
        self.wake()
        return {"result": "added", "receiver": view}

    def remove_receiver(self, fields: object, *, actor: str) -> dict:
        rule = core.make_receiver(fields)
        desired = self.fleet.receivers.get(rule)
        if desired is None:
            raise NotFound(f"there is no receiver rule {rule}")
        now = self.clock()
        with self.store.transaction(now) as tx:
            tx.delete_receiver(rule)
            tx.audit(actor, "receiver-removed", rule.as_json())
        self.fleet.drop_receiver(rule)
        self.bus.publish(EventKind.RECEIVER_REMOVED, ReceiverEvent(receiver=desired.to_dict(), actor=actor), now)
        log.info("receiver rule removed by %s: %s", actor, rule)
        self.wake()
        return {"result": "removed", "receiver": desired.to_dict()}

    def set_receiver_policy(self, router: str | None, iface: object, mode: object, limit: object, *,
                            actor: str) -> dict:
        """Set interface `iface`'s receiver policy on `router` (None or '': every router that has it)."""
        router = router or ""
        if router and router not in self.fleet.routers:
            raise NotFound(f"mauthserver manages no router named {router!r}")
        policy = core.make_policy(iface, mode, limit)
        now = self.clock()
        desired = DesiredPolicy(router, policy, now, actor)
        old = self.fleet.receiver_wants.policies.get(desired.key)
        if old is None or old.policy != policy:
            with self.store.transaction(now) as tx:
                tx.put_receiver_policy(desired)
                tx.audit(actor, "receiver-policy", {"router": router or None, **policy.as_json()})
            self.fleet.put_policy(desired)
            self.bus.publish(EventKind.RECEIVER_POLICY, ReceiverPolicyEvent(policy=desired.to_dict(), actor=actor),
                             now)
            log.info("receiver policy of %s on %s set by %s: %s", policy.iface, router or "every router", actor,
                     policy)
            self.wake()
            return {"result": "set", "policy": desired.to_dict()}
        return {"result": "unchanged", "policy": old.to_dict()}

    def receiver_view(self, desired: DesiredReceiver) -> dict:
        """A desired receiver rule with its state on each router and overall (as `rule_view` for senders)."""
        out = desired.to_dict()
        routers = {name: r.receiver_state(desired.rule) for name, r in sorted(self.fleet.routers.items())}
        out["routers"] = routers
        states = {s["state"] for s in routers.values()}
        out["state"] = ("applied" if states <= {"applied"} else
                        "refused" if "refused" in states else "pending")
        return out

    def receivers_view(self) -> list[dict]:
        return [self.receiver_view(self.fleet.receivers[r]) for r in sorted(self.fleet.receivers)]

    def policies_view(self) -> list[dict]:
        """The desired interface policies (router null: every router that has the interface)."""
        return [d.to_dict() for _, d in sorted(self.fleet.receiver_wants.policies.items())]

    def find_session(self, ref: str):
        """A session by id, or by a unique id prefix of at least 4 characters."""
        ref = str(ref).strip().lower()
        session = self.directory.get(ref)
        if session is not None:
            return session
        if len(ref) >= MIN_SESSION_PREFIX:
            matches = [s for s in self.directory.sessions() if s.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise core.Invalid(f"session id prefix {ref!r} matches {len(matches)} sessions; give more of it")
        raise NotFound(f"no announced session has id {ref!r}")

    def authorize(self, ref: str, *, senders: Iterable[object] = (), max_ttl: object = None,
                  expire_with_session: bool = False, replace: bool = False, follow: bool = True,
                  actor: str) -> dict:
        """Rules from a session's announced flows (core.plan_authorize), committed together with the
        authorization (what was asked), which later versions of the announcement are re-planned with
        when `follow` (see the module docstring)."""
        session = self.find_session(ref)
        senders = list(senders)
        now = self.clock()
        plan = core.plan_authorize(self.fleet.desired, SessionView.of(session), senders=senders,
                                   max_ttl=max_ttl, expire_with_session=expire_with_session,
                                   replace_existing=replace, actor=actor, now=now)
        given, ttl = core.authorization_params(senders, max_ttl)  # checked by plan_authorize
        old = self.authorizations.get(session.id)
        auth = (old.again(given, ttl, expire_with_session, follow, actor, now) if old is not None else
                Authorization(session.id, given, ttl, expire_with_session, follow, actor, now, now))
        same = old is not None and (old.senders, old.max_ttl, old.expire_with_session, old.follow) == (
            auth.senders, auth.max_ttl, auth.expire_with_session, auth.follow)
        if plan.changes or not same:
            with self.store.transaction(now) as tx:
                tx.apply(plan.changes)
                tx.save_authorization(auth)
                tx.audit(actor, "authorize",
                         {"session": session.id, "name": session.name,
                          "senders": [str(s) for s in senders], "max_ttl": max_ttl,
                          "expire_with_session": expire_with_session, "follow": follow,
                          "rules": [core.rule_text(r.rule) for r in plan.rules]})
            self.authorizations[session.id] = auth
            if plan.changes:
                self._mirror(plan.changes, actor=actor, reason="authorize", now=now)
        return {
            "session": session.id,
            "name": session.name,
            "rules": [self.rule_view(self.fleet.desired[r.key]) for r in plan.rules],
            "changed": len(plan.changes),
            "skipped": plan.skipped,
            "authorization": self.authorizations[session.id].to_dict(),
        }

    def revoke(self, ref: str, *, actor: str) -> dict:
        """Remove the rules authorized from a session (which may be gone from the directory), and what it
        was authorized with (so nothing follows it any more)."""
        ref = str(ref).strip().lower()
        session_id = ref
        if not self.fleet.session_rules(ref) and ref not in self.authorizations:
            known = dict.fromkeys([*self.fleet.session_ids(), *self.authorizations])
            matches = [i for i in known if len(ref) >= MIN_SESSION_PREFIX and i.startswith(ref)]
            if len(matches) > 1:
                raise core.Invalid(f"session id prefix {ref!r} matches {len(matches)} sessions; give more of it")
            if matches:
                session_id = matches[0]
        rules = self.fleet.session_rules(session_id)
        changes = core.plan_revoke(rules, session_id) if rules or session_id not in self.authorizations else []
        now = self.clock()
        with self.store.transaction(now) as tx:
            tx.apply(changes)
            tx.delete_authorization(session_id)
            tx.audit(actor, "revoke", {"session": session_id,
                                       "rules": [f"{c.key.source} {c.key.group}" for c in changes]})
        self.authorizations.pop(session_id, None)
        if changes:
            self._mirror(changes, actor=actor, reason="revoke", now=now)
        return {"result": "revoked", "session": session_id,
                "rules": [c.previous.to_dict() for c in changes if isinstance(c, Delete)]}

    # =========================================================================
    # sessions
    # =========================================================================

    def restore_sessions(self) -> None:
        """Rebuild the directory from the stored packets, then expire what timed out while we were down."""
        rows = self.store.sessions()  # least recently heard first, as the directory evicts
        evicted: set[str] = set()  # more stored sessions than the directory holds (--max-sessions lowered)
        for row in rows:
            try:
                events = self.directory.handle_packet(row.packet, row.last_heard)
            except (SAPDecodeError, SDPDecodeError) as exc:
                log.warning("session=%s stored announcement no longer decodes (%s); dropping it", row.id, exc)
            else:
                evicted.update(e.session.id for e in events
                               if isinstance(e, SessionRemoved) and e.reason is RemovalReason.EVICTED)
            self._heard[row.id] = row.last_heard
            self._first_heard[row.id] = row.first_heard
        restored = sum(1 for row in rows if row.id in self.directory)
        now = self.clock()
        self._handle_events(self.directory.expire(now), None, now)
        for row in rows:
            if row.id not in self.directory and row.id in self._heard:
                # Evicted ones did not end: their expiring rules stay, as for any eviction.
                self._session_gone(row.id, row.name, "evicted" if row.id in evicted else "timeout", now)
        if evicted:
            log.warning("%d stored sessions did not fit in the session directory (at most %d sessions);"
                        " the least recently heard were dropped, their rules kept", len(evicted),
                        self.directory.max_sessions)
        if rows:
            log.info("restored %d of %d stored sessions; %d still announced", restored, len(rows),
                     len(self.directory))

    def on_sap_packet(self, data: bytes, peer: tuple, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.counters["sap_packets"] += 1
        try:
            events = self.directory.handle_packet(data, now)
        except (SAPDecodeError, SDPDecodeError) as exc:
            self.counters["sap_rejected"] += 1  # and by reason in the directory's counters
            log.debug("sap from=%s rejected (%s): %s", peer[0], exc.reason, exc)
            return
        self._handle_events(events, data, now)

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._handle_events(self.directory.expire(now), None, now)

    def _handle_events(self, events: list, packet: bytes | None, now: float) -> None:
        if not events:
            return
        rule_changes: list[Change] = []  # of the sessions that ended
        followed: list[Change] = []  # of the sessions whose rules followed their new announcement
        follow_notes: dict[str, dict] = {}  # session id -> what following it did (for its event)
        audits = []
        with self.store.transaction(now) as tx:
            for event in events:
                s = event.session
                if isinstance(event, (SessionAdded, SessionChanged)):
                    if packet is None:  # pragma: no cover - only packets add or change sessions
                        continue
                    first = self._first_heard.setdefault(s.id, s.first_heard)
                    tx.save_session(SessionRow(s.id, s.name, s.origin, str(s.announcer), packet, first,
                                               s.last_heard, s.expires))
                    self._heard[s.id] = s.last_heard
                    note = self._follow(tx, s, followed, now)
                    if note is not None:
                        follow_notes[s.id] = note
                elif isinstance(event, SessionRemoved):
                    tx.delete_session(s.id)
                    self._heard.pop(s.id, None)
                    self._first_heard.pop(s.id, None)
                    if event.reason.value in core.ENDING_REASONS:
                        tx.delete_authorization(s.id)
                    changes = core.plan_session_gone(self.fleet.session_rules(s.id), s.id, event.reason.value)
                    changes = [c for c in changes if c.key not in {x.key for x in rule_changes + followed}]
                    if changes:
                        tx.apply(changes)
                        detail = {"session": s.id, "name": s.name, "reason": event.reason.value,
                                  "rules": [f"{c.key.source} {c.key.group}" for c in changes]}
                        tx.audit("mauthserver", "session-ended", detail)
                        audits.append(detail)
                        rule_changes += changes
        for event in events:
            if isinstance(event, SessionRemoved) and event.reason.value in core.ENDING_REASONS:
                self.authorizations.pop(event.session.id, None)
        self._note_evictions(events)
        if followed:  # before the session events, whose views show the session's rules as they are now
            self._mirror(followed, actor="mauthserver", reason="session-changed", now=now)
        for event in events:
            s = event.session
            kind = event.kind
            data = session_event(self.session_view(s),
                                 event.reason.value if isinstance(event, SessionRemoved) else None)
            if s.id in follow_notes and not isinstance(event, SessionRemoved):
                data["follow"] = follow_notes[s.id]
            self.bus.publish(EventKind.for_session(kind), data, now)
            self.counters[f"sessions_{kind}"] += 1
            log.info("session=%s %s %r from %s%s", s.id, kind, s.name, s.announcer,
                     f" ({event.reason.value})" if isinstance(event, SessionRemoved) else "")
        if rule_changes:
            for detail in audits:
                log.info("session=%s ended (%s): its %d expiring rules are removed", detail["session"],
                         detail["reason"], len(detail["rules"]))
            self._mirror(rule_changes, actor="mauthserver", reason="session-ended", now=now)

    def _follow(self, tx: Tx, session: Session, followed: list[Change], now: float) -> dict | None:
        """Re-plan the authorization of `session`, announced anew, inside the packet's transaction `tx`.

        Returns what it did (for the session event), None when the session has no authorization that
        follows it; the changes are written with their audit row and added to `followed` (mirrored and
        published by the caller once committed). A new version that asks for no rule changes nothing:
        the rules stay as they are, and the refusal is logged and audited."""
        auth = self.authorizations.get(session.id)
        if auth is None or not auth.follow:
            return None
        detail: dict = {"session": session.id, "name": session.name, "senders": list(auth.senders),
                        "max_ttl": auth.max_ttl, "expire_with_session": auth.expire_with_session}
        try:
            plan = core.plan_follow(self.fleet.desired, self.fleet.session_rules(session.id),
                                    SessionView.of(session), auth, actor="mauthserver", now=now)
        except core.Refused as exc:
            kept = [core.rule_text(r.rule) for r in self.fleet.session_rules(session.id).values()]
            log.warning("session=%s %r changed, and its rules cannot follow it: %s; its %d rules are kept as"
                        " they were", session.id, session.name, exc.message, len(kept))
            tx.audit("mauthserver", "session-followed", {**detail, "error": exc.message, "kept": kept})
            self.counters["follow_refused"] += 1
            return {"error": exc.message, "kept": kept}
        changes = [c for c in plan.changes if c.key not in {x.key for x in followed}]
        done = FollowPlan(changes, plan.untouched, plan.skipped).detail()
        note: dict = {**done, "untouched": plan.untouched, "skipped": plan.skipped}
        if changes:
            tx.apply(changes)
            tx.audit("mauthserver", "session-followed", {**detail, **note})
            followed += changes
            self.counters["follow_changes"] += 1
            log.info("session=%s %r changed: its rules follow (%d added, %d changed, %d removed)", session.id,
                     session.name, len(done["added"]), len(done["changed"]), len(done["removed"]))
        return note

    def _note_evictions(self, events: list) -> None:
        """Warn once each time the directory fills up (every eviction is also logged and counted)."""
        reasons = {e.reason for e in events if isinstance(e, SessionRemoved)}
        if RemovalReason.EVICTED not in reasons:
            if reasons:  # a session ended: there is room again
                self._full = False
            return
        if not self._full:
            d = self.directory
            log.warning("the session directory is full (%d sessions, at most %d; %d bytes of descriptions, at"
                        " most %d): each new session now evicts the least recently heard one (its rules stay);"
                        " raise --max-sessions to hold more", len(d), d.max_sessions, d.stored_bytes, d.max_bytes)
        self._full = True

    def _session_gone(self, session_id: str, name: str, reason: str, now: float) -> None:
        """A stored session that did not come back after a restart."""
        changes = core.plan_session_gone(self.fleet.session_rules(session_id), session_id, reason)
        ended = reason in core.ENDING_REASONS
        with self.store.transaction(now) as tx:
            tx.delete_session(session_id)
            if ended:
                tx.delete_authorization(session_id)
            if changes:
                tx.apply(changes)
                tx.audit("mauthserver", "session-ended",
                         {"session": session_id, "name": name, "reason": reason,
                          "rules": [f"{c.key.source} {c.key.group}" for c in changes]})
        self._heard.pop(session_id, None)
        self._first_heard.pop(session_id, None)
        if ended:
            self.authorizations.pop(session_id, None)
        if changes:
            self._mirror(changes, actor="mauthserver", reason="session-ended", now=now)

    def flush_heard(self) -> int:
        """Persist when refreshed sessions were last heard; returns how many were written."""
        heard = [(s.id, s.last_heard, s.expires) for s in self.directory.sessions()
                 if self._heard.get(s.id) != s.last_heard]
        if heard:
            self.store.touch_sessions(heard, now=self.clock())
            for sid, last, _ in heard:
                self._heard[sid] = last
        return len(heard)

    # =========================================================================
    # views (JSON-ready)
    # =========================================================================

    def rule_view(self, dr: DesiredRule) -> dict:
        """A desired rule with its state on each router and overall: the one place both are decided.

        Each router's state is `RouterCore.rule_state` (what the router holds compared with the rule's
        terms, max TTL, pps and bps); the rule is "applied" when every router holds it, "refused" when
        a router refused it, else "pending". `GET /rules`, `GET /traffic`, the rule events and so the
        dashboard and `mauthctl list` all show these words; no client decides them again.
        """
        out = dr.to_dict()
        auth = None if dr.session_id is None else self.authorizations.get(dr.session_id)
        out["follow"] = auth is not None and auth.follow  # changes with its session's announcements
        routers = {}
        packets = octets = 0
        for name, r in sorted(self.fleet.routers.items()):
            state = r.rule_state(dr)
            packets += state.get("packets", 0)
            octets += state.get("bytes", 0)
            routers[name] = state
        out["routers"] = routers
        out["packets"], out["bytes"] = packets, octets
        states = {s["state"] for s in routers.values()}
        out["state"] = ("applied" if states <= {"applied"} else
                        "refused" if "refused" in states else "pending")
        return out

    def rules_view(self) -> list[dict]:
        return [self.rule_view(self.fleet.desired[k]) for k in sorted(self.fleet.desired)]

    def get_rule(self, source: object, group: object) -> dict:
        key = core.make_key(source, group)
        dr = self.fleet.desired.get(key)
        if dr is None:
            raise NotFound(f"there is no rule for {key}")
        return self.rule_view(dr)

    def session_view(self, s) -> dict:
        out = s.to_dict()
        out["first_heard"] = min(out["first_heard"], self._first_heard.get(s.id, out["first_heard"]))
        if s.any_source:
            out["suggested_senders"] = SessionView.of(s).suggestions()
        out["rules"] = [{**r.rule.as_json(limits=False), "expire_with_session": r.expire_with_session}
                        for r in self.fleet.session_rules(s.id).values()]
        auth = self.authorizations.get(s.id)
        out["authorization"] = None if auth is None else auth.to_dict()
        return out

    def sessions_view(self) -> list[dict]:
        return [self.session_view(s) for s in self.directory.sessions()]

    def router_view(self, r: RouterCore) -> dict:
        return r.to_dict(self.fleet.desired, self.fleet.mode, self.mono(), _wall_of)

    def routers_view(self) -> list[dict]:
        return [self.router_view(r) for _, r in sorted(self.fleet.routers.items())]

    def stats(self) -> dict:
        routers = self.routers_view()
        return {
            "rules": len(self.fleet.desired),
            "sessions": len(self.directory),
            "sessions_max": self.directory.max_sessions,
            "mode": str(self.fleet.mode) if self.fleet.mode is not None else None,
            "routers": {r["name"]: {k: r[k] for k in ("state", "pending", "rule_count", "mode", "last_contact",
                                                      "last_error", "counters", "filter")}
                        for r in routers},
            "routers_up": sum(1 for r in routers if r["state"] == "up"),
            "directory": self.directory.counters,
            "mediator": dict(self.counters),
            "events": dict(self.bus.counters, subscribers=self.bus.subscribers),
            "store": dict(self.store.counts(), commits=self.store.commits),
        }
