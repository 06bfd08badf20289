"""The dashboard, driven headless with Textual's pilot against a real mauthserver API on 127.0.0.1.

The server side is `LoopbackFleet`: the real mediator, store, fan-out and
API, managing routers that run the real protocol server core on memory
backends. Pressing keys in the dashboard must change what those routers
hold; counters set on a router must show up as rates.
"""

from __future__ import annotations

import asyncio
import time
from ipaddress import ip_address

import pytest

from mauthclient.dashboard import Dashboard
from mauthcore.protocol.model import DeniedJoinEntry, JoinedEntry, Reason
from mauthcore.receivers import ReceiverRule
from tests.support import waiting
from tests.support.loopback_fleet import TOKEN, LoopbackFleet
from tests.support.sessions import ASM, SSM


@pytest.fixture
def fleet(tmp_path):
    with LoopbackFleet(tmp_path, routers=("r1", "r2"), denied_interval=0.3) as f:
        f.announce(ASM)
        f.announce(SSM)
        yield f


async def until(pilot, predicate, timeout: float = 15.0, what: str | None = None) -> None:
    """Let the app run (pilot.pause between polls) until `predicate()` holds (tests/support/waiting.py)."""
    await waiting.until(predicate, timeout, what, pause=pilot.pause)


def cells(app: Dashboard, pane: str) -> dict[str, list[str]]:
    table = app.table(pane)
    return {rk.value: [str(c) for c in table.get_row(rk)] for rk in table.rows}


def select(app: Dashboard, pane: str, key: str) -> None:
    table = app.table(pane)
    table.move_cursor(row=table.get_row_index(key))


def app_for(fleet: LoopbackFleet, **kw) -> Dashboard:
    return Dashboard(fleet.url, TOKEN, user="pilot", traffic_interval=0.5, **kw)


def session_id(fleet: LoopbackFleet, name: str) -> str:
    return fleet.call(lambda: next(s.id for s in fleet.mediator.directory.sessions() if s.name == name))


@pytest.mark.asyncio
async def test_authorize_a_declared_session_puts_its_rule_on_every_router(fleet):
    sid = session_id(fleet, "Declared feed")
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: sid in cells(app, "sessions"), what="the sessions")
        assert cells(app, "sessions")[sid][0] == "Declared feed"
        assert cells(app, "sessions")[sid][5] == "no"
        status = str(app.query_one("#status").render())
        assert "2 sessions" in status and "0 rules" in status and "routers up" in status

        select(app, "sessions", sid)
        await pilot.press("a")
        await until(pilot, lambda: fleet.held("r1") == {("192.0.2.10", "232.1.1.1"): 16}
                    and fleet.held("r2") == {("192.0.2.10", "232.1.1.1"): 16}, what="the rule on both routers")
        # The rule arrives by the event stream; its state on each router from the routers' listings.
        await until(pilot, lambda: cells(app, "sessions")[sid][5] == "yes", what="the session authorized")
        await pilot.press("2")
        assert app.pane == "senders"
        row = cells(app, "senders")["192.0.2.10|232.1.1.1"]
        assert row[:4] == ["192.0.2.10", "232.1.1.1", "16", "r1✓ r2✓"]


@pytest.mark.asyncio
async def test_any_source_session_asks_for_the_sender_and_never_assumes(fleet):
    sid = session_id(fleet, "Lobby camera")
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: sid in cells(app, "sessions"), what="the sessions")
        assert cells(app, "sessions")[sid][2] == "any"
        select(app, "sessions", sid)
        await pilot.press("a")
        await pilot.pause()
        assert type(app.screen).__name__ == "SenderScreen"
        await pilot.press("escape")  # cancelled: nothing is authorized
        await pilot.pause()
        assert type(app.screen).__name__ != "SenderScreen"
        await pilot.pause(0.5)
        assert fleet.held("r1") == {}

        await pilot.press("a")
        await pilot.pause()
        await pilot.press("tab")  # from the suggestions to the address field
        for ch in "192.0.2.99x":
            await pilot.press(ch)
        await pilot.press("enter")  # not an address: the dialog stays, with the error
        await pilot.pause()
        assert type(app.screen).__name__ == "SenderScreen"
        assert "not an IP address" in str(app.screen.query_one("#error").render())
        await pilot.press("backspace", "enter")
        await until(pilot, lambda: fleet.held("r1") == {("192.0.2.99", "239.255.12.42"): 32},
                    what="the typed sender's rule")

        await pilot.press("a")  # again, and pick the first suggestion (the o= origin)
        await pilot.pause()
        await pilot.press("enter")
        await until(pilot, lambda: ("192.0.2.55", "239.255.12.42") in fleet.held("r2"), what="the suggestion")


