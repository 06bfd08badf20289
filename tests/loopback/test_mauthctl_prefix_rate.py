"""mauthctl add-sender with prefixes and --pps/--bps, direct to a router and through mauthserver.

Direct mode speaks protocol v2 to the real server core on a memory backend;
server mode goes through the real mediator, which fans the rule out to two
routers over v2 (`LoopbackFleet`). The kernel side of the same rules is in
tests/integration (test_xdp_program.py, test_rate_limits.py,
test_prefix_rules.py).
"""

from __future__ import annotations

import json

from mauthcore.rules import Rule, RuleKey

# Fixtures (router, server, and the autouse no_user_config) and helpers of the mauthctl tests, used by name.
from tests.loopback.test_mauthctl_cli import router, server  # noqa: F401
from tests.support.mauthctl import no_user_config, one_error, run  # noqa: F401
from tests.support.waiting import wait_until as wait

SUBNET = Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=500, bps=2_000_000)


def test_direct_mode_prefixes_and_limits(router):  # noqa: F811
    backend, opts = router
    r = run(*opts, "add-sender", "192.0.2.0/24", "239.1.1.1", "--max-ttl", "8", "--pps", "500", "--bps", "2M")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "added: 192.0.2.0/24 -> 239.1.1.1 max-ttl 8 pps 500 bps 2000000"
    assert backend.rules[SUBNET.key] == SUBNET
    r = run(*opts, "add-sender", "192.0.2.10", "239.192.0.0/14", "--max-ttl", "16", "--json")
    assert json.loads(r.stdout) == {"result": "added", "source": "192.0.2.10", "group": "239.192.0.0/14",
                                    "max_ttl": 16}
    listed = {(e["source"], e["group"]): e for e in json.loads(run(*opts, "list", "--json").stdout)}
    assert (listed[("192.0.2.0/24", "239.1.1.1")]["pps"], listed[("192.0.2.0/24", "239.1.1.1")]["bps"]) == (
        500, 2_000_000)
    table = run(*opts, "list").stdout.splitlines()
    assert table[0].split()[-1] == "LIMITS"
    assert any(line.startswith("192.0.2.0/24") and line.rstrip().endswith("pps 500, bps 2000000") for line in table)
    assert run(*opts, "del-sender", "192.0.2.10", "239.192.0.0/14").exit_code == 0
    assert set(backend.rules) == {SUBNET.key}
    one_error(run(*opts, "add-sender", "192.0.2.0/24", "239.0.0.0/8", "--max-ttl", "8"), 2,
              "a source prefix and a group prefix")
    one_error(run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "8", "--pps", "lots"), 2,
              "pps limit 'lots' is not a number")
    one_error(run(*opts, "--v1", "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "8", "--pps", "5"), 2,
              "v1 carries no rate limits")
    assert set(backend.rules) == {SUBNET.key}


def test_server_mode_stores_fans_out_and_shows_prefixes_and_limits(server):  # noqa: F811
    fleet, opts = server
    r = run(*opts, "add-sender", "192.0.2.0/24", "239.1.1.1", "--max-ttl", "8", "--pps", "500", "--bps", "2M",
            "--json")
    out = json.loads(r.stdout)
    assert out["result"] == "added" and (out["rule"]["source"], out["rule"]["pps"]) == ("192.0.2.0/24", 500)
    run(*opts, "add-sender", "192.0.2.10", "239.192.0.0/14", "--max-ttl", "16")
    scope = RuleKey.make("192.0.2.10", "239.192.0.0/14")

    def held(name):
        backend = fleet.backends[name]
        return fleet.call(lambda: dict(backend.rules))

    wait(lambda: held("r1") == held("r2") == {SUBNET.key: SUBNET, scope: Rule(scope, 16)})
    # A new limit is a change the routers follow; the rule keeps its key.
    one_error(run(*opts, "add-sender", "192.0.2.0/24", "239.1.1.1", "--max-ttl", "8", "--pps", "50"), 1,
              "already exists with max TTL 8, pps 500, bps 2000000")
    assert run(*opts, "add-sender", "192.0.2.0/24", "239.1.1.1", "--max-ttl", "8", "--pps", "50",
               "--replace").exit_code == 0
    slower = Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=50)
    wait(lambda: held("r1")[SUBNET.key] == held("r2")[SUBNET.key] == slower)
    wait(lambda: all(r["state"] == "applied" for r in fleet.call(fleet.mediator.rules_view)))
    table = run(*opts, "list").stdout
    assert "192.0.2.0/24" in table and "239.192.0.0/14" in table and "pps 50" in table
    assert run(*opts, "del-sender", "192.0.2.0/24", "239.1.1.1").exit_code == 0
    wait(lambda: held("r1") == held("r2") == {scope: Rule(scope, 16)})
