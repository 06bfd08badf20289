"""mauthctl's receiver commands straight to a router (`--router`, protocol v2 on 127.0.0.1: the real server
core on a MemoryBackend guarding eth1), and through mauthserver to two routers (tests/support/loopback_fleet.py)."""

from __future__ import annotations

import ipaddress
import json

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.model import DeniedJoinEntry, JoinedEntry, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.receivers import IfacePolicy, ReceiverRule
from tests.support.loopback_fleet import KEYS, TOKEN, LoopbackFleet
from tests.support.mauthctl import no_user_config, one_error, run, secret, served  # noqa: F401
from tests.support.waiting import wait_until

ip = ipaddress.ip_address
SSM = ReceiverRule.make("10.1.0.7", "232.1.1.1", "192.0.2.10", "eth1")


def test_receiver_commands_straight_to_a_router(tmp_path):
    backend = MemoryBackend(ifaces=("eth1",))
    backend.denied_join_entries.append(DeniedJoinEntry("eth1", ip("10.1.0.99"), ip("239.5.5.5"), ip("192.0.2.7"),
                                                       Reason.JOIN_LIMIT, 2, 1_700_000_000_000, 3))
    backend.joined_entries.append(JoinedEntry("eth1", ip("239.1.2.3"), ip("10.1.0.5"), 1_700_000_000_000,
                                              1_700_000_001_000, 4))
    with served(ServerCore(backend, KEYS, epoch=7, state_id=70), "127.0.0.1", tmp_path) as opts:
        r = run(*opts, "add-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1")
        assert r.exit_code == 0 and r.stdout.strip() == "added: 10.1.0.7 may join 232.1.1.1 from 192.0.2.10 on eth1"
        assert set(backend.receivers) == {SSM}
        one_error(run(*opts, "add-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1"),
                  1, "held already")
        one_error(run(*opts, "add-receiver", "10.1.0.0/24", "239.1.0.0/16", "--iface", "eth9"), 1,
                  "not one this router guards")
        backend.receivers[SSM] = (5, 0)
        listed = json.loads(run(*opts, "receivers", "--json").stdout)
        assert listed == [{**SSM.as_json(), "matched": 5, "last_seen": None}]
        r = run(*opts, "receivers")
        assert r.stdout.splitlines()[1].split() == ["10.1.0.7", "232.1.1.1", "192.0.2.10", "eth1", "5", "never"]

        r = run(*opts, "receiver-policy", "eth1", "closed", "--limit", "20")
        assert r.exit_code == 0 and r.stdout.strip() == "set: eth1 closed limit 20"
        assert backend.policies["eth1"] == IfacePolicy.make("eth1", "closed", 20)
        one_error(run(*opts, "receiver-policy", "eth9", "closed"), 1, "not one this router guards")
        one_error(run(*opts, "receiver-policy", "eth1", "open", "--router", "r1"), 2, "names a router of mauthserver")
        (policy,) = json.loads(run(*opts, "receiver-policy", "--json").stdout)
        assert (policy["iface"], policy["mode"], policy["limit"], policy["groups"]) == ("eth1", "closed", 20, 0)

        (joined,) = json.loads(run(*opts, "joined", "--json").stdout)
        assert (joined["group"], joined["reporter"], joined["reports"], joined["left"]) == (
            "239.1.2.3", "10.1.0.5", 4, False)
        r = run(*opts, "denied-receivers")
        assert r.exit_code == 0
        assert r.stdout.splitlines()[1].split()[:6] == ["eth1", "10.1.0.99", "239.5.5.5", "192.0.2.7", "join_limit",
                                                        "2"]
        r = run(*opts, "del-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1")
        assert r.exit_code == 0 and backend.receivers == {}
        one_error(run(*opts, "del-receiver", "10.1.0.7", "232.1.1.1"), 1, "no receiver rule")


def test_receiver_commands_through_mauthserver(tmp_path):
    fleet = LoopbackFleet(tmp_path, routers=("r1", "r2"))
    fleet.backends["r2"] = MemoryBackend(ifaces=("eth2",))
    with fleet:
        opts = ["--server", fleet.url, "--token-file", secret(tmp_path / "api.token", TOKEN)]
        r = run(*opts, "add-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1")
        assert r.exit_code == 0, r.output
        wait_until(lambda: fleet.call(lambda: set(fleet.backends["r1"].receivers)) == {SSM}, 10, "r1 to hold it")

        def states():
            (rule,) = json.loads(run(*opts, "receivers", "--json").stdout)
            return {name: st["state"] for name, st in rule["routers"].items()}

        wait_until(lambda: states() == {"r1": "applied", "r2": "refused"}, 10, "r2 to refuse eth1")
        r = run(*opts, "receivers")
        assert "mauthctl: router r2 refused 10.1.0.7 232.1.1.1: INVALID_ARGUMENT" in r.stderr
        one_error(run(*opts, "add-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1"),
                  1, "already exists")
        r = run(*opts, "receiver-policy", "eth2", "monitor", "--limit", "3")
        assert r.exit_code == 0 and r.stdout.strip() == ("set: eth2 monitor limit 3 on every router (committed;"
                                                         " routers follow)")
        wait_until(lambda: fleet.call(lambda: fleet.backends["r2"].policies["eth2"])
                   == IfacePolicy.make("eth2", "monitor", 3), 10, "r2's eth2 to be monitored")
        rows = {(p["router"], p["iface"], p["mode"]) for p in json.loads(run(*opts, "receiver-policy",
                                                                              "--json").stdout)}
        assert rows == {("r1", "eth1", "open"), ("r2", "eth2", "monitor")}
        r = run(*opts, "del-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1")
        assert r.exit_code == 0
        wait_until(lambda: fleet.call(lambda: set(fleet.backends["r1"].receivers)) == set(), 10, "r1 to drop it")
