"""mauthctl add-sender with --iface, --rpf, --mac and --learn, rearm, and listings of bound rules, direct to a router.

Direct mode speaks protocol v2 to the real server core on a memory backend
(which keeps what a learning rule pinned in `MemoryBackend.learned`). What
mauthctl sends to mauthserver for the same commands (the rule's "binding",
POST /rules/rearm) is in tests/unit/test_mauthctl_binding.py; the kernel side
of bindings in tests/integration.
"""

from __future__ import annotations

import json

from mauthcore.rules import Binding, Rule, RuleKey

# Fixtures (router, and the autouse no_user_config) and helpers of the mauthctl tests, used by name.
from tests.loopback.test_mauthctl_cli import router  # noqa: F401
from tests.support.mauthctl import no_user_config, one_error, run  # noqa: F401

SRC, GRP = "192.0.2.10", "239.1.1.1"
KEY = RuleKey.make(SRC, GRP)
MAC = "02:00:5e:10:00:01"


def test_add_sender_sends_each_binding_flag(router):  # noqa: F811
    backend, opts = router
    r = run(*opts, "add-sender", SRC, GRP, "--max-ttl", "16", "--iface", "eth1")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"added: {SRC} -> {GRP} max-ttl 16 iface=eth1"
    assert backend.rules[KEY].binding == Binding("eth1")
    for flags, binding in ((["--rpf"], Binding(rpf=True)),
                           (["--mac", MAC.upper()], Binding(mac=bytes.fromhex("02005e100001"))),
                           (["--learn"], Binding(learn=True)),
                           (["--iface", "eth1", "--rpf", "--mac", MAC, "--learn"],
                            Binding("eth1", True, bytes.fromhex("02005e100001"), True))):
        r = run(*opts, "add-sender", SRC, GRP, "--max-ttl", "16", *flags, "--replace", "--json")
        assert r.exit_code == 0, (flags, r.output)
        assert json.loads(r.stdout) == {"result": "replaced", "source": SRC, "group": GRP, "max_ttl": 16,
                                        "binding": binding.as_json()}
        assert backend.rules[KEY] == Rule(KEY, 16, binding=binding)
    # A prefix rule takes an interface and the reverse path.
    r = run(*opts, "add-sender", "192.0.2.0/24", GRP, "--max-ttl", "8", "--iface", "eth2", "--rpf")
    assert r.exit_code == 0 and r.stdout.strip() == f"added: 192.0.2.0/24 -> {GRP} max-ttl 8 iface=eth2 rpf"
    # No flag: the rule is unbound, and says nothing about a binding.
    r = run(*opts, "add-sender", "192.0.2.11", GRP, "--max-ttl", "4", "--json")
    assert "binding" not in json.loads(r.stdout)
    assert not backend.rules[RuleKey.make("192.0.2.11", GRP)].bound


def test_bad_bindings_are_one_sentence_and_send_nothing(router):  # noqa: F811
    backend, opts = router
    executed = backend.executions
    add = ["add-sender", SRC, GRP, "--max-ttl", "16"]
    one_error(run(*opts, *add, "--mac", "02:00:5e:10:00"), 2, "is not six hexadecimal bytes")
    one_error(run(*opts, *add, "--mac", "01:00:5e:10:00:01"), 2, "is a multicast address")
    one_error(run(*opts, *add, "--iface", "eth1/2"), 2, "is not a Linux interface name")
    one_error(run(*opts, *add, "--iface", "averyveryverylongname"), 2, "longer than 15 bytes")
    one_error(run(*opts, *add, "--iface", " "), 2, "--iface needs an interface name")
    one_error(run(*opts, "add-sender", "192.0.2.0/24", GRP, "--max-ttl", "8", "--mac", MAC), 2,
              "cannot be bound to a MAC address")
    one_error(run(*opts, "add-sender", SRC, "239.192.0.0/14", "--max-ttl", "8", "--learn"), 2,
              "cannot be bound to a learned MAC address")
    # One name per router is for mauthserver; a router is given its own name.
    one_error(run(*opts, *add, "--iface", "r1=eth1,r2=ens4"), 2, "names an interface per router")
    one_error(run(*opts, *add, "--iface", "r1=eth1,r1=ens4"), 2, "router r1 is given two interfaces")
    # v1 could not carry the binding: refused rather than added unbound.
    one_error(run(*opts, "--v1", *add, "--iface", "eth1"), 2, "v1 carries no binding")
    assert backend.executions == executed and backend.rules == {}