@pytest.mark.asyncio
async def test_revoke_needs_confirmation(fleet):
    fleet.call(fleet.mediator.add_rule, "192.0.2.10", "239.1.1.1", 8, actor="test")
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: "192.0.2.10|239.1.1.1" in cells(app, "senders"), what="the rule")
        await until(pilot, lambda: fleet.held("r1") and fleet.held("r2"), what="the fan-out")
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause(0.5)
        assert ("192.0.2.10", "239.1.1.1") in fleet.held("r1")
        await pilot.press("d", "y")
        await until(pilot, lambda: fleet.held("r1") == {} and fleet.held("r2") == {}, what="the removal")
        await until(pilot, lambda: cells(app, "senders") == {}, what="the row to go")


@pytest.mark.asyncio
async def test_rates_denied_pairs_and_routers(fleet):
    fleet.call(fleet.mediator.add_rule, "192.0.2.10", "239.1.1.1", 8, actor="test")
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: fleet.held("r1") and fleet.held("r2"), what="the fan-out")
        # Traffic grows on r1 between the dashboard's reads; r2 sees none.
        fleet.set_denied("r1", [("192.0.2.66", "239.9.9.9", "unauthorized", 10, 1000, 5)])
        fleet.set_traffic("r1", "192.0.2.10", "239.1.1.1", 100, 10000)
        start = app.traffic_reads
        await until(pilot, lambda: app.traffic_reads >= start + 1, what="a read")
        fleet.set_traffic("r1", "192.0.2.10", "239.1.1.1", 1100, 110000)
        fleet.set_denied("r1", [("192.0.2.66", "239.9.9.9", "unauthorized", 510, 51000, 5)])
        await until(pilot, lambda: app.traffic_reads >= start + 2, what="a second read")
        await pilot.press("2")
        packets = [1100]

        def rising() -> bool:  # the sender keeps sending, whenever the dashboard reads
            packets[0] += 1000
            fleet.set_traffic("r1", "192.0.2.10", "239.1.1.1", packets[0], packets[0] * 100)
            return cells(app, "senders")["192.0.2.10|239.1.1.1"][4] not in ("-", "0")

        await until(pilot, rising, what="a packet rate")
        row = cells(app, "senders")["192.0.2.10|239.1.1.1"]
        assert row[6] not in ("0", "100")  # the packets counted so far
        await pilot.press("3")
        denied = cells(app, "denied")
        assert list(denied) == ["192.0.2.66|239.9.9.9|unauthorized"]
        d = denied["192.0.2.66|239.9.9.9|unauthorized"]
        assert d[:3] == ["192.0.2.66", "239.9.9.9", "unauth"] and d[3] != "-" and d[5] == "5" and d[6] == "r1"
        assert "1 denied" in str(app.query_one("#status").render())

        # Authorizing the denied pair from the Denied pane asks for the max TTL.
        await pilot.press("a")
        await pilot.pause()
        assert type(app.screen).__name__ == "TtlScreen"
        for ch in "12":
            await pilot.press(ch)
        await pilot.press("enter")
        await until(pilot, lambda: fleet.held("r2").get(("192.0.2.66", "239.9.9.9")) == 12, what="the rule")

        await pilot.press("4")
        assert set(cells(app, "routers")) == {"r1", "r2"}
        # Converging while the rule goes out, then up: the dashboard must come to show it.
        await until(pilot, lambda: cells(app, "routers")["r1"][1] == "up", what="r1 shown up")
        assert cells(app, "routers")["r1"][2] == "enforce"


