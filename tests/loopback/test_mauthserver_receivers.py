"""Receiver rules and interface policies through mauthserver on 127.0.0.1: the HTTP API, the store, the audit,
the events, and the fan-out over real UDP to two routers (the v2 server core on MemoryBackends,
tests/support/loopback_fleet.py), r2 lacking the interface one rule names."""

from __future__ import annotations

import ipaddress

import pytest

from mauthclient.api import ApiClient, ApiError
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.model import DeniedJoinEntry, JoinedEntry, Reason
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthserver.store import Store
from tests.support.loopback_fleet import TOKEN, LoopbackFleet
from tests.support.waiting import wait_until

ip = ipaddress.ip_address
ALL = {"receiver": "10.1.0.0/24", "group": "239.1.0.0/16"}
ON_ETH2 = {"receiver": "10.1.0.7", "group": "232.1.1.1", "source": "192.0.2.10", "iface": "eth2"}


def _held(fleet: LoopbackFleet, router: str) -> set[ReceiverRule]:
    return fleet.call(lambda: set(fleet.backends[router].receivers))


def test_receiver_rules_fan_out_are_refused_where_an_interface_is_missing_and_are_reconciled(tmp_path):
    fleet = LoopbackFleet(tmp_path, routers=("r1", "r2"), denied_interval=0.2)
    fleet.backends["r1"] = MemoryBackend(ifaces=("eth1", "eth2"))
    fleet.backends["r2"] = MemoryBackend(ifaces=("eth1",))
    stray = ReceiverRule.make("10.9.0.0/16", "239.9.0.0/16")
    fleet.backends["r2"].receivers[stray] = (0, 0)  # added behind the mediator's back: removed
    with fleet:
        api = ApiClient(fleet.url, TOKEN, timeout=5)
        events = api.events(timeout=10)
        assert next(events)[1] == "hello"
        added = api.add_receiver(ALL)
        assert added["result"] == "added" and added["receiver"]["receiver"] == "10.1.0.0/24"
        data = next(d for _, kind, d in events if kind == "receiver.added")
        assert data["receiver"] == {k: added["receiver"][k] for k in ("receiver", "group", "created", "actor")}
        assert data["actor"].startswith("api (api 127.0.0.1)") and set(data["routers"]) == {"r1", "r2"}
        api.add_receiver(ON_ETH2)
        rule_all, rule_eth2 = ReceiverRule.from_json(ALL), ReceiverRule.from_json(ON_ETH2)
        wait_until(lambda: _held(fleet, "r1") == {rule_all, rule_eth2}, 10, "r1 to hold both rules")
        wait_until(lambda: _held(fleet, "r2") == {rule_all}, 10, "r2 to hold the rule without interface")

        def states():
            return {r["iface"] if "iface" in r else "-": {n: s["state"] for n, s in r["routers"].items()}
                    for r in api.receivers()}

        wait_until(lambda: states() == {"-": {"r1": "applied", "r2": "applied"},
                                        "eth2": {"r1": "applied", "r2": "refused"}}, 10, "the states")
        (_, refused) = api.receivers()
        assert refused["state"] == "refused" and "eth2" in refused["routers"]["r2"]["error"]

        # 409 when it exists, 400 for bad input (one sentence), 404 for a rule that is not there.
        with pytest.raises(ApiError) as info:
            api.add_receiver(ALL)
        assert info.value.status == 409
        for bad in ({"receiver": "239.1.1.1", "group": "239.1.0.0/16"}, {"receiver": "10.1.0.1"},
                    {**ALL, "ttl": 3}, {**ALL, "iface": 7}):
            with pytest.raises(ApiError) as info:
                api.add_receiver(bad)
            assert info.value.status == 400 and "\n" not in info.value.message
        with pytest.raises(ApiError) as info:
            api.remove_receiver({"receiver": "10.1.0.0/24", "group": "239.2.0.0/16"})
        assert info.value.status == 404

        # Policies: every router that has eth1; then r1's own, which r2 never gets; a router's own row for an
        # interface it lacks is refused there.
        assert api.set_receiver_policy("eth1", "closed", 20)["result"] == "set"
        assert api.set_receiver_policy("eth1", "closed", 20)["result"] == "unchanged"
        api.set_receiver_policy("eth2", "monitor", router="r1")
        with pytest.raises(ApiError) as info:
            api.set_receiver_policy("eth1", "shut")
        assert info.value.status == 400
        with pytest.raises(ApiError) as info:
            api.set_receiver_policy("eth1", "open", router="r9")
        assert info.value.status == 404
        policy = fleet.backends["r2"].policies
        wait_until(lambda: fleet.call(lambda: dict(policy)) == {"eth1": IfacePolicy.make("eth1", "closed", 20)},
                   10, "r2's eth1 to close")
        wait_until(lambda: fleet.call(lambda: fleet.backends["r1"].policies["eth2"])
                   == IfacePolicy.make("eth2", "monitor"), 10, "r1's eth2 to be monitored")
        listed = api.receiver_policies()
        assert {(p["router"], p["iface"], p["mode"], p["limit"]) for p in listed["policies"]} == {
            ("r1", "eth1", "closed", 20), ("r1", "eth2", "monitor", 0), ("r2", "eth1", "closed", 20)}
        assert listed["errors"] == {} and len(listed["desired"]) == 2

        # Refused joins and joined groups, read on each router's session; refused joins are events too.
        denied = DeniedJoinEntry("eth1", ip("10.1.0.99"), ip("239.5.5.5"), None, Reason.JOIN_REFUSED, 3,
                                 1_700_000_000_000, 3)
        fleet.call(fleet.backends["r2"].denied_join_entries.append, denied)
        joined = JoinedEntry("eth1", ip("239.1.2.3"), ip("10.1.0.5"), 1_700_000_000_000, 1_700_000_001_000, 4)
        fleet.call(fleet.backends["r1"].joined_entries.append, joined)
        kinds: list[str] = []
        for _, kind, seen in events:
            kinds.append(kind)
            if kind == "receiver.denied":
                data = seen
                break
        assert {k: data[k] for k in ("router", "iface", "receiver", "group", "source", "reason", "records",
                                     "new_records", "first", "version")} == {
            "router": "r2", "iface": "eth1", "receiver": "10.1.0.99", "group": "239.5.5.5", "source": None,
            "reason": "join_refused", "records": 3, "new_records": 3, "first": True, "version": 3}
        assert "receiver.policy" in kinds
        assert api.denied_receivers() == {"denied": [{"router": "r2", **denied.as_json()}], "errors": {}}
        assert api.joined() == {"joined": [{"router": "r1", **joined.as_json()}], "errors": {}}

        # Rules removed behind the mediator's back come back at the next verification; removing a rule takes
        # it off every router.
        fleet.call(fleet.backends["r1"].receivers.clear)
        wait_until(lambda: _held(fleet, "r1") == {rule_all, rule_eth2}, 10, "r1 to get its rules back")
        assert api.remove_receiver(ALL)["result"] == "removed"
        wait_until(lambda: _held(fleet, "r1") == {rule_eth2} and _held(fleet, "r2") == set(), 10, "removal")
        actions = [e["action"] for e in api.audit(actions=["receiver-added", "receiver-removed",
                                                           "receiver-policy"])]
        assert actions == ["receiver-removed", "receiver-policy", "receiver-policy", "receiver-added",
                           "receiver-added"]
    store = Store.open(tmp_path / "mauthserver.db", now=0)  # committed: a restarted mediator has them
    try:
        assert [d.rule for d in store.receivers()] == [rule_eth2]
        assert {(p.router, p.policy) for p in store.receiver_policies()} == {
            ("", IfacePolicy.make("eth1", "closed", 20)), ("r1", IfacePolicy.make("eth2", "monitor"))}
    finally:
        store.close()
