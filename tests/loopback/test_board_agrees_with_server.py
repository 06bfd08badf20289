"""The dashboard shows each rule's state on each router exactly as mauthserver decides it.

The server (the real mediator, store, fan-out and API of `LoopbackFleet`)
decides whether a router holds a rule by comparing its terms: max TTL, pps
and bps (mauthserver/core.py, `RouterCore.rule_state`). The board
(mauthclient/board.py) is fed what a dashboard is fed (the snapshot, the
event stream, `GET /traffic`) and must say the same as `mauthctl list
--json`, in particular after a change of rate alone, where a router still
holding the old terms lists the rule with the same max TTL. Its Receivers
pane lists the refused joins and joined groups `mauthctl denied-receivers`
and `mauthctl joined` list, and the rule it asks for to authorize a refused
join is the one the server then holds on every router.
"""

from __future__ import annotations

import json
import os
import time
from ipaddress import ip_address

import pytest
from click.testing import CliRunner

from mauthclient import config as mconfig
from mauthclient.api import ApiClient
from mauthclient.board import Board
from mauthclient.cli import main as mauthctl
from mauthcore.protocol.model import DeniedJoinEntry, JoinedEntry, Reason
from mauthcore.receivers import ReceiverRule
from mauthcore.rules import RuleKey
from tests.support.loopback_fleet import TOKEN, LoopbackFleet

SOURCE, GROUP = "192.0.2.10", "239.1.1.1"
KEY = (SOURCE, GROUP)


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(mconfig, "SYSTEM_FILE", str(tmp_path / "etc-mauthctl.toml"))


def wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_after_a_rate_only_change_a_router_holding_the_old_terms_is_pending_on_the_board_as_in_mauthctl_list(
        tmp_path):
    with LoopbackFleet(tmp_path, routers=("r1", "r2")) as fleet:
        token = tmp_path / "api.token"
        token.write_text(TOKEN)
        os.chmod(token, 0o600)

        def listed() -> dict:
            result = CliRunner().invoke(mauthctl, ["--server", fleet.url, "--token-file", str(token), "list",
                                                   "--json"])
            assert result.exit_code == 0, result.output
            (rule,) = json.loads(result.stdout)
            return rule

        def terms(router: str):
            backend = fleet.backends[router]
            return fleet.call(lambda: backend.rules[RuleKey.make(SOURCE, GROUP)].terms)

        fleet.call(fleet.mediator.add_rule, SOURCE, GROUP, 8, actor="test")
        wait(lambda: listed()["state"] == "applied")
        api = ApiClient(fleet.url, TOKEN, timeout=5)
        board = Board()
        board.load(api.sessions(), api.rules(), api.routers(), api.mode()["mode"])
        board.apply_traffic(api.traffic(), 1.0)
        assert [board.rule_state_on(KEY, n) for n in ("r1", "r2")] == ["applied", "applied"]

        stream = api.events(None, timeout=10)
        assert next(stream)[1] == "hello"
        # r2's reconciler is held back: r2 keeps the old terms, and still answers every read.
        core = fleet.mediator.fleet.routers["r2"]
        fleet.call(setattr, core, "retry_at", time.monotonic() + 3600)
        fleet.call(fleet.mediator.add_rule, SOURCE, GROUP, 8, replace=True, pps=100, actor="test")
        wait(lambda: terms("r1") == (8, 100, 0))
        for ev_id, kind, data in stream:
            board.apply_event(ev_id, kind, data, time.monotonic())
            if kind == "rule.changed":
                break
        assert board.rule_state_on(KEY, "r2") == "pending"  # as the event says
        traffic = api.traffic()
        # r2 lists the rule with the max TTL the rule has now: comparing max TTLs alone says "applied".
        assert [(e["max_ttl"], e["pps"]) for e in traffic["routers"]["r2"]["rules"]] == [(8, 0)]
        board.apply_traffic(traffic, 2.0)

        rule = listed()
        assert terms("r2") == (8, 0, 0)
        assert {n: s["state"] for n, s in rule["routers"].items()} == {"r1": "applied", "r2": "pending"}
        assert rule["state"] == "pending"
        assert {n: board.rule_state_on(KEY, n) for n in ("r1", "r2")} == {"r1": "applied", "r2": "pending"}
        assert board.rule_rows()[0][1][3] == "r1✓ r2…"
        assert "r2: pending" in board.rule_detail(KEY)


