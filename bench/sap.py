"""SAP announcements parsed per second by mauthserver's codecs and session directory.

    python -m bench.sap [--sessions 10000] [--rounds 3] [--no-json]

What is timed, in-process and single-threaded (mauthserver runs all of this
in its one event loop), on `--sessions` distinct announcements, half of them
zlib-compressed (the Z bit, RFC 2974 §3), each a realistic description
(origin, name, information, connection with TTL, timing, two media with
rtpmap attributes; about 300 bytes of SDP):

    decode        sap.sap.decode(): header, inflation, payload type
    parse         decode, then sap.sdp.parse_sdp() of the payload
    new           Directory.handle_packet() of each packet into an empty
                  directory: decode, parse, and a new session each
    refresh       the same packets again into that directory: each one is
                  recognised by (origin, hash, payload) as a refresh and not
                  parsed again (RFC 2974 §3.1's cache)

Each kind runs `--rounds` times in turn; the figure is the median rate, plain
and compressed packets counted together, and each separately for `new`.
The directory is made with room for every session (max_sessions), so no
eviction happens; mauthserver's own directory keeps --max-sessions
(default sap.directory.DEFAULT_MAX_SESSIONS, see docs/benchmarks.md).

Then the same new-session packets through mauthserver's mediator
(`Mediator.on_sap_packet`: the directory, a SQLite transaction storing the
session, on tmpfs, and the event with the session's view and its rules),
with no rules and with `--rules` rules (100,000) in the store, each new
session an event. Twice with the rules: as mauthserver does it now (the
fleet's index from session to rules) and as it did before that index
(`ScanningMediator`: every rule sorted per event, kept here only to
measure against). Rounds interleave the three; `--mediator-sessions` new
sessions per round, fewer for the scanning one, which is slow.

The packets are built once with sap.sap.encode() from text templates; the
same builder feeds the control-plane benchmark's SAP flood.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mauthserver.core import DesiredRule, Put, SessionView
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, decode, encode
from sap.sdp import parse_sdp

from . import common
from .forwarding import make_rules

SECTION = "sap"
ANNOUNCER = ipaddress.IPv4Address("192.0.2.10")
KINDS = ("decode", "parse", "new", "refresh")


def sdp_text(i: int, origin: str = str(ANNOUNCER)) -> bytes:
    """A distinct session description: its own o= session id, name and group."""
    group = ipaddress.IPv4Address(int(ipaddress.IPv4Address("239.3.0.0")) + i)
    return (
        "v=0\r\n"
        f"o=bench {3_900_000_000 + i} 1 IN IP4 {origin}\r\n"
        f"s=mauth benchmark session {i}\r\n"
        "i=a lecture, its slides and a discussion channel\r\n"
        f"c=IN IP4 {group}/16\r\n"
        "t=0 0\r\n"
        "a=tool:mauth-bench\r\n"
        "m=audio 5004 RTP/AVP 96\r\n"
        "a=rtpmap:96 opus/48000/2\r\n"
        "m=video 5006 RTP/AVP 97\r\n"
        "a=rtpmap:97 H264/90000\r\n"
    ).encode()


def packets(n: int, origin: str = str(ANNOUNCER), first: int = 0) -> list[bytes]:
    """n SAP announcements of distinct sessions (numbered from `first`); the odd ones compressed."""
    return [encode(announcement(origin, sdp_text(i, origin), compressed=bool(i % 2))) for i in range(first, first + n)]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def run_kind(kind: str, pkts: list[bytes], now: float) -> tuple[float, dict]:
    """One timed pass; returns (seconds, details)."""
    gc.collect()
    if kind == "decode":
        t0 = time.perf_counter()
        for p in pkts:
            decode(p)
        return time.perf_counter() - t0, {}
    if kind == "parse":
        t0 = time.perf_counter()
        for p in pkts:
            parse_sdp(decode(p).payload)
        return time.perf_counter() - t0, {}
    d = Directory(max_sessions=len(pkts), max_bytes=1 << 30)
    if kind == "refresh":
        for p in pkts:
            d.handle_packet(p, now)
    split = {0: 0.0, 1: 0.0}
    t0 = time.perf_counter()
    for i, p in enumerate(pkts):
        t = time.perf_counter()
        d.handle_packet(p, now + (2.0 if kind == "refresh" else 0.0))
        split[i % 2] += time.perf_counter() - t
    total = time.perf_counter() - t0
    if len(d) != len(pkts):
        raise SystemExit(f"the directory holds {len(d)} sessions, not {len(pkts)}: the figures would mean nothing")
    return total, {"plain_s": split[0], "compressed_s": split[1]}


class ScanningMediator(Mediator):
    """The mediator's session view as it was before the fleet indexed rules by session.

    Every session event sorted every desired rule to pick the session's own;
    this subclass keeps that code so the benchmark can price it next to the
    index, in the same run. mauthserver does not use it.
    """

    def session_view(self, s) -> dict:
        out = s.to_dict()
        out["first_heard"] = min(out["first_heard"], self._first_heard.get(s.id, out["first_heard"]))
        if s.any_source:
            out["suggested_senders"] = SessionView.of(s).suggestions()
        out["rules"] = [{"source": str(r.rule.source), "group": str(r.rule.group), "max_ttl": r.rule.max_ttl,
                         "expire_with_session": r.expire_with_session}
                        for k, r in sorted(self.fleet.desired.items()) if r.session_id == s.id]
        return out


MEDIATORS = ("index_no_rules", "index_rules", "scan_rules")


def mediator_rates(n_rules: int, per_round: int, scan_per_round: int, rounds: int, now: float) -> list[dict]:
    """New sessions a second through Mediator.on_sap_packet, by variant (see the module docstring)."""
    shm = Path(tempfile.mkdtemp(prefix="mauth-bench-sap-", dir="/dev/shm"))
    stores = []
    try:
        rules = make_rules(n_rules)
        mediators = {}
        for name in MEDIATORS:
            store = Store.open(shm / f"{name}.db", now=now)
            stores.append(store)
            if name != "index_no_rules":
                store.commit([Put(DesiredRule(r, created=now, updated=now, actor="bench")) for r in rules],
                             actor="bench", action="bench-preload", detail={"rules": n_rules}, now=now)
            cls = ScanningMediator if name == "scan_rules" else Mediator
            mediators[name] = cls(store, Directory(max_sessions=1 << 20, max_bytes=1 << 30), EventBus(), [],
                                  clock=lambda: now)
        samples: dict[str, list[tuple[int, float]]] = {name: [] for name in MEDIATORS}
        first = 0
        for r in range(rounds):
            for name in MEDIATORS[r % 3:] + MEDIATORS[:r % 3]:
                m = mediators[name]
                count = scan_per_round if name == "scan_rules" else per_round
                pkts = packets(count, first=first)
                first += count
                added = m.counters["sessions_added"]
                gc.collect()
                t0 = time.perf_counter()
                for p in pkts:
                    m.on_sap_packet(p, ("192.0.2.10", 9875), now)
                secs = time.perf_counter() - t0
                if m.counters["sessions_added"] - added != count:
                    raise SystemExit(f"{name}: {m.counters['sessions_added'] - added} sessions added, not {count}")
                samples[name].append((count, secs))
        out = []
        for name in MEDIATORS:
            rates = [c / s for c, s in samples[name]]
            q1, med, q3 = common.quartiles(rates)
            out.append({"variant": name, "rules": 0 if name == "index_no_rules" else n_rules,
                        "sessions_per_round": samples[name][0][0], "per_second": round(med, 1),
                        "per_second_iqr": [round(q1, 1), round(q3, 1)], "ms_per_session": round(1e3 / med, 3)})
        return out
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(shm, ignore_errors=True)


MEDIATOR_LABELS = {
    "index_no_rules": "no rules",
    "index_rules": "{rules:,} rules, rules indexed by session",
    "scan_rules": "{rules:,} rules, every rule sorted per event (before the index)",
}


def markdown(section: dict) -> str:
    """The table of docs/benchmarks.md, from the figures."""
    lines = ["| what | per second | µs per packet |", "| --- | ---: | ---: |"]
    for r in section["results"]:
        lines.append(f"| {r['kind']} | {r['per_second']:,} | {r['us_per_packet']} |")
    new = next(r for r in section["results"] if r["kind"] == "new")
    lines.append(f"\nNew sessions only: plain {new['plain_per_second']:,}/s, "
                 f"compressed {new['compressed_per_second']:,}/s.")
    if section.get("mediator"):
        lines += ["", "| new sessions through mauthserver's mediator | per second | ms per session |",
                  "| --- | ---: | ---: |"]
        for r in section["mediator"]:
            lines.append(f"| {MEDIATOR_LABELS[r['variant']].format(rules=r['rules'])} | {r['per_second']:,} "
                         f"| {r['ms_per_session']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sap", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000, help="distinct announcements")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per kind, interleaved")
    ap.add_argument("--rules", type=int, default=100_000, help="rules in the mediator's store")
    ap.add_argument("--mediator-sessions", type=int, default=1000,
                    help="new sessions per round through the mediator (0: skip the mediator)")
    ap.add_argument("--scan-sessions", type=int, default=10,
                    help="new sessions per round through the scanning mediator (slow: a sort of every rule each)")
    ap.add_argument("--no-json", action="store_true", help="print only; leave docs/benchmarks.json alone")
    args = ap.parse_args(argv)
    started = time.monotonic()
    cpu = common.pin_to_quietest_cpu()
    pkts = packets(args.sessions)
    sizes = [len(p) for p in pkts]
    now = time.time()
    samples: dict[str, list] = {k: [] for k in KINDS}
    for r in range(args.rounds):
        for kind in KINDS[r % len(KINDS):] + KINDS[: r % len(KINDS)]:
            samples[kind].append(run_kind(kind, pkts, now))
    n = len(pkts)
    results = []
    for kind in KINDS:
        rates = [_rate(n, s) for s, _ in samples[kind]]
        q1, med, q3 = common.quartiles(rates)
        row = {"kind": kind, "per_second": round(med), "per_second_iqr": [round(q1), round(q3)],
               "us_per_packet": round(1e6 / med, 1)}
        if kind == "new":
            row["plain_per_second"] = round(
                common.quartiles([_rate(n // 2, d["plain_s"]) for _, d in samples[kind]])[1])
            row["compressed_per_second"] = round(
                common.quartiles([_rate(n - n // 2, d["compressed_s"]) for _, d in samples[kind]])[1])
        results.append(row)
    mediator = []
    if args.mediator_sessions > 0:
        mediator = mediator_rates(args.rules, args.mediator_sessions, args.scan_sessions, args.rounds, now)
    section = {
        "generated": common.now_iso(),
        "command": " ".join(["python -m bench.sap", *(argv if argv is not None else sys.argv[1:])]),
        "machine": common.machine(),
        "method": {
            "sessions": n,
            "compressed_share": 0.5,
            "packet_bytes": {"min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / n)},
            "rounds": args.rounds,
            "cpu": cpu,
            "summary": "median rate over rounds; kinds interleaved",
        },
        "results": results,
        "mediator": mediator,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(markdown(section))
    if not args.no_json:
        common.store_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
