"""`mauthctl dashboard`: the administrator's live view of sessions, senders, denied traffic and routers.

Strategy: a thin Textual shell around `mauthclient.board.Board`, which
decides every row. Two async workers feed it, both cancelled the moment the
operator quits (q or Ctrl-C):

* the event stream (`GET /api/v1/events`): on connecting, one snapshot of
  sessions, rules, routers and mode, then every event as it comes. A broken
  stream is re-opened with `Last-Event-ID` after a growing pause (1 s to
  10 s); the server answers `resync` when it cannot replay what was missed,
  and the dashboard takes a new snapshot. Nothing about sessions, rules or
  routers is polled.
* the counters (`GET /api/v1/traffic`) every `TRAFFIC_INTERVAL` seconds, and
  soon after a rule changed: counters change with every packet and are not
  events, so the rates and the denied pairs' counts are a periodic read; the
  same answer carries each rule's state on each router as mauthserver
  decides it.
* the receivers (`GET /api/v1/receivers`, `/receivers/denied`,
  `/receivers/joined`) every `RECEIVERS_INTERVAL` seconds while their pane
  is shown, and soon after a `receiver.*` event or on opening the pane: the
  routers' refused joins and joined groups are listings, not events.

The screen is five tabs (keys 1-5) so that each table gets the full width of
an 80x24 terminal; the summary line above them always shows the counts of
the first four. Everything works from the keyboard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import cast

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from mauthcore.events import EventKind, Family
from mauthcore.receivers import ReceiverRule

from .api import ApiError, AsyncApiClient, Unreachable
from .board import Board, receivers_changed

TRAFFIC_INTERVAL = 2.0
RECEIVERS_INTERVAL = 5.0
MIN_READ_GAP = 1.0  # the server shares reads younger than 1 s anyway
RETRY_MIN, RETRY_MAX = 1.0, 10.0
# Colours for cells that say whether things are well: (pane, column) -> value -> style.
STYLES = {
    ("sessions", "AUTH"): {"yes": "green", "pending": "yellow", "partial": "yellow", "no": "red"},
    ("routers", "STATE"): {"up": "green", "converging": "yellow", "down": "red", "unreadable": "red",
                           "unknown": "yellow"},
    ("routers", "MODE"): {"monitor": "yellow"},
    ("denied", "REASON"): {"unauth": "red", "ttl": "yellow"},
    ("receivers", "STATE"): {"deny": "red", "limit": "yellow", "auth": "green", "left": "dim"},
}

HELP = """\
[b]mauth dashboard[/b]  (server: {server})

[b]1[/b] Sessions  announced with SAP: groups/TTL, declared senders,
           age, expiry, and whether their senders are authorized
           on every router (yes / pending / partial / no)
[b]2[/b] Senders   the rules: max TTL, state on each router as
           mauthserver says (✓ applied, … pending, ✗ refused,
           ? unknown), packet and byte rates
[b]3[/b] Denied    (source, group) pairs mauthserver reports dropped
           now, with rates and why
[b]4[/b] Routers   reachability, mode, rules, epoch, restarts, contact
[b]5[/b] Receivers refused joins (deny, limit; auth once a rule allows
           them), then the groups joined on each router interface

