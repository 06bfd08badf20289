"""`make demo`: the router side of mauth, live, in a namespace lab.

    s1 192.0.2.10 (authorized, TTL 8)  ─┐
    s1 192.0.2.12 (not authorized)      ├─ in0/in1 ─ router: smcrouted + musersd (XDP) ─ out0 ─ r1 receiver
    s2 192.0.2.70 (authorized, sends TTL 32 > max 8) ─┘

Phase 1 sends from all three; only the authorized sender within its TTL
gets through. Then the operator authorizes 192.0.2.12 with `mauthctl`, and
phase 2 shows its traffic flowing. The report lists, per sender, what was
sent, delivered and dropped and why (from the filter's own counters), plus a
JSON summary; the exit status is 0 only if the policy held exactly.
Ctrl-C at any time removes every namespace and process.
"""

from __future__ import annotations

import json
import sys
import time

from .daemons import Musersd, mauthctl, write_key_file
from .netns import private_bpffs
from .topology import Lab, Route

AUTH, ROGUE, LOUD = "192.0.2.10", "192.0.2.12", "192.0.2.70"
GROUP = "239.1.1.1"
PER_PHASE = 200


def say(text: str) -> None:
    print(f"\033[1m==>\033[0m {text}", flush=True)


def run_ctl(lab, *args) -> str:
    r = mauthctl(lab, lab.router.ns, "--router", "127.0.0.1:7575", "--key-file", str(lab.workdir / "router.key"),
                 *args)
    if r.returncode != 0:
        raise SystemExit(f"demo: mauthctl {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def phase(lab, rx, senders) -> None:
    for _ in range(PER_PHASE // 20):
        for snd, ttl in senders:
            snd.send(GROUP, 20, ttl=ttl)
        time.sleep(0.05)
    rx.drain()


def main() -> int:
    try:
        with private_bpffs("mauth-demo-bpffs-") as bpffs:
            routes = [Route(GROUP, s) for s in (AUTH, ROGUE, LOUD)]
            say("building the lab: 2 sender hosts, a router running smcrouted, a receiver")
            with Lab(senders={"s1": [AUTH, ROGUE], "s2": [LOUD]}, routes=routes) as lab:
                key = write_key_file(lab.workdir / "router.key")
                say(f"smcrouted forwards {GROUP} from every sender: {len(lab.kernel_mroutes())} (S,G) routes")
                musersd = Musersd(lab, bpffs / "pins", key_file=key).start()
                say("musersd guards " + ", ".join(lab.internal_ifaces) + ": " + musersd.log().splitlines()[-1])
                run_ctl(lab, "add-sender", AUTH, GROUP, "--max-ttl", "8")
                run_ctl(lab, "add-sender", LOUD, GROUP, "--max-ttl", "8")
                print(run_ctl(lab, "list"))

                rx = lab.receiver([GROUP])
                auth, rogue, loud = lab.sender(AUTH), lab.sender(ROGUE), lab.sender(LOUD)
                say(f"phase 1: {PER_PHASE} packets each from {AUTH} (TTL 8), {ROGUE} (no rule), {LOUD} (TTL 32)")
                phase(lab, rx, [(auth, 8), (rogue, 8), (loud, 32)])
                print(run_ctl(lab, "denied"))
                say(f"the operator authorizes {ROGUE}: mauthctl add-sender {ROGUE} {GROUP} --max-ttl 8")
                run_ctl(lab, "add-sender", ROGUE, GROUP, "--max-ttl", "8")
                say("phase 2: the same traffic again")
                phase(lab, rx, [(auth, 8), (rogue, 8), (loud, 32)])

                stats = json.loads(run_ctl(lab, "--json", "stats"))
                rules = {r["source"]: r for r in json.loads(run_ctl(lab, "--json", "list"))}
                expected = {AUTH: 2 * PER_PHASE, ROGUE: PER_PHASE, LOUD: 0}
                report = []
                for src, why in ((AUTH, "authorized, TTL within max"), (ROGUE, "no rule, then authorized"),
                                 (LOUD, "authorized, TTL 32 > max 8")):
                    sent = 2 * PER_PHASE
                    got = rx.got(src, GROUP)
                    report.append({"sender": src, "group": GROUP, "case": why, "sent": sent, "delivered": got,
                                   "dropped": sent - got, "expected_delivered": expected[src],
                                   "counted_by_rule": rules.get(src, {}).get("packets", 0)})
                held = all(r["delivered"] == r["expected_delivered"] for r in report)
                held = held and stats["reasons"]["unauthorized"]["packets"] == PER_PHASE
                held = held and stats["reasons"]["ttl"]["packets"] == 2 * PER_PHASE

                print()
                print(f"{'sender':<14}{'sent':>6}{'delivered':>11}{'dropped':>9}  why")
                for r in report:
                    print(f"{r['sender']:<14}{r['sent']:>6}{r['delivered']:>11}{r['dropped']:>9}  {r['case']}")
                print(f"filter counters: passed {stats['reasons']['passed']['packets']}, "
                      f"unauthorized {stats['reasons']['unauthorized']['packets']}, "
                      f"ttl {stats['reasons']['ttl']['packets']}")
                summary = {"policy_held": held, "senders": report, "reasons": stats["reasons"], "mode": stats["mode"]}
                print(json.dumps(summary, sort_keys=True))
                say("policy held" if held else "POLICY VIOLATED")
                musersd.stop()
                return 0 if held else 1
    except KeyboardInterrupt:
        print("\ninterrupted: lab removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