def test_rearm_a_learning_rule(router):  # noqa: F811
    backend, opts = router
    assert run(*opts, "add-sender", SRC, GRP, "--max-ttl", "16", "--iface", "eth1", "--learn").exit_code == 0
    backend.learned[KEY] = (("eth1", bytes.fromhex("02005e100001")), 3)
    r = run(*opts, "rearm", SRC, GRP)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"rearmed: {KEY}; its next packet pins the interface and MAC again"
    assert backend.log[-1] == ("rearm", KEY) and KEY not in backend.learned
    assert json.loads(run(*opts, "rearm", SRC, GRP, "--json").stdout) == {"result": "rearmed", "source": SRC,
                                                                         "group": GRP}
    one_error(run(*opts, "rearm", "192.0.2.99", GRP), 1, f"has no rule for {RuleKey.make('192.0.2.99', GRP)}")
    assert run(*opts, "add-sender", "192.0.2.11", GRP, "--max-ttl", "4", "--iface", "eth1").exit_code == 0
    one_error(run(*opts, "rearm", "192.0.2.11", GRP), 1, "does not learn its sender")
    executed = backend.executions
    one_error(run(*opts, "rearm", SRC, "10.0.0.1"), 2, "not a multicast")
    one_error(run(*opts, "--v1", "rearm", SRC, GRP), 2, "v1 has no rearm command")
    assert backend.executions == executed


def test_listing_shows_bindings_and_what_was_learned(router):  # noqa: F811
    backend, opts = router
    backend.rules[KEY] = Rule.make(SRC, GRP, 16)
    table = run(*opts, "list").stdout.splitlines()
    assert "BINDING" not in table[0] and "LEARNED" not in table[0]  # no rule is bound: no empty columns
    backend.rules[KEY] = Rule.make(SRC, GRP, 16, binding=Binding.make("eth1", rpf=True))
    table = run(*opts, "list").stdout.splitlines()
    assert table[0].split()[-1] == "BINDING" and table[1].rstrip().endswith("iface=eth1 rpf")
    learner = Rule.make("192.0.2.11", GRP, 8, binding=Binding.make("eth1", learn=True))
    backend.rules[learner.key] = learner
    table = run(*opts, "list").stdout.splitlines()
    assert table[0].split()[-2:] == ["BINDING", "LEARNED"]
    rows = {line.split()[0]: " ".join(line.split()) for line in table[1:]}
    assert rows[SRC].endswith("iface=eth1 rpf -") and rows["192.0.2.11"].endswith("iface=eth1 learn nothing yet")
    backend.learned[learner.key] = (("eth1", bytes.fromhex("02005e100001")), 7)
    rows = {line.split()[0]: " ".join(line.split()) for line in run(*opts, "list").stdout.splitlines()[1:]}
    assert rows["192.0.2.11"].endswith(f"iface=eth1 learn eth1 {MAC}, moved 7")
    data = {e["source"]: e for e in json.loads(run(*opts, "list", "--json").stdout)}
    assert data[SRC]["binding"] == {"iface": "eth1", "rpf": True}
    assert (data[SRC]["moved"], data[SRC]["learned"]) == (0, None)
    assert data["192.0.2.11"]["binding"] == {"iface": "eth1", "learn": True}
    assert (data["192.0.2.11"]["moved"], data["192.0.2.11"]["learned"]) == (7, {"iface": "eth1", "mac": MAC})