@pytest.mark.asyncio
async def test_filter_help_and_quit(fleet):
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(cells(app, "sessions")) == 2, what="the sessions")
        await pilot.press("slash", *"lobby", "enter")
        await pilot.pause()
        assert [c[0] for c in cells(app, "sessions").values()] == ["Lobby camera"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(cells(app, "sessions")) == 2
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.asyncio
async def test_sessions_follow_the_event_stream(fleet):
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(cells(app, "sessions")) == 2, what="the sessions")
        snapshots = app.snapshots
        fleet.withdraw(ASM)
        await until(pilot, lambda: len(cells(app, "sessions")) == 1, what="the deletion")
        assert app.snapshots == snapshots  # an event, not a re-read


@pytest.mark.asyncio
async def test_ctrl_c_quits_and_an_unreachable_server_is_shown(tmp_path):
    app = Dashboard("http://127.0.0.1:1", TOKEN, traffic_interval=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "offline" in str(app.query_one("#status").render()), what="offline")
        detail = str(app.query_one("#detail").render())
        assert "0 sessions │ 0 rules │ 0 denied │ 0/0 routers up" in str(app.query_one("#status").render())
        assert "cannot reach mauthserver at http://127.0.0.1:1/api/v1: Connection refused" in detail
        await pilot.press("ctrl+c")
        await until(pilot, lambda: app.return_code is not None, what="the dashboard to quit on ctrl+c")
    assert app.return_code == 0


SSM6 = b"""v=0\r
o=operator 3900000001 1 IN IP6 2001:db8:10::20\r
s=Radio six\r
c=IN IP6 ff3e::8000:1\r
t=0 0\r
a=source-filter: incl IN IP6 ff3e::8000:1 2001:db8:10:0:0:0:abcd:20\r
m=audio 5004 RTP/AVP 0\r
"""


@pytest.mark.asyncio
async def test_an_ipv6_session_is_authorized_with_one_key_and_its_addresses_are_shown_whole(fleet):
    fleet.announce(SSM6, announcer="2001:db8:10::20")
    sid = session_id(fleet, "Radio six")
    sender, group = "2001:db8:10::abcd:20", "ff3e::8000:1"
    app = app_for(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: sid in cells(app, "sessions"), what="the sessions")
        select(app, "sessions", sid)
        await pilot.press("a")
        await until(pilot, lambda: fleet.held("r1") == fleet.held("r2") == {(sender, group): 255},
                    what="the rule on both routers, hop limit unrestricted")
        await until(pilot, lambda: cells(app, "sessions")[sid][5] == "yes", what="the session authorized")
        fleet.set_denied("r1", [("2001:db8:0:2::1:66", "ff0e::db8:9", "unauthorized", 10, 1000, 5)])
        await pilot.press("2")
        await until(pilot, lambda: f"{sender}|{group}" in cells(app, "senders"), what="the rule")
        assert cells(app, "senders")[f"{sender}|{group}"][:3] == [sender, group, "255"]
        await pilot.press("3")
        await until(pilot, lambda: cells(app, "denied"), what="the denied pair")
        assert list(cells(app, "denied").values())[0][:2] == ["2001:db8:0:2::1:66", "ff0e::db8:9"]
        for pane, longest in (("senders", sender), ("denied", "2001:db8:0:2::1:66")):
            table = app.table(pane)
            source = next(c for c in table.columns.values() if str(c.label) == "SOURCE")
            assert source.get_render_width(table) >= len(longest) + 2  # cell padding on both sides


def _refused_join(iface, receiver, group, source=None, reason=Reason.JOIN_REFUSED, records=3, version=3):
    return DeniedJoinEntry(iface, ip_address(receiver), ip_address(group),
                           None if source is None else ip_address(source), reason, records,
                           int(time.time() * 1000) - 2000, version)