[b]a[/b] authorize the selected session, denied pair or refused join
[b]r[/b] / [b]d[/b] revoke the selected rule (or session's rules)
[b]/[/b] filter the rows   [b]esc[/b] clear the filter
[b]↑ ↓[/b] select   [b]?[/b] this help   [b]q[/b] / [b]ctrl+c[/b] quit

Sessions, rules and routers follow the event stream; rates are
read every {interval:.0f} s. Press esc or ? to close."""


def _addresses(text: str) -> list[str]:
    """Comma- or space-separated addresses; ValueError names the bad one."""
    out = []
    for part in text.replace(",", " ").split():
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address") from None
    if not out:
        raise ValueError("give at least one sender address")
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.text)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.question))
            yield Label("[b]y[/b] yes   [b]n[/b] / [b]esc[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SenderScreen(ModalScreen[list[str] | None]):
    """Who may send to an any-source session: a suggestion picked, or addresses typed. Never assumed."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, session: dict) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        s = self.session
        options = []
        for addr in s.get("suggested_senders") or []:
            roles = [r for r, a in (("origin o=", s.get("origin")), ("announcer", s.get("announcer"))) if a == addr]
            options.append(Option(f"{addr}  ({' and '.join(roles) or 'suggested'})", id=addr))
        with Vertical(id="dialog"):
            yield Label(f"Authorize a sender for [b]{escape(str(s.get('name')))}[/b]")
            yield Label("No senders declared: pick one, or type addresses below.")
            if options:
                yield OptionList(*options, id="suggestions")
            yield Input(placeholder="sender address(es), comma-separated", id="senders")
            yield Label("", id="error")
            yield Label("[b]enter[/b] authorize   [b]tab[/b] next field   [b]esc[/b] cancel")

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss([cast(str, event.option.id)])  # compose() gives every suggestion its address as id

    @on(Input.Submitted)
    def typed(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(_addresses(event.value))
        except ValueError as exc:
            self.query_one("#error", Label).update(f"[red]{exc}[/red]")

    def action_cancel(self) -> None:
        self.dismiss(None)


class TtlScreen(ModalScreen[int | None]):
    """The max TTL for authorizing a denied (source, group) pair."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, source: str, group: str, suggested: int | None) -> None:
        super().__init__()
        self.source, self.group, self.suggested = source, group, suggested

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Authorize [b]{self.source}[/b] to send to [b]{self.group}[/b] with a TTL of at most:")
            yield Input(value="" if self.suggested is None else str(self.suggested), placeholder="1-255",
                        type="integer", id="ttl")
            yield Label("", id="error")
            yield Label("[b]enter[/b] authorize   [b]esc[/b] cancel")

    @on(Input.Submitted)
    def typed(self, event: Input.Submitted) -> None:
        try:
            ttl = int(event.value)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= 255:
            self.query_one("#error", Label).update("[red]the max TTL must be 1-255[/red]")
            return
        self.dismiss(ttl)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Dashboard(App[int]):
    TITLE = "mauth"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #status { height: 1; background: $panel; padding: 0 1; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    DataTable { height: 1fr; }
    #detail { height: 2; padding: 0 1; color: $text-muted; }
    #filter { dock: bottom; display: none; height: 3; }
    #filter.shown { display: block; }
    ModalScreen { align: center middle; }
    #dialog { width: 76; height: auto; max-height: 22; border: thick $accent; background: $surface;
              padding: 0 1; }
    #dialog OptionList { height: auto; max-height: 6; }
    """
    BINDINGS = [
        Binding("1", "pane('sessions')", "Sessions", show=False),
        Binding("2", "pane('senders')", "Senders", show=False),
        Binding("3", "pane('denied')", "Denied", show=False),
        Binding("4", "pane('routers')", "Routers", show=False),
        Binding("5", "pane('receivers')", "Receivers"),
        Binding("a", "authorize", "Authorize"),
        Binding("r,d", "revoke", "Revoke", key_display="r"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, server: str, token: str, *, user: str | None = None, http_timeout: float = 30.0,
                 traffic_interval: float = TRAFFIC_INTERVAL, receivers_interval: float = RECEIVERS_INTERVAL) -> None:
        super().__init__()
        self.server = server
        self.api = AsyncApiClient(server, token, timeout=http_timeout, user=user)
        self.board = Board()
        self.traffic_interval = traffic_interval
        self.receivers_interval = receivers_interval
        self.connected = False
        self.problem = "connecting"
        self.filter_text = ""
        self._render_pending = False
        self._traffic_soon = asyncio.Event()
        self._receivers_soon = asyncio.Event()
        self.receiver_reads = 0
        self.snapshots = 0
        self.traffic_reads = 0

    # -- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with TabbedContent(initial="sessions"):
            for pane, title, columns in (("sessions", "1 Sessions", Board.SESSION_COLUMNS),
                                         ("senders", "2 Senders", Board.RULE_COLUMNS),
                                         ("denied", "3 Denied", Board.DENIED_COLUMNS),
                                         ("routers", "4 Routers", Board.ROUTER_COLUMNS),
                                         ("receivers", "5 Receivers", Board.RECEIVER_COLUMNS)):
                with TabPane(title, id=pane):
                    table: DataTable[Text] = DataTable(id=f"t-{pane}", cursor_type="row", zebra_stripes=True)
                    for label, width in columns:
                        # Addresses are never cut: an IPv6 source or group widens its column
                        # (2001:db8:0:1::10 and 2001:db8:0:1::11 would look alike at 15).
                        auto = (pane in ("senders", "denied") and label in Board.ADDRESS_COLUMNS
                                or pane == "receivers" and label in Board.RECEIVER_ADDRESS_COLUMNS)
                        table.add_column(label, key=label, width=None if auto else width)
                    yield table
        yield Static("", id="detail")
        yield Input(placeholder="filter rows (esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.server
        self.render_all()
        self.table("sessions").focus()
        self.follow_events()
        self.read_traffic()
        self.read_receivers()

    async def on_unmount(self) -> None:
        await self.api.close()

    def table(self, pane: str) -> DataTable:
        return self.query_one(f"#t-{pane}", DataTable)

    @property
    def pane(self) -> str:
        return self.query_one(TabbedContent).active or "sessions"

    # -- workers -------------------------------------------------------------------

    async def snapshot(self) -> None:
        sessions, rules, routers, mode = await asyncio.gather(
            self.api.sessions(), self.api.rules(), self.api.routers(), self.api.mode())
        self.board.load(sessions, rules, routers, mode.get("mode"))
        self.snapshots += 1
        self.schedule_render()

    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                async for ev_id, kind, data in self.api.events(self.board.last_event_id):
                    if kind == EventKind.HELLO and self.snapshots == 0:
                        await self.snapshot()  # after subscribing, so that nothing falls in between
                    if self.board.apply_event(ev_id, kind, data, time.monotonic()) == "resync":
                        await self.snapshot()
                    ev = EventKind.parse(kind)
                    if ev is not None and ev.family in (Family.RULE, Family.DENIED):  # counters worth reading now
                        self._traffic_soon.set()
                    if receivers_changed(kind):
                        self._receivers_soon.set()
                    self.connected, self.problem, delay = True, "", RETRY_MIN
                    self.schedule_render()
                self.problem = "the server closed the event stream"
            except ApiError as exc:
                self.problem = exc.message
            except Unreachable as exc:
                self.problem = str(exc)
            self.connected = False
            self.schedule_render()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    @work(exclusive=True, group="traffic")
    async def read_traffic(self) -> None:
        while True:
            try:
                data = await self.api.traffic()
            except (ApiError, Unreachable):
                pass  # the event stream reports the server's trouble
            else:
                self.board.apply_traffic(data, time.monotonic())
                self.traffic_reads += 1
                self.schedule_render()
            last = time.monotonic()
            self._traffic_soon.clear()
            try:
                await asyncio.wait_for(self._traffic_soon.wait(), self.traffic_interval)
                # Soon, not at once: let the fan-out reach the routers, and never more than once a second.
                await asyncio.sleep(max(0.3, MIN_READ_GAP - (time.monotonic() - last)))
            except TimeoutError:
                pass

    @work(exclusive=True, group="receivers")
    async def read_receivers(self) -> None:
        while True:
            try:
                shown = self.pane == "receivers"
            except NoMatches:  # the app is closing
                return
            if shown or self.receiver_reads == 0:
                answers = await asyncio.gather(self.api.receivers(), self.api.denied_receivers(),
                                               self.api.joined(), return_exceptions=True)
                failed = next((a for a in answers if isinstance(a, BaseException)), None)
                if isinstance(failed, ApiError):  # an older mauthserver without receivers, say
                    self.board.receivers_problem = f"receivers: {failed.message}"
                elif isinstance(failed, Unreachable):
                    self.board.receivers_problem = f"receivers: {failed}"
                elif failed is not None:
                    raise failed
                else:
                    Listing = tuple[list[dict], dict[str, str]]
                    rules, (denied, unread), (joined, unread_too) = cast(tuple[list[dict], Listing, Listing],
                                                                         tuple(answers))
                    self.board.load_receivers(rules, denied, joined, {**unread_too, **unread})
                self.receiver_reads += 1
                self.schedule_render()
            last = time.monotonic()
            self._receivers_soon.clear()
            try:
                await asyncio.wait_for(self._receivers_soon.wait(), self.receivers_interval)
                await asyncio.sleep(max(0.3, MIN_READ_GAP - (time.monotonic() - last)))
            except TimeoutError:
                pass

    # -- rendering -------------------------------------------------------------------

    def schedule_render(self) -> None:
        if not self._render_pending:
            self._render_pending = True
            self.set_timer(0.05, self.render_all)

    def render_all(self) -> None:
        self._render_pending = False
        try:
            self._render_all()
        except NoMatches:  # a render timer that fired while the app was closing
            pass

    def _render_all(self) -> None:
        now, now_wall = time.monotonic(), time.time()
        b = self.board
        self._fill("sessions", b.session_rows(now_wall))
        self._fill("senders", b.rule_rows())
        self._fill("denied", b.denied_rows(now))
        self._fill("routers", b.router_rows(now, now_wall))
        self._fill("receivers", b.receiver_rows(now_wall))
        c = b.counts(now)
        link = ("[green]● live[/green]" if self.connected else
                "[yellow]○ connecting[/yellow]" if self.problem == "connecting" else "[red]○ offline[/red]")
        mode = b.mode_text()
        flt = f" │ /{escape(self.filter_text)}" if self.filter_text else ""
        self.query_one("#status", Static).update(
            f"{c['sessions']} sessions │ {c['rules']} rules │ {c['denied']} denied │ "
            f"{c['routers_up']}/{c['routers']} routers up │ {mode} │ {link}{flt}")
        self.update_detail()

    def _fill(self, pane: str, rows: list[tuple[str, list[str]]]) -> None:
        table = self.table(pane)
        if self.filter_text:
            needle = self.filter_text.lower()
            rows = [(k, cells) for k, cells in rows if any(needle in str(c).lower() for c in cells)]
        selected = self.selected_key(pane)
        keys = [k for k, _ in rows]
        current = [rk.value for rk in table.rows]
        columns = [c.key for c in table.columns.values()]
        # Every column's key is its label (compose()); `or ""` only types it, as no style is keyed by "".
        styles = [STYLES.get((pane, c.value or ""), {}) for c in columns]
        # Text, not markup: names and addresses come from the network (SAP) and are shown as they are.
        shown = [(k, [Text(str(v), style=st.get(str(v), "")) for v, st in zip(cells, styles)]) for k, cells in rows]
        if keys == current:
            for key, texts in shown:
                old = table.get_row(key)
                for col, new, was in zip(columns, texts, old):
                    if new != was:
                        table.update_cell(key, col, new)
            return
        table.clear()
        for key, texts in shown:
            table.add_row(*texts, key=key)
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)

    def selected_key(self, pane: str | None = None) -> str | None:
        table = self.table(pane or self.pane)
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # the cursor is outside the (just cleared) table
            return None

    def update_detail(self) -> None:
        key, pane, b = self.selected_key(), self.pane, self.board
        text = ""
        if key is not None:
            if pane == "sessions":
                text = b.session_detail(key, time.time())
            elif pane == "senders":  # the rows' keys: source|group, source|group|reason (Board)
                source, group = key.split("|")
                text = b.rule_detail((source, group))
            elif pane == "denied":
                source, group, reason = key.split("|")
                text = b.denied_detail((source, group, reason))
            elif pane != "receivers":
                text = b.router_detail(key)
        if pane == "receivers":
            text = b.receivers_problem or b.receiver_detail(key, time.time())
        content = Text(text)
        if not self.connected:
            content = Text(f"{self.problem or 'connecting'}; retrying", style="red")
        self.query_one("#detail", Static).update(content)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.update_detail()

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        self.table(self.pane).focus()
        if self.pane == "receivers":
            self._receivers_soon.set()
        self.update_detail()

    # -- actions ---------------------------------------------------------------------

    def action_pane(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self.table(pane).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP.format(server=self.server, interval=self.traffic_interval)))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.schedule_render()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not self.filter_text:
            event.input.remove_class("shown")
        self.table(self.pane).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        self.filter_text = ""
        box.remove_class("shown")
        self.table(self.pane).focus()
        self.schedule_render()

    def action_authorize(self) -> None:
        key, pane = self.selected_key(), self.pane
        if pane == "sessions" and key is not None:
            session = self.board.sessions.get(key)
            if session is None:
                return
            if session.get("sources"):
                self.authorize(key, None)
            else:
                def chosen(senders: list[str] | None) -> None:
                    if senders:
                        self.authorize(key, senders)

                self.push_screen(SenderScreen(session), chosen)
        elif pane == "denied" and key is not None:
            source, group, _ = key.split("|")

            def ttl_chosen(ttl: int | None) -> None:
                if ttl:
                    self.add_sender(source, group, ttl)

            self.push_screen(TtlScreen(source, group, self._suggested_ttl(group)), ttl_chosen)
        elif pane == "receivers" and key is not None:
            try:
                rule = self.board.authorize_join(key)
            except ValueError as exc:
                self.notify(str(exc), severity="warning", timeout=8)
                return
            self.add_receiver(rule)
        else:
            self.notify("select a session (1), a denied sender (3) or a refused join (5) to authorize",
                        severity="warning")

    def _suggested_ttl(self, group: str) -> int | None:
        """The TTL the announcement of `group` asks for, if a session announces it."""
        for s in self.board.sessions.values():
            for g in s.get("groups", []):
                if g.get("address") == group and g.get("ttl"):
                    return int(g["ttl"])
        return None

    def action_revoke(self) -> None:
        key, pane = self.selected_key(), self.pane
        if pane == "senders" and key is not None:
            source, group = key.split("|")

            def remove(yes: bool | None) -> None:
                if yes:
                    self.remove_rule(source, group)

            self.push_screen(ConfirmScreen(f"Remove the rule {source} -> {group} from every router?"), remove)
        elif pane == "sessions" and key is not None:
            name = self.board.sessions.get(key, {}).get("name", key)

            def revoke(yes: bool | None) -> None:
                if yes:
                    self.revoke(key)

            self.push_screen(ConfirmScreen(f"Remove every rule authorized from session {name!r}?"), revoke)
        else:
            self.notify("select a rule (2) or a session (1) to revoke", severity="warning")

    @work(group="commands")
    async def authorize(self, session_id: str, senders: list[str] | None) -> None:
        try:
            out = await self.api.authorize(session_id, senders=senders)
        except ApiError as exc:
            self.notify(exc.message, severity="error", timeout=8)
            return
        except Unreachable as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        rules = ", ".join(f"{r['source']}->{r['group']}" for r in out["rules"])
        self.notify(f"authorized {out['name']}: {rules or 'no rules'}", timeout=6)
        self._traffic_soon.set()

    @work(group="commands")
    async def add_sender(self, source: str, group: str, ttl: int) -> None:
        try:
            await self.api.add_rule(source, group, ttl)
        except (ApiError, Unreachable) as exc:
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.notify(f"authorized {source} -> {group} max TTL {ttl}", timeout=6)
        self._traffic_soon.set()

    @work(group="commands")
    async def add_receiver(self, rule: dict) -> None:
        try:
            await self.api.add_receiver(rule)
        except (ApiError, Unreachable) as exc:
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.notify(f"authorized: {ReceiverRule.from_json(rule)}", timeout=6)
        self._receivers_soon.set()

    @work(group="commands")
    async def remove_rule(self, source: str, group: str) -> None:
        try:
            await self.api.remove_rule(source, group)
        except (ApiError, Unreachable) as exc:
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.notify(f"removed {source} -> {group}", timeout=6)

    @work(group="commands")
    async def revoke(self, session_id: str) -> None:
        try:
            out = await self.api.revoke(session_id)
        except (ApiError, Unreachable) as exc:
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.notify(f"revoked: {len(out['rules'])} rules removed", timeout=6)

    async def action_quit(self) -> None:  # async, as App's is; run_action() awaits it
        self.exit(0)
