"""`make test`: the gates, then every test, in two tiers, each on a kernel that can run it.

    .venv/bin/python scripts/run_tests.py [PYTEST ARG...]

Strategy: almost every test checks what mauth itself does (the codecs, the
daemons, the XDP filter on real packets seen at the router); those need XDP,
not multicast routing, and run on the host's kernel, whatever it is (the
host tier: `-m "not router"`). The few whose subject is the kernel's multicast
forwarding (marked `router`: smcrouted's routes, a receiver behind the router,
the demo) need a kernel built with CONFIG_IP_MROUTE and CONFIG_IPV6_MROUTE.
When the host kernel routes multicast they run on it too; when it does not
they run in one boot of Debian's own kernel under QEMU (`python -m lab.vm`,
one pytest run for the whole tier), together with the tests marked
`every_kernel` (the XDP case table), so that every run also proves the filter
on that kernel's verifier. MAUTH_LAB_KERNEL=host|guest forces where.

First the gates of `make check` (scripts/check.py): ruff, mypy, and the unit
tests (tests/unit, tests/loopback where it exists) under branch coverage with
its floor. That coverage run is the unit tests' run: the host tier then takes
the rest of tests/ and the unit counts join the summary.

Each tier prints the kernel that ran it and how long it took; the last line
adds them up as "tests: N passed, N failed". The exit status is 0 only when
every gate passed and both tiers ran tests and none failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15"]
OUTCOMES = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed")
# The guest runs everything about 25 times slower: pytest-timeout's per-test bound stretches with it.
GUEST_TEST_TIMEOUT = 3000
GUEST_TIMEOUT = 3600  # the whole guest run, boot included: a hang or panic is killed then


@dataclass
class Tier:
    name: str
    where: str
    rc: int
    seconds: float
    counts: dict[str, int]

    def line(self) -> str:
        shown = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in OUTCOMES if self.counts.get(k) or k in
                          ("passed", "failed"))
        if self.name == "check":  # `where` holds the gates' verdicts
            return f"check: {self.where}; unit tests: {shown} in {self.seconds:.0f} s (exit status {self.rc})"
        return f"{self.name} tier on {self.where}: {shown} in {self.seconds:.0f} s (exit status {self.rc})"

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.counts.get("passed", 0) > 0


def say(msg: str) -> None:
    print(f"make test: {msg}", flush=True)


def closing_counts(raw: bytes) -> dict[str, int] | None:
    """The outcome counts of pytest's closing line ("3 passed, 1 failed in 2.0s"), or None for any other line."""
    line = raw.decode(errors="replace")
    if not re.search(r"\b(passed|failed|error|errors|no tests ran)\b.* in [\d.]+s", line):
        return None
    return {("errors" if k == "error" else k): int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", line)}


def run(name: str, where: str, argv: list[str]) -> Tier:
    """Run one tier, its output streamed through; its counts read from pytest's closing line."""
    say(f"{name} tier on {where}: {' '.join(argv[1:] if argv[0] == sys.executable else argv)}")
    start = time.monotonic()
    counts: dict[str, int] = {}
    # Unbuffered: pytest's output reaches a pipe as it is written, not in 8 kB blocks (also in the guest).
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    pending = b""
    # Byte by byte as it comes (pytest's progress dots stream), lines parsed once complete.
    while chunk := os.read(proc.stdout.fileno(), 65536):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            counts = closing_counts(raw) or counts
    counts = closing_counts(pending) or counts
    rc = proc.wait()
    return Tier(name, where, rc, time.monotonic() - start, counts)


def gates() -> Tier:
    """The gates of `make check`, as the first tier: its counts are the coverage run's (the unit tests)."""
    import check

    say(f"check: ruff, mypy, and {' and '.join(check.unit_paths())} under branch coverage")
    start = time.monotonic()
    results = []
    for gate in (check.ruff, check.mypy, check.coverage):
        g = gate()
        results.append(g)
        if not g.ok:
            sys.stdout.write(g.output.rstrip("\n")[-20000:] + "\n")
        say(f"check: {g.name} {g.summary} ({g.seconds:.0f} s)")
    counts = results[-1].counts
    shown = ", ".join(f"{g.name} {'ok' if g.ok and g.summary == 'ok' else g.summary}" for g in results)
    tier = Tier("check", shown, 0 if all(g.ok for g in results) else 1, time.monotonic() - start, counts)
    return tier


def main(extra: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "scripts"))
    from lab.vm import VMError, lab_kernel

    release = os.uname().release
    try:
        router_where = lab_kernel()
    except VMError as exc:
        say(f"error: {exc}")
        return 2
    tiers = [gates()]
    # The unit tests ran under coverage in the check tier.
    skip_unit = [f"--ignore={p}" for p in ("tests/unit", "tests/loopback") if (REPO / p).is_dir()]
    tiers.append(run("host", f"kernel {release} (this machine)",
                     [*PYTEST, "-m", "not router", *skip_unit, *extra, "tests"]))
    if router_where == "host":
        tiers.append(run("router", f"kernel {release} (this machine, it routes multicast)",
                         [*PYTEST, "-m", "router", *extra, "tests"]))
    else:
        from lab.vm import find_guest_kernel

        try:
            guest = find_guest_kernel(os.environ.get("MAUTH_VM_KERNEL"))
        except VMError as exc:
            say(f"error: {exc}")
            return 2
        say(f"kernel {release} cannot route multicast: the router tier and the tests marked every_kernel "
            f"run in one boot of Debian's kernel {guest.release} (python -m lab.vm)")
        tiers.append(run("router", f"kernel {guest.release} (Debian guest, lab.vm)",
                         [sys.executable, "-m", "lab.vm", "--timeout", str(GUEST_TIMEOUT), "--kernel", guest.release,
                          "--", *PYTEST, "-o", f"timeout={GUEST_TEST_TIMEOUT}", "-m", "router or every_kernel",
                          *extra, "tests/integration"]))
    print()
    for t in tiers:
        say(t.line())
    total = {k: sum(t.counts.get(k, 0) for t in tiers) for k in OUTCOMES}
    failed = total["failed"] + total["errors"]
    skipped = f", {total['skipped']} skipped" if total["skipped"] else ""
    print(f"tests: {total['passed']} passed, {failed} failed{skipped}")
    return 0 if all(t.ok for t in tiers) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
