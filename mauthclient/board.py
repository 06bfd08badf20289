"""What the dashboard shows, decided without a screen: API data and events in, table rows out.

Strategy (the core decides, a thin shell acts): `Board` holds the sessions,
rules, routers and counter reads that `mauthclient.dashboard` feeds it, and
turns them into the rows of its five panes. It does no I/O and never looks
at a clock by itself (`now` is a parameter), so every rule below is unit
tested with plain dictionaries.

* Sessions, rules and routers come from one snapshot of the API and then
  from the event stream (`apply_event`); a `resync` or `overflow` event
  means "take a new snapshot", which the shell does.
* Counters are not events: the shell reads `GET /traffic` every few seconds
  (`apply_traffic`). Rates are the difference between two reads of the same
  router divided by the time between them; a counter that went down (the
  router restarted) starts again from zero rather than showing a negative
  rate.
* A rule's state on each router ("applied", "pending", "refused") and
  overall is decided by the server (mauthserver/service.py, `rule_view`) and
  shown as given: from the snapshot, from the rule events, and from the
  rules every `GET /traffic` answer carries. The board never compares a
  router's listing with the rule itself; a router the server said nothing
  about is "unknown".
* A session is authorized ("yes") when every (declared sender, group) pair
  has a rule the server says is applied; "pending" when the rules exist but
  some are not applied yet; "partial" when only some pairs have rules; "no"
  otherwise. An any-source session counts the rules on its groups, whoever
  the sender.
* A denied pair is shown while the server keeps reporting it (a `denied`
  event, which the server publishes when a pair is new or its packet count
  grew, or the time of its last report that `GET /traffic` gives with each
  pair) within `DENIED_WINDOW` seconds; its counts, rates and routers come
  from the routers' denied listings in `GET /traffic`. When the sender is
  authorized the router forgets the pair, so it leaves the pane at the next
  read.
* The Receivers pane is a periodic read too (`load_receivers`, the answers of
  `GET /receivers`, `/receivers/denied` and `/receivers/joined`, re-read
  soon after a `receiver.*` event): the refused joins the routers list,
  newest first, then the groups joined on each router and interface. A
  refused join that a receiver rule now allows (`ReceiverRule.allows`, the
  rules as the server lists them) shows as authorized until the router's
  listing drops it; authorizing one asks for that host alone (/32, /128),
  its group, its source if the join was source-specific, and its interface
  (`authorize_join`). A join refused for the interface's group limit is not
  something a rule lifts, and is not offered.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from mauthcore.events import REMOVALS, EventKind, Family
from mauthcore.receivers import ReceiverRule
from mauthcore.rules import Binding, RuleError, format_mac

DENIED_WINDOW = 30.0

RuleKey = tuple[str, str]  # (source, group) as the API spells them


def human_rate(value: float | None) -> str:
    """A rate with a k/M/G suffix that fits in 6 characters ("-" when unknown)."""
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def human_count(value: int) -> str:
    return human_rate(float(value)) if value >= 10000 else str(value)


def human_age(seconds: float | None) -> str:
    """A duration in at most 5 characters: 42s, 17m, 5h, 3d."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= scale:
            return f"{s / scale:.0f}{unit}"
    return f"{s:.0f}s"


def tiny_count(value: int) -> str:
    """A count in at most 4 characters: 9999, 12k, 340k, 12M, 3G."""
    if value < 10000:
        return str(value)
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if round(value / scale) < 1000:
            return f"{value / scale:.0f}{unit}"
    return "1T+"


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


@dataclass
class Rate:
    packets: float | None = None
    octets: float | None = None

    def add(self, other: Rate) -> Rate:
        if other.packets is None:
            return self
        return Rate((self.packets or 0.0) + other.packets, (self.octets or 0.0) + (other.octets or 0.0))


@dataclass
class Denied:
    source: str
    group: str
    reason: str
    packets: int = 0
    octets: int = 0
    last_ttl: int = 0
    routers: set[str] = field(default_factory=set)
    rate: Rate = field(default_factory=Rate)
    active_at: float | None = None  # when the server last reported it (dashboard clock)
    offender: str = ""  # a pair a binding dropped: "eth1 02:00:5e:10:00:09", where its last offender came from


