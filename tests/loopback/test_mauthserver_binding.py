"""Bound rules through mauthserver on 127.0.0.1: the HTTP API, the fan-out over real UDP to two routers
(ServerCore on MemoryBackends, tests/support/loopback_fleet.py), reconciliation and re-arming."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mauthclient.api import ApiClient, ApiError
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.errors import BackendInvalid, BackendUnsupported
from mauthcore.rules import Binding, Rule, RuleKey
from mauthserver.api import make_app
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from tests.support.loopback_fleet import TOKEN, LoopbackFleet
from tests.support.waiting import wait_until

KEY = RuleKey.make("192.0.2.10", "239.1.1.1")
PINNED = ("eth1", bytes.fromhex("02005e10aaaa"))


def test_two_routers_hold_a_rule_bound_to_r1_each_as_resolved_and_drift_is_replaced(tmp_path):
    """"r1=eth1": r1 holds iface eth1 with learning, r2 the reverse-path check only; a router found holding
    another binding (at the periodic LIST) gets REPLACE; a re-arm reaches r1 alone."""
    with LoopbackFleet(tmp_path, routers=("r1", "r2")) as fleet:
        api = ApiClient(fleet.url, TOKEN, timeout=5)
        binding = {"iface": "r1=eth1", "rpf": True, "learn": True}
        added = api._json("POST", "/rules", {"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8,
                                             "binding": binding})
        assert added["result"] == "added" and added["rule"]["binding"] == binding
        desired = Rule.make("192.0.2.10", "239.1.1.1", 8, binding=Binding.from_json(binding))

        def binding_on(router):
            backend = fleet.backends[router]
            return fleet.call(lambda: backend.rules[KEY].binding if KEY in backend.rules else None)

        wait_until(lambda: binding_on("r1") == Binding("eth1", rpf=True, learn=True), 10, "r1 to hold eth1")
        wait_until(lambda: binding_on("r2") == Binding(rpf=True), 10, "r2 to hold rpf alone")
        wait_until(lambda: api.rules()[0]["state"] == "applied", 10, "the rule to be applied on both")
        (shown,) = api.rules()
        assert shown["binding"] == binding and {n: s["state"] for n, s in shown["routers"].items()} == {
            "r1": "applied", "r2": "applied"}

        # Someone rebinds r2's rule behind mauthserver's back (same rule count): the next LIST finds it.
        wrong = Rule.make("192.0.2.10", "239.1.1.1", 8, binding=Binding.make("eth1", rpf=True, learn=True))
        fleet.call(fleet.backends["r2"].rules.__setitem__, KEY, wrong)
        wait_until(lambda: binding_on("r2") == Binding(rpf=True), 10, "r2's binding to be corrected")
        replaced = fleet.call(lambda: [a for op, a in fleet.backends["r2"].log if op == "replace"])
        assert replaced[-1] == desired.on("r2") and len(replaced) >= 2

        # What r1 learnt shows in its listing; a re-arm goes to r1 (which learns) and not to r2.
        fleet.call(fleet.backends["r1"].learned.__setitem__, KEY, (PINNED, 5))
        (entry,) = api.traffic()["routers"]["r1"]["rules"]
        assert entry["learned"] == {"iface": "eth1", "mac": "02:00:5e:10:aa:aa"} and entry["moved"] == 5
        out = api._json("POST", "/rules/rearm", {"source": "192.0.2.10", "group": "239.1.1.1"})
        assert out["result"] == "rearming" and out["routers"] == ["r1"]
        wait_until(lambda: fleet.call(lambda: KEY not in fleet.backends["r1"].learned), 10, "r1 to forget")
        assert fleet.call(lambda: [op for op, _ in fleet.backends["r2"].log].count("rearm")) == 0
        (audited,) = api.audit(actions=["rule-rearmed"])
        assert audited["detail"] == {"source": "192.0.2.10", "group": "239.1.1.1", "routers": ["r1"]}

        # A rule that does not learn has nothing to forget: 400, and nothing is sent or audited.
        api.add_rule("192.0.2.10", "239.1.1.2", 8)
        with pytest.raises(ApiError) as info:
            api._json("POST", "/rules/rearm", {"source": "192.0.2.10", "group": "239.1.1.2"})
        assert info.value.status == 400 and "does not learn" in str(info.value)
        with pytest.raises(ApiError) as info:
            api._json("POST", "/rules/rearm", {"source": "192.0.2.99", "group": "239.1.1.2"})
        assert info.value.status == 404
        assert len(api.audit(actions=["rule-rearmed"])) == 1


class BindlessBackend(MemoryBackend):
    """A router that cannot bind (musersd on NFQUEUE: UNSUPPORTED), or lacks the interface (INVALID_ARGUMENT)."""

    def __init__(self, error: type[Exception]) -> None:
        super().__init__()
        self.error = error

    def replace(self, rule: Rule) -> bool:
        if rule.binding.iface or (rule.bound and self.error is BackendUnsupported):
            raise self.error(f"this router cannot bind the rule for {rule.key}")
        return super().replace(rule)


@pytest.mark.parametrize("error, code", [(BackendUnsupported, "UNSUPPORTED"), (BackendInvalid, "INVALID_ARGUMENT")])
def test_a_router_refusing_a_bound_rule_is_reported_not_fatal(tmp_path, error, code):
    fleet = LoopbackFleet(tmp_path, routers=("r1", "r2"))
    fleet.backends["r2"] = BindlessBackend(error)
    with fleet:
        api = ApiClient(fleet.url, TOKEN, timeout=5)
        api._json("POST", "/rules", {"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8,
                                     "binding": {"iface": "eth1"}})
        wait_until(lambda: api.rules()[0]["state"] == "refused", 10, "r2's refusal to show")
        states = api.rules()[0]["routers"]
        assert states["r1"]["state"] == "applied"
        assert states["r2"]["state"] == "refused" and states["r2"]["error"].startswith(code)
        assert {r["name"]: r["refused"] for r in api.routers()} == {"r1": 0, "r2": 1}
        # The mediator carries on: an unbound rule still reaches both routers.
        api.add_rule("192.0.2.10", "239.1.1.2", 8)
        wait_until(lambda: fleet.held("r2") == {("192.0.2.10", "239.1.1.2"): 8}, 10, "r2 to take the unbound rule")


@pytest.mark.parametrize("binding, message", [
    ({"iface": "eth1/2"}, "is not a Linux interface name"),
    ({"iface": "eth1", "vlan": 3}, "a binding has no field 'vlan'"),
    ({"mac": "01:00:5e:00:00:01"}, "is a multicast address"),
    ("eth1", "a binding is a JSON object"),
    ({"learn": "yes"}, "learn is true or false"),
])
def test_a_bad_binding_is_a_400_and_nothing_is_stored(tmp_path, binding, message):
    store = Store.open(tmp_path / "m.db", now=1.0)
    mediator = Mediator(store, Directory(), EventBus(), [])

    async def main():
        app = make_app(mediator, TOKEN, lambda: None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            r = await client.post("/api/v1/rules", headers={"Authorization": f"Bearer {TOKEN}"},
                                  json={"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8,
                                        "binding": binding})
            assert r.status == 400
            body = await r.json()
            assert body["code"] == "invalid" and message in body["error"] and "\n" not in body["error"]

    try:
        asyncio.run(main())
        assert mediator.fleet.desired == {} and store.rules() == []
        assert [e["action"] for e in store.audit_log()] == ["create-db"]
    finally:
        store.close()
