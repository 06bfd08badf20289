"""mauthctl's receiver commands toward mauthserver, without a socket.

`ApiClient._json` is replaced by a recorder that answers as the API does, so
these tests see exactly what mauthctl sends (the rule's JSON, the policy) and
how it shows the answers. The same commands toward a router, over v2 on
127.0.0.1, are in tests/loopback/test_mauthctl_receivers.py.
"""

from __future__ import annotations

import json

from mauthclient import api as mapi
from mauthclient.cli import _event_summary

# The autouse no_user_config fixture, the fake mauthserver `api` and the helpers of every mauthctl test.
from tests.support.mauthctl import fake_api, no_user_config, one_error, run, secret  # noqa: F401

RULE = {"receiver": "10.1.0.0/24", "group": "239.1.0.0/16"}
SSM = {"receiver": "10.1.0.7", "group": "232.1.1.1", "source": "192.0.2.10", "iface": "eth1"}



def test_add_and_del_receiver_send_the_rule_in_canonical_form(api):
    fake, calls, opts = api
    fake.answer = {"result": "added", "receiver": {**SSM, "routers": {"r1": {"state": "pending"}}}}
    r = run(*opts, "add-receiver", "10.1.0.7", "232.1.1.1", "--source", "192.0.2.10", "--iface", "eth1")
    assert r.exit_code == 0, r.output
    assert calls == [("POST", "/receivers", SSM)]
    assert r.stdout.strip() == ("added: 10.1.0.7 may join 232.1.1.1 from 192.0.2.10 on eth1 (committed; routers:"
                                " r1:pending)")
    fake.answer = {"result": "removed", "receiver": RULE}
    r = run(*opts, "del-receiver", "10.1.0.0/24", "239.1.0.0/16", "--json")
    assert r.exit_code == 0 and calls[-1] == ("POST", "/receivers/delete", RULE)
    assert json.loads(r.stdout) == {"result": "removed", "receiver": RULE}


def test_bad_receiver_rules_send_nothing(api):
    _, calls, opts = api
    one_error(run(*opts, "add-receiver", "239.1.1.1", "239.1.0.0/16"), 2, "overlaps the multicast range")
    one_error(run(*opts, "add-receiver", "10.1.0.1", "239.1.0.0/16", "--source", "224.0.0.1"), 2,
              "cannot be the address of a sender")
    one_error(run(*opts, "add-receiver", "10.1.0.1", "ff3e::1"), 2, "different address families")
    one_error(run(*opts, "del-receiver", "10.1.0.1", "239.1.1.1", "--iface", "eth 1"), 2, "interface name")
    one_error(run(*opts, "receiver-policy", "eth1", "shut"), 2, "is not open, closed or monitor")
    one_error(run(*opts, "receiver-policy", "eth1"), 2, "give the interface and its mode")
    assert calls == []


def test_refusals_of_mauthserver_are_one_line_with_their_exit_status(api):
    fake, _, opts = api
    fake.error = mapi.ApiError(409, "exists", "the receiver rule 10.1.0.0/24 may join 239.1.0.0/16 already exists")
    one_error(run(*opts, "add-receiver", "10.1.0.0/24", "239.1.0.0/16"), 1, "already exists")
    fake.error = mapi.ApiError(404, "not_found", "there is no receiver rule 10.1.0.0/24 may join 239.1.0.0/16")
    one_error(run(*opts, "del-receiver", "10.1.0.0/24", "239.1.0.0/16"), 1, "there is no receiver rule")


def test_receivers_show_each_routers_state_and_what_it_refused(api):
    fake, calls, opts = api
    fake.answer = {"receivers": [
        {**RULE, "state": "applied", "routers": {"r1": {"state": "applied", "matched": 3, "last_seen": None},
                                                 "r2": {"state": "applied", "matched": 4, "last_seen": None}}},
        {**SSM, "state": "refused", "routers": {"r1": {"state": "applied", "matched": 0, "last_seen": None},
                                                "r2": {"state": "refused", "error": "INVALID_ARGUMENT: no eth1"}}}]}
    r = run(*opts, "receivers")
    assert r.exit_code == 0 and calls == [("GET", "/receivers", None)]
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["RECEIVER", "GROUP", "SOURCE", "IFACE", "STATE", "ROUTERS", "MATCHED"]
    assert lines[1].split() == ["10.1.0.0/24", "239.1.0.0/16", "-", "-", "applied", "r1:applied", "r2:applied", "7"]
    assert lines[2].split()[:5] == ["10.1.0.7", "232.1.1.1", "192.0.2.10", "eth1", "refused"]
    assert r.stderr.strip() == "mauthctl: router r2 refused 10.1.0.7 232.1.1.1: INVALID_ARGUMENT: no eth1"
    assert json.loads(run(*opts, "receivers", "--json").stdout) == fake.answer["receivers"]