@dataclass
class RouterRead:
    """One router's answer to the last counter read."""

    ok: bool
    at: float  # dashboard clock (monotonic) of the read
    error: str = ""
    wall: float | None = None  # the server's wall clock of the read
    mode: str | None = None
    rule_count: int | None = None
    rules: dict[RuleKey, dict] = field(default_factory=dict)
    denied: dict[tuple[str, str, str], dict] = field(default_factory=dict)


class Board:
    def __init__(self) -> None:
        self.sessions: dict[str, dict] = {}
        self.rules: dict[RuleKey, dict] = {}
        self.routers: dict[str, dict] = {}
        self.mode: str | None = None
        self.reads: dict[str, RouterRead] = {}
        self.rule_rates: dict[RuleKey, Rate] = {}
        self.denied: dict[tuple[str, str, str], Denied] = {}
        self.reported: dict[tuple[str, str, str], float] = {}  # denied pair -> its last `denied` event (our clock)
        self.last_event_id: str | None = None
        self.events = 0
        # The Receivers pane: the last read of the receiver rules, refused joins and joined groups.
        self.receiver_rules: list[dict] = []
        self._allowing: list[tuple[ReceiverRule, dict]] = []  # the rules this version can read, with their views
        self.refused: dict[str, dict] = {}  # row key -> GET /receivers/denied entry
        self.joined: dict[str, dict] = {}  # row key -> GET /receivers/joined entry
        self.receivers_problem = ""  # why the last read failed ("" when it did not)
        self.receivers_unread: dict[str, str] = {}  # router -> why its listings were not read

    # =========================================================================
    # input
    # =========================================================================

    def load(self, sessions: list[dict], rules: list[dict], routers: list[dict], mode: str | None) -> None:
        """A complete snapshot (start-up, and after `resync`)."""
        self.sessions = {s["id"]: s for s in sessions}
        self.rules = {(r["source"], r["group"]): r for r in rules}
        self.routers = {r["name"]: r for r in routers}
        self.mode = mode
        for name in list(self.reads):
            if name not in self.routers:
                del self.reads[name]

    def apply_event(self, ev_id: str, kind: str, data: dict, now: float | None = None) -> str | None:
        """Apply one event (received at `now`, the dashboard's clock); returns "resync" when a new
        snapshot is needed, else None."""
        if ev_id:
            self.last_event_id = ev_id
        ev = EventKind.parse(kind)
        if ev in (EventKind.RESYNC, EventKind.OVERFLOW):
            return "resync"
        if ev is None or ev is EventKind.HELLO:  # a kind of a newer server: nothing to show here
            return None
        self.events += 1
        if ev.family is Family.SESSION:
            s = data.get("session") or {}
            if "id" not in s:
                return None
            if ev in REMOVALS:
                self.sessions.pop(s["id"], None)
            else:
                self.sessions[s["id"]] = s
        elif ev.family is Family.RULE:
            r = data.get("rule") or {}
            if "source" not in r:
                return None
            key = (r["source"], r["group"])
            if ev in REMOVALS:
                self.rules.pop(key, None)
                self.rule_rates.pop(key, None)
            else:  # the desired rule, with its state on each router as the server decided it
                self.rules[key] = {**r, "routers": data.get("routers") or {}, "state": data.get("state")}
        elif ev is EventKind.ROUTER_CHANGED:
            if "name" in data:
                self.routers[data["name"]] = {k: v for k, v in data.items() if k != "at"}
        elif ev is EventKind.MODE_CHANGED:
            self.mode = data.get("mode")
        elif ev is EventKind.DENIED and now is not None and "source" in data:
            dkey = (data["source"], data["group"], data["reason"])
            self.reported[dkey] = now
            d = self.denied.get(dkey)
            if d is None:
                d = self.denied[dkey] = Denied(*dkey, packets=data.get("packets", 0), octets=data.get("bytes", 0))
            d.last_ttl = data.get("last_ttl") or d.last_ttl
            d.routers.add(data.get("router", "?"))
            d.offender = offender_text(data) or d.offender
            d.active_at = now
        return None

    def apply_traffic(self, data: dict, now: float) -> None:
        """A `GET /traffic` answer read at `now` (the dashboard's monotonic clock)."""
        for view in data.get("rules") or []:
            key = (view.get("source"), view.get("group"))
            known = self.rules.get(key)
            # The server's states of the rule version we show (not of an older one, answered
            # before a rule event that already arrived).
            if known is not None and view.get("updated") == known.get("updated"):
                self.rules[key] = {**known, "routers": view.get("routers") or {}, "state": view.get("state")}
        rates: dict[RuleKey, Rate] = {}
        denied_now: dict[tuple[str, str, str], Denied] = {}
        for name, answer in (data.get("routers") or {}).items():
            prev = self.reads.get(name)
            if not answer.get("ok"):
                self.reads[name] = RouterRead(False, now, error=answer.get("error") or "unreadable")
                continue
            read = RouterRead(True, now, wall=answer.get("at"), mode=answer.get("mode"),
                              rule_count=answer.get("rule_count"),
                              rules={(e["source"], e["group"]): e for e in answer.get("rules", [])},
                              denied={(d["source"], d["group"], d["reason"]): d for d in answer.get("denied", [])})
            self.reads[name] = read
            base = prev if prev is not None and prev.ok else None
            for key, entry in read.rules.items():
                rates[key] = rates.get(key, Rate()).add(_rate(entry, base.rules.get(key) if base else None,
                                                              now - base.at if base else 0.0))
            for dkey, entry in read.denied.items():
                d = denied_now.get(dkey)
                if d is None:
                    d = denied_now[dkey] = Denied(*dkey)
                before = base.denied.get(dkey) if base else None
                d.packets += entry.get("packets", 0)
                d.octets += entry.get("bytes", 0)
                d.last_ttl = entry.get("last_ttl", 0) or d.last_ttl
                d.offender = d.offender or offender_text(entry)
                d.routers.add(name)
                d.rate = d.rate.add(_rate(entry, before, now - base.at if base else 0.0))
                # When the server last reported the pair: its `denied` event, or (reported before we
                # were listening) what the listing says, on the server's clock.
                times = [self.reported.get(dkey), d.active_at]
                told, wall = entry.get("reported"), answer.get("at")
                if told and wall and wall - told <= DENIED_WINDOW:
                    times.append(now - max(0.0, wall - told))
                d.active_at = max((t for t in times if t is not None), default=None)
        self.reported = {k: t for k, t in self.reported.items() if now - t <= DENIED_WINDOW}
        self.rule_rates = rates
        self.denied = denied_now

    def load_receivers(self, rules: list[dict], denied: list[dict], joined: list[dict],
                       unread: dict[str, str] | None = None) -> None:
        """The answers of `GET /receivers`, `/receivers/denied` and `/receivers/joined`, read together;
        `unread`: the routers whose listings could not be read, with why (their "errors").

        An entry without the fields the pane shows (a newer server's, say)
        is left out rather than shown half; a rule this version cannot read
        is listed but authorizes nothing on the board.
        """
        self.receiver_rules = [r for r in rules if isinstance(r, dict)]
        self._allowing = [(rule, r) for r in self.receiver_rules if (rule := _receiver_rule(r)) is not None]
        self.refused = {refused_key(d): d for d in denied if _has(d, _REFUSED_FIELDS)}
        self.joined = {joined_key(j): j for j in joined if _has(j, _JOINED_FIELDS)}
        self.receivers_problem = ""
        self.receivers_unread = dict(unread or {})

    # =========================================================================
    # derived state
    # =========================================================================

    def allowed_by(self, key: str) -> tuple[ReceiverRule, dict] | None:
        """The receiver rule (and its view) that allows the refused join `key` now, if one does."""
        d = self.refused.get(key)
        if d is None:
            return None
        try:
            receiver, group = ipaddress.ip_address(d["receiver"]), ipaddress.ip_address(d["group"])
            source = ipaddress.ip_address(d["source"]) if d.get("source") else None
        except ValueError:
            return None
        return next(((rule, view) for rule, view in self._allowing
                     if rule.allows(receiver, group, source, d["iface"])), None)

    def authorize_join(self, key: str) -> dict:
        """The receiver rule (its JSON, for `POST /receivers`) that authorizes the refused join `key`:
        that host alone, its group, its source if it named one, on its interface.

        ValueError with one sentence when there is nothing a rule could authorize.
        """
        d = self.refused.get(key)
        if d is None:
            raise ValueError("select a refused join (deny or limit) to authorize its receiver")
        if d["reason"] == "join_limit":
            raise ValueError(f"{d['group']} was refused for the group limit of {d['iface']} on {d['router']}:"
                             " a receiver rule does not lift it")
        if d["iface"].startswith("#"):
            raise ValueError(f"the interface {d['iface']} this join came in on is gone from {d['router']}")
        allowing = self.allowed_by(key)
        if allowing is not None:
            raise ValueError(f"already authorized: {allowing[0]}")
        try:
            return ReceiverRule.make(d["receiver"], d["group"], d.get("source"), d["iface"]).as_json()
        except RuleError as exc:
            raise ValueError(str(exc)) from None


    def rule_state_on(self, key: RuleKey, router: str) -> str:
        """The rule's state on `router` as the server decided it ("applied", "pending", "refused"), or "unknown"."""
        rule = self.rules.get(key)
        if rule is None:
            return "unknown"
        return ((rule.get("routers") or {}).get(router) or {}).get("state") or "unknown"

    def on_all_routers(self, key: RuleKey) -> bool:
        """Whether the server says every router holds the rule."""
        return self.rules.get(key, {}).get("state") == "applied"

    def session_pairs(self, s: dict) -> tuple[list[RuleKey], list[RuleKey]]:
        """(pairs the session needs, pairs that have a rule)."""
        groups = [g["address"] for g in s.get("groups", [])]
        if s.get("sources"):
            needed = [(src, g) for src in s["sources"] for g in groups]
            return needed, [p for p in needed if p in self.rules]
        ruled = [k for k in self.rules if k[1] in groups]
        return ruled, ruled

    def session_authorized(self, s: dict) -> str:
        needed, ruled = self.session_pairs(s)
        if not ruled:
            return "no"
        if len(ruled) < len(needed):
            return "partial"
        return "yes" if all(self.on_all_routers(k) for k in ruled) else "pending"

    def active_denied(self, now: float) -> list[Denied]:
        out = [d for d in self.denied.values() if d.active_at is not None and now - d.active_at <= DENIED_WINDOW]
        return sorted(out, key=lambda d: (-(d.rate.packets or 0.0), -d.packets, d.source, d.group))

    def mode_text(self) -> str:
        """The filter mode for the summary: the desired one, else what the routers report."""
        if self.mode:
            return self.mode
        modes: set[str] = set()
        for name, r in self.routers.items():
            read = self.reads.get(name)
            mode = (read.mode if read is not None and read.ok else None) or r.get("mode")
            if mode:
                modes.add(mode)
        return modes.pop() if len(modes) == 1 else "mixed modes" if modes else "mode unknown"

    def routers_up(self) -> int:
        return sum(1 for r in self.routers.values() if r.get("state") in ("up", "converging"))

    def counts(self, now: float) -> dict[str, int]:
        return {"sessions": len(self.sessions), "rules": len(self.rules), "denied": len(self.active_denied(now)),
                "routers": len(self.routers), "routers_up": self.routers_up()}

    # =========================================================================
    # rows: (key, cells) per pane; widths fit 80 columns
    # =========================================================================

    SESSION_COLUMNS = (("NAME", 17), ("GROUPS/TTL", 18), ("SENDERS", 15), ("AGE", 4), ("EXP", 4), ("AUTH", 7))
    RULE_COLUMNS = (("SOURCE", 15), ("GROUP", 15), ("TTL", 3), ("ROUTERS", 11), ("PKT/S", 6), ("B/S", 6),
                    ("PKTS", 6))
    DENIED_COLUMNS = (("SOURCE", 15), ("GROUP", 15), ("REASON", 6), ("PKT/S", 6), ("B/S", 6), ("TTL", 3),
                      ("ROUTERS", 10))
    # Columns of the senders and denied panes whose cells are addresses: shown whole, however
    # wide (the widths above are what IPv4 needs; IPv6 addresses and prefixes widen them).
    ADDRESS_COLUMNS = ("SOURCE", "GROUP")
    # Refused joins then joined groups: WHERE is "ROUTER IFACE"; HOST the receiver (the last reporter of
    # a joined group); N the records refused (the reports heard); AGE since the last one.
    RECEIVER_COLUMNS = (("WHERE", 7), ("HOST", 15), ("GROUP", 15), ("SOURCE", 15), ("STATE", 5), ("N", 4),
                        ("AGE", 4))
    RECEIVER_ADDRESS_COLUMNS = ("HOST", "GROUP", "SOURCE")
    ROUTER_COLUMNS = (("NAME", 10), ("STATE", 10), ("MODE", 7), ("RULES", 6), ("PEND", 4), ("EPOCH", 8),
                      ("RESTARTS", 8), ("CONTACT", 7))

    def session_rows(self, now_wall: float) -> list[tuple[str, list[str]]]:
        rows = []
        for s in sorted(self.sessions.values(), key=lambda s: (s.get("name", ""), s["id"])):
            groups = s.get("groups", [])
            first = groups[0] if groups else None
            gtext = "-" if first is None else (
                f"{first['address']}/{first['ttl']}" if first.get("ttl") is not None else first["address"])
            if len(groups) > 1:
                gtext = short(gtext, 14) + f" +{len(groups) - 1}"
            senders = s.get("sources") or []
            stext = "any" if not senders else senders[0] + (f" +{len(senders) - 1}" if len(senders) > 1 else "")
            rows.append((s["id"], [short(s.get("name") or "-", 17), short(gtext, 18), short(stext, 15),
                                   human_age(now_wall - s["first_heard"]) if s.get("first_heard") else "-",
                                   human_age(s["expires"] - now_wall) if s.get("expires") else "-",
                                   self.session_authorized(s)]))
        return rows

    def _router_marks(self, key: RuleKey) -> str:
        marks = {"applied": "✓", "pending": "…", "refused": "✗"}
        states = [(n, self.rule_state_on(key, n)) for n in sorted(self.routers)]
        if not states:
            return "no routers"
        text = " ".join(f"{n}{marks.get(st, '?')}" for n, st in states)
        if len(text) <= 11:
            return text
        ok = sum(1 for _, st in states if st == "applied")
        return f"{ok}/{len(states)} ok"

    def rule_rows(self) -> list[tuple[str, list[str]]]:
        rows = []
        for key in sorted(self.rules, key=_addr_order):
            r = self.rules[key]
            rate = self.rule_rates.get(key, Rate())
            total = sum(read.rules[key].get("packets", 0) for read in self.reads.values()
                        if read.ok and key in read.rules) if self.reads else r.get("packets", 0)
            rows.append((f"{key[0]}|{key[1]}", [key[0], key[1], str(r.get("max_ttl", "?")), self._router_marks(key),
                                                human_rate(rate.packets), human_rate(rate.octets),
                                                human_count(total)]))
        return rows

    def denied_rows(self, now: float) -> list[tuple[str, list[str]]]:
        return [(f"{d.source}|{d.group}|{d.reason}",
                 [d.source, d.group, _REASON_CELLS.get(d.reason) or short(d.reason, 6), human_rate(d.rate.packets),
                  human_rate(d.rate.octets), str(d.last_ttl or "-"), short(",".join(sorted(d.routers)), 10)])
                for d in self.active_denied(now)]

    def join_state(self, key: str) -> str:
        """The STATE cell of a Receivers row: deny, limit, auth (a rule allows it now), join or left."""
        d = self.refused.get(key)
        if d is not None:
            if d["reason"] == "join_refused" and self.allowed_by(key) is not None:
                return "auth"
            return _JOIN_CELLS.get(d["reason"]) or short(str(d["reason"]), 5)
        return "left" if self.joined.get(key, {}).get("left") else "join"

    def receiver_rows(self, now_wall: float) -> list[tuple[str, list[str]]]:
        """Refused joins, newest first, then the joined groups of each router and interface."""
        def age(entry: dict) -> str:
            seen = entry.get("last_seen")
            return human_age(now_wall - seen) if seen else "-"

        rows = []
        for key, d in sorted(self.refused.items(), key=lambda kv: (-(kv[1].get("last_seen") or 0.0),
                                                                  kv[1]["router"], kv[1]["iface"],
                                                                  _address_order(kv[1]["receiver"]),
                                                                  _address_order(kv[1]["group"]))):
            rows.append((key, [short(f"{d['router']} {d['iface']}", 7), d["receiver"], d["group"],
                               d.get("source") or "any", self.join_state(key), tiny_count(d.get("records") or 0),
                               age(d)]))
        for key, j in sorted(self.joined.items(), key=lambda kv: (kv[1]["router"], kv[1]["iface"],
                                                                 _address_order(kv[1]["group"]))):
            rows.append((key, [short(f"{j['router']} {j['iface']}", 7), j.get("reporter") or "-", j["group"], "-",
                               self.join_state(key), tiny_count(j.get("reports") or 0), age(j)]))
        return rows

    def router_rows(self, now: float, now_wall: float) -> list[tuple[str, list[str]]]:
        rows = []
        for name in sorted(self.routers):
            r = self.routers[name]
            read = self.reads.get(name)
            contact = r.get("last_contact")
            if read is not None and read.ok and read.wall is not None:
                contact = max(contact or 0.0, read.wall)
            state = r.get("state") or "unknown"
            if read is not None and not read.ok and state != "down":
                state = "unreadable"
            mode = (read.mode if read is not None and read.ok else None) or r.get("mode") or "-"
            count = read.rule_count if read is not None and read.ok else r.get("rule_count")
            counters = r.get("counters") or {}
            rows.append((name, [short(name, 10), state, mode, "-" if count is None else str(count),
                                str(r.get("pending", "-")), (r.get("epoch") or "-")[-8:],
                                str(counters.get("restarts_seen", 0) + counters.get("state_losses", 0)),
                                human_age(now_wall - contact) if contact else "never"]))
        return rows

    # =========================================================================
    # details of a selected row (one or two lines under the table)
    # =========================================================================

    def session_detail(self, sid: str, now_wall: float) -> str:
        s = self.sessions.get(sid)
        if s is None:
            return ""
        groups = ", ".join(f"{g['address']} ttl {g['ttl'] if g.get('ttl') is not None else '?'}"
                           for g in s.get("groups", []))
        senders = ", ".join(s.get("sources") or []) or (
            "any (suggested: " + (", ".join(s.get("suggested_senders") or []) or "none") + ")")
        needed, ruled = self.session_pairs(s)
        rules = f"{len(ruled)} of {len(needed)} rules" if s.get("sources") else f"{len(ruled)} rules"
        return (f"{s.get('name')} [{sid}] from {s.get('announcer')}: groups {groups}; senders {senders};"
                f" {rules}; authorized on all routers: {self.session_authorized(s)}")

    def rule_detail(self, key: RuleKey) -> str:
        r = self.rules.get(key)
        if r is None:
            return ""
        where = ", ".join(f"{n}: {self.rule_state_on(key, n)}" for n in sorted(self.routers)) or "no routers"
        session = r.get("session")
        name = self.sessions.get(session, {}).get("name") if session else None
        origin = f"session {name or session}" if session else "added by hand"
        expires = " (expires with the session)" if r.get("expire_with_session") else ""
        binding = r.get("binding")
        bound = f"; bound: {binding_text(binding)}{self._learned(key)}" if binding else ""
        return (f"{key[0]} -> {key[1]} max TTL {r.get('max_ttl')}; {where}; {origin}{expires}; "
                f"by {r.get('actor') or '?'}{bound}")

    def _learned(self, key: RuleKey) -> str:
        """What a learning rule pinned on each router that was read, and how often its sender moved."""
        parts = []
        for name, read in sorted(self.reads.items()):
            entry = read.rules.get(key) if read.ok else None
            if entry is None or "moved" not in entry:
                continue
            parts.append(f"{name} {learned_text(entry.get('learned'), entry.get('moved', 0))}")
        return f"; learned: {'; '.join(parts)}" if parts else ""

    def denied_detail(self, dkey: tuple[str, str, str]) -> str:
        d = self.denied.get(dkey)
        if d is None:
            return ""
        why = ("no rule for this (source, group)" if d.reason == "unauthorized" else
               f"TTL {d.last_ttl} above the rule's max TTL "
               f"{self.rules.get((d.source, d.group), {}).get('max_ttl', '?')}"
               if d.reason == "ttl" else _BINDING_WHY.get(d.reason, d.reason))
        if d.offender:
            why += f" (last from {d.offender})"
        return (f"{d.source} -> {d.group} dropped: {why}; {d.packets} packets, {d.octets} bytes so far"
                f" on {', '.join(sorted(d.routers))}")

    def receiver_detail(self, key: str | None, now_wall: float) -> str:
        """The selected row's details, after the routers whose listings could not be read."""
        unread = "; ".join(f"{n} not read: {why}" for n, why in sorted(self.receivers_unread.items()))
        row = self._receiver_row_detail(key, now_wall) if key is not None else ""
        return " │ ".join(t for t in (unread, row) if t)

    def _receiver_row_detail(self, key: str, now_wall: float) -> str:
        d = self.refused.get(key)
        if d is not None:
            source = f" from {d['source']}" if d.get("source") else ""
            proto = "IGMP" if ":" not in d["receiver"] else "MLD"
            version = f" {proto}v{d['version']}" if d.get("version") else ""
            seen = f", the last {human_age(now_wall - d['last_seen'])} ago" if d.get("last_seen") else ""
            text = (f"{d['receiver']} may not join {d['group']}{source} on {d['iface']} of {d['router']}:"
                    f" {_JOIN_WHY.get(d['reason'], d['reason'])}; {d.get('records', 0)} records refused in"
                    f"{version} reports{seen}")
            allowing = self.allowed_by(key)
            if allowing is not None:
                rule, view = allowing
                states = ", ".join(f"{n} {(st or {}).get('state') or '?'}"
                                   for n, st in sorted((view.get("routers") or {}).items()))
                text += f"; now allowed: {rule}" + (f" ({states})" if states else "")
            return text
        j = self.joined.get(key)
        if j is None:
            return ""
        first = f" since {human_age(now_wall - j['first_seen'])} ago" if j.get("first_seen") else ""
        last = f" {human_age(now_wall - j['last_seen'])} ago" if j.get("last_seen") else ""
        left = "; left (a leave was heard)" if j.get("left") else ""
        return (f"{j['group']} joined on {j['iface']} of {j['router']}: last report from {j.get('reporter') or '?'}"
                f"{last}, {j.get('reports', 0)} reports{first}{left}")

    def router_detail(self, name: str) -> str:
        r = self.routers.get(name)
        if r is None:
            return ""
        read = self.reads.get(name)
        err = r.get("last_error") or (read.error if read is not None and not read.ok else "")
        return (f"{name} at {r.get('address')}: epoch {r.get('epoch') or '-'}, state id {r.get('state_id') or '-'},"
                f" backend {r.get('backend') or '-'}" + (f"; last error: {err}" if err else ""))