@pytest.mark.asyncio
async def test_a_refused_join_is_authorized_with_one_key_and_shows_authorized_while_the_router_lists_it(fleet):
    # A rule on the routers already, so the denied watch reads their refused joins (receiver.denied events);
    # the dashboard reads the pane rarely by itself: what it shows at once comes from those events.
    other = ReceiverRule.make("10.9.0.0/16", "239.9.0.0/16")
    fleet.call(fleet.mediator.add_receiver, other.as_json(), actor="test")
    await asyncio.to_thread(waiting.wait_until, lambda: fleet.call(lambda: other in fleet.backends["r1"].receivers),
                            10, "the rule on r1")
    app = app_for(fleet, receivers_interval=60.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        assert app.pane == "receivers"
        await until(pilot, lambda: app.receiver_reads >= 1, what="a first read")
        assert cells(app, "receivers") == {}
        ssm = _refused_join("eth1", "10.1.0.7", "232.1.1.1", "192.0.2.10")
        limit = _refused_join("eth1", "10.1.0.8", "239.1.1.9", reason=Reason.JOIN_LIMIT, version=2)
        fleet.call(fleet.backends["r1"].denied_join_entries.extend, [ssm, limit])
        fleet.call(fleet.backends["r2"].joined_entries.append,
                   JoinedEntry("eth1", ip_address("239.1.2.3"), ip_address("10.2.0.5"),
                               int(time.time() * 1000) - 60000, int(time.time() * 1000) - 5000, 4))
        ssm_key = "refused|r1|eth1|10.1.0.7|232.1.1.1|192.0.2.10"
        await until(pilot, lambda: ssm_key in cells(app, "receivers"), what="the refused join, after its event")
        rows = cells(app, "receivers")
        assert rows[ssm_key][:6] == ["r1 eth1", "10.1.0.7", "232.1.1.1", "192.0.2.10", "deny", "3"]
        assert rows["refused|r1|eth1|10.1.0.8|239.1.1.9|"][1:5] == ["10.1.0.8", "239.1.1.9", "any", "limit"]
        assert rows["joined|r2|eth1|239.1.2.3"][1:6] == ["10.2.0.5", "239.1.2.3", "-", "join", "4"]

        # A join refused for the group limit: no rule would lift it, so nothing is asked of the server.
        select(app, "receivers", "refused|r1|eth1|10.1.0.8|239.1.1.9|")
        await pilot.press("a")
        await pilot.pause(0.3)
        assert fleet.call(lambda: set(fleet.backends["r1"].receivers)) == {other}

        select(app, "receivers", ssm_key)
        await pilot.pause()
        assert "10.1.0.7 may not join 232.1.1.1 from 192.0.2.10 on eth1 of r1" in str(
            app.query_one("#detail").render())
        await pilot.press("a")
        wanted = ReceiverRule.make("10.1.0.7/32", "232.1.1.1", "192.0.2.10", "eth1")
        await until(pilot, lambda: fleet.call(lambda: set(fleet.backends["r1"].receivers)) == {other, wanted}
                    and fleet.call(lambda: set(fleet.backends["r2"].receivers)) == {other, wanted},
                    what="that host's rule for that source and group on eth1, on both routers")
        # The router still lists the refused join: it shows as authorized, soon after the receiver.added event.
        await until(pilot, lambda: cells(app, "receivers")[ssm_key][4] == "auth", what="the row authorized")
        assert "now allowed: 10.1.0.7 may join 232.1.1.1 from 192.0.2.10 on eth1" in str(
            app.query_one("#detail").render())
        # When the router forgets it, the row goes at the next read (opening the pane again reads it).
        fleet.call(fleet.backends["r1"].denied_join_entries.remove, ssm)
        await pilot.press("4", "5")
        await until(pilot, lambda: ssm_key not in cells(app, "receivers"), what="the row to go")
        await pilot.press("a")  # on the limit row, where the cursor went: still nothing asked
        await pilot.pause(0.3)
        assert fleet.call(lambda: set(fleet.backends["r1"].receivers)) == {other, wanted}