def test_joined_and_denied_receivers_name_their_router_and_an_unread_router_exits_3(api):
    fake, calls, opts = api
    joined = {"router": "r1", "iface": "eth1", "group": "239.1.2.3", "reporter": "10.1.0.5", "first_seen": None,
              "last_seen": None, "reports": 4, "left": True}
    fake.answer = {"joined": [joined], "errors": {}}
    r = run(*opts, "joined")
    assert r.exit_code == 0 and calls[-1] == ("GET", "/receivers/joined", None)
    assert r.stdout.splitlines()[1].split() == ["r1", "eth1", "239.1.2.3", "10.1.0.5", "4", "-", "-", "yes"]
    denied = {"router": "r2", "iface": "eth1", "receiver": "10.1.0.99", "group": "239.5.5.5", "source": None,
              "reason": "join_refused", "records": 3, "last_seen": None, "version": 3}
    fake.answer = {"denied": [denied], "errors": {"r3": "router r3 is down"}}
    r = run(*opts, "denied-receivers")
    assert r.exit_code == 3 and calls[-1] == ("GET", "/receivers/denied", None)
    assert r.stdout.splitlines()[1].split() == ["r2", "eth1", "10.1.0.99", "239.5.5.5", "-", "join_refused", "3",
                                                "-", "3"]
    assert r.stderr.strip() == "mauthctl: router r3 could not be read: router r3 is down"
    r = run(*opts, "denied-receivers", "--json")
    assert json.loads(r.stdout) == [denied] and r.exit_code == 3


def test_receiver_policy_sets_on_every_router_or_one_and_lists(api):
    fake, calls, opts = api
    fake.answer = {"result": "set", "policy": {"router": None, "iface": "eth1", "mode": "closed", "limit": 20}}
    r = run(*opts, "receiver-policy", "eth1", "closed", "--limit", "20")
    assert r.exit_code == 0 and calls[-1] == ("POST", "/receivers/policy", {"iface": "eth1", "mode": "closed",
                                                                             "limit": 20})
    assert r.stdout.strip() == "set: eth1 closed limit 20 on every router (committed; routers follow)"
    run(*opts, "receiver-policy", "eth2", "MONITOR", "--router", "r1")
    assert calls[-1] == ("POST", "/receivers/policy", {"iface": "eth2", "mode": "monitor", "limit": 0,
                                                        "router": "r1"})
    counters = {"reports": 9, "kept": 5, "refused": 3, "limited": 1, "leaves": 0, "rewritten": 2, "dropped": 2,
                "malformed": 0}
    fake.answer = {"policies": [{"router": "r1", "iface": "eth1", "mode": "closed", "limit": 20, "groups": 2,
                                 "counters": counters}], "desired": [], "errors": {}}
    r = run(*opts, "receiver-policy")
    assert r.exit_code == 0 and calls[-1] == ("GET", "/receivers/policy", None)
    assert r.stdout.splitlines()[1].split() == ["r1", "eth1", "closed", "20", "2", "9", "5", "3", "1", "0"]


def test_receiver_events_read_as_one_line():
    assert _event_summary("receiver.added", {"receiver": SSM, "actor": "alice"}) == (
        "10.1.0.7 may join 232.1.1.1 source 192.0.2.10 iface eth1 by alice")
    assert _event_summary("receiver.policy", {"policy": {"router": None, "iface": "eth1", "mode": "monitor",
                                                         "limit": 0}, "actor": "bob"}) == (
        "eth1 monitor limit - on every router by bob")
    assert _event_summary("receiver.denied", {"router": "r1", "receiver": "10.1.0.99", "iface": "eth1",
                                              "group": "232.1.1.1", "source": "192.0.2.10", "reason": "join_refused",
                                              "new_records": 2, "records": 5}) == (
        "r1: 10.1.0.99 on eth1 -> 232.1.1.1 from 192.0.2.10 join_refused (+2, 5 in all)")