_REASON_CELLS = {"ttl": "ttl", "unauthorized": "unauth", "wrong_iif": "iif", "wrong_mac": "mac",
                 "rpf_fail": "rpf"}
_BINDING_WHY = {"wrong_iif": "the rule's binding wants another interface (wrong_iif)",
                "wrong_mac": "the rule's binding wants another source MAC (wrong_mac)",
                "rpf_fail": "the source does not route back through its interface (rpf_fail)"}


_JOIN_CELLS = {"join_refused": "deny", "join_limit": "limit"}
_JOIN_WHY = {"join_refused": "no receiver rule allows it (join_refused)",
             "join_limit": "the interface holds its limit of groups (join_limit)"}
_REFUSED_FIELDS = ("router", "iface", "receiver", "group", "reason")
_JOINED_FIELDS = ("router", "iface", "group")


def receivers_changed(kind: str) -> bool:
    """Whether an event (receiver.added, .removed, .policy, .denied) makes the Receivers pane worth reading again."""
    ev = EventKind.parse(kind)
    return ev is not None and ev.family is Family.RECEIVER


def refused_key(d: dict) -> str:
    """The Receivers row of a refused join: one per router, interface, receiver, group and source."""
    return "|".join(("refused", d["router"], d["iface"], d["receiver"], d["group"], d.get("source") or ""))


