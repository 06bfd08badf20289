"""The dashboard shows each rule's state on each router exactly as mauthserver decides it.

The server (the real mediator, store, fan-out and API of `LoopbackFleet`)
decides whether a router holds a rule by comparing its terms: max TTL, pps
and bps (mauthserver/core.py, `RouterCore.rule_state`). The board
(mauthclient/board.py) is fed what a dashboard is fed (the snapshot, the
event stream, `GET /traffic`) and must say the same as `mauthctl list
--json`, in particular after a change of rate alone, where a router still
holding the old terms lists the rule with the same max TTL.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from mauthclient import config as mconfig
from mauthclient.api import ApiClient
from mauthclient.board import Board
from mauthclient.cli import main as mauthctl
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