def test_the_receivers_pane_shows_the_refused_joins_and_groups_mauthctl_lists_and_authorizes_what_the_server_holds(
        tmp_path):
    with LoopbackFleet(tmp_path, routers=("r1", "r2")) as fleet:
        token = tmp_path / "api.token"
        token.write_text(TOKEN)
        os.chmod(token, 0o600)

        def listed(*command: str):
            result = CliRunner().invoke(mauthctl, ["--server", fleet.url, "--token-file", str(token), *command,
                                                   "--json"])
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        api = ApiClient(fleet.url, TOKEN, timeout=5)
        api.add_receiver({"receiver": "10.1.0.0/24", "group": "239.1.0.0/16", "iface": "eth1"})
        ms = int(time.time() * 1000)
        asm = DeniedJoinEntry("eth1", ip_address("10.1.0.5"), ip_address("239.1.1.1"), None, Reason.JOIN_REFUSED, 2,
                              ms - 9000, 2)  # refused before the rule came: allowed now
        ssm = DeniedJoinEntry("eth1", ip_address("10.2.0.9"), ip_address("232.1.1.1"), ip_address("192.0.2.10"),
                              Reason.JOIN_REFUSED, 5, ms - 1000, 3)
        mld = DeniedJoinEntry("eth1", ip_address("fe80::5"), ip_address("ff0e::db8:1"), None, Reason.JOIN_REFUSED,
                              1, ms - 3000, 2)
        fleet.call(fleet.backends["r1"].denied_join_entries.extend, [asm, ssm])
        fleet.call(fleet.backends["r2"].denied_join_entries.append, mld)
        fleet.call(fleet.backends["r2"].joined_entries.append,
                   JoinedEntry("eth1", ip_address("239.1.2.3"), ip_address("10.1.0.5"), ms - 60000, ms - 5000, 4))

        def board() -> Board:
            b = Board()  # fed as the dashboard feeds it (mauthclient/dashboard.py, read_receivers)
            denied, joined = api.denied_receivers(), api.joined()
            b.load_receivers(api.receivers(), denied["denied"], joined["joined"],
                             {**denied["errors"], **joined["errors"]})
            return b

        def rows(b: Board) -> dict[str, list[str]]:
            return dict(b.receiver_rows(time.time()))

        wait(lambda: listed("receivers")[0]["state"] == "applied")
        b = board()
        # One row per refused join and per joined group that mauthctl lists, newest refusal first.
        refused = listed("denied-receivers")
        assert [(d["router"], d["receiver"], d["group"], d["source"]) for d in sorted(
            refused, key=lambda d: -d["last_seen"])] == [(r[0].split()[0], r[1], r[2], None if r[3] == "any" else r[3])
                                                         for r in list(rows(b).values())[:3]]
        (group,) = listed("joined")
        assert rows(b)[f"joined|r2|eth1|{group['group']}"][1:6] == [group["reporter"], group["group"], "-", "join",
                                                                     str(group["reports"])]
        assert [r[4] for r in rows(b).values()] == ["deny", "deny", "auth", "join"]  # ssm, mld, asm, joined
        assert b.receivers_unread == {}

        # What the board asks for the source-specific join is the rule mauthctl then lists as held by every
        # router: that host, that source and group, on that interface; the board then shows it authorized.
        ssm_key = "refused|r1|eth1|10.2.0.9|232.1.1.1|192.0.2.10"
        created = api.add_receiver(b.authorize_join(ssm_key))
        assert created["result"] == "added"
        wait(lambda: len(listed("receivers")) == 2 and all(r["state"] == "applied" for r in listed("receivers")))
        held = [{k: r.get(k) for k in ("receiver", "group", "source", "iface")} for r in listed("receivers")]
        assert {"receiver": "10.2.0.9", "group": "232.1.1.1", "source": "192.0.2.10", "iface": "eth1"} in held
        assert fleet.call(lambda: ReceiverRule.make("10.2.0.9", "232.1.1.1", "192.0.2.10", "eth1")
                          in fleet.backends["r2"].receivers)
        b = board()
        assert [r[4] for r in rows(b).values()] == ["auth", "deny", "auth", "join"]
        assert "now allowed: 10.2.0.9 may join 232.1.1.1 from 192.0.2.10 on eth1 (r1 applied, r2 applied)" in (
            b.receiver_detail(ssm_key, time.time()))