def joined_key(j: dict) -> str:
    """The Receivers row of a joined group: one per router, interface and group."""
    return "|".join(("joined", j["router"], j["iface"], j["group"]))


def _has(entry: object, fields: tuple[str, ...]) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(f), str) and entry[f] for f in fields)


def _receiver_rule(view: dict) -> ReceiverRule | None:
    """The rule of a `GET /receivers` entry (its view's other fields set aside); None if this version cannot read it."""
    try:
        return ReceiverRule.from_json({k: view[k] for k in ("receiver", "group", "source", "iface") if k in view})
    except RuleError:
        return None


def _address_order(text: str):
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return (1, b"", text)
    return (0, bytes([addr.version]) + addr.packed, "")


def offender_text(entry: dict) -> str:
    """"eth1 02:00:5e:10:00:09": where the last packet a binding dropped came from; "" for other drops."""
    return " ".join(x for x in (entry.get("iface"), entry.get("mac")) if x)


def binding_text(binding) -> str:
    """A rule's binding as text ("-" for none); `binding` is a Binding or its JSON (or None)."""
    if not binding:
        return "-"
    if isinstance(binding, Binding):
        return str(binding) if not binding.empty else "-"
    try:
        return str(Binding.from_json(binding))
    except RuleError:  # a newer server's binding: shown as it came
        return json.dumps(binding, sort_keys=True, separators=(",", ":"))


def learned_text(learned, moved) -> str:
    """What a learning rule pinned, and how many packets came from elsewhere since: "eth1 02:..:01, moved 3"."""
    if not learned:
        return "nothing yet"
    if isinstance(learned, dict):
        iface, mac = learned.get("iface", "?"), learned.get("mac", "?")
    else:
        iface, mac = learned[0], format_mac(learned[1])
    return f"{iface} {mac}" + (f", moved {moved}" if moved else "")


def _rate(entry: dict, before: dict | None, dt: float) -> Rate:
    if before is None or dt <= 0:
        return Rate()
    dp = entry.get("packets", 0) - before.get("packets", 0)
    db = entry.get("bytes", 0) - before.get("bytes", 0)
    if dp < 0 or db < 0:  # the counter started again (router restart, rule re-added)
        dp, db = entry.get("packets", 0), entry.get("bytes", 0)
    return Rate(dp / dt, db / dt)


def _addr_order(key: RuleKey):
    """Rules in address order: IPv4 before IPv6, then source, then group (a host before its prefix)."""
    def side(text: str):
        net = ipaddress.ip_network(text, strict=False)
        return net.version, net.network_address.packed, -net.prefixlen

    try:
        return (0, side(key[0]), side(key[1]))
    except ValueError:
        return (1, key[0], key[1])

