"""`make check`: the gates every change passes, one line each.

    .venv/bin/python scripts/check.py

1. ruff: lint and import order ([tool.ruff] in pyproject.toml), the whole repository.
2. mypy: mauthcore, musersd, mauthserver, mauthclient and sap type-checked, the codecs,
   the rules and the mediator's core strictly ([tool.mypy]; its cache in .venv/).
3. coverage: the unit tests (tests/unit, and tests/loopback when it exists) under
   coverage.py with branch coverage of the five packages; the total must reach
   [tool.coverage.report] fail_under.

A gate's own output is shown only when it fails; the coverage run's whole output is
kept in .venv/coverage-run.log. The exit status is 0 only when every gate passed.
`make test` runs the same gates first (scripts/run_tests.py): there the coverage run
is the unit tests' run, and its pytest counts join the summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Gate:
    name: str
    ok: bool
    summary: str  # "ok", "3 findings", "87.5% (floor 85%)"
    seconds: float
    output: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # the coverage run's pytest outcomes


def unit_paths() -> list[str]:
    """The tests the coverage run takes: the unit tier, and the loopback tier where it exists."""
    return [p for p in ("tests/unit", "tests/loopback") if (REPO / p).is_dir()]


def floor() -> float:
    with open(REPO / "pyproject.toml", "rb") as f:
        return float(tomllib.load(f)["tool"]["coverage"]["report"]["fail_under"])


def _run(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc.returncode, proc.stdout


def ruff() -> Gate:
    start = time.monotonic()
    rc, out = _run([str(BIN / "ruff"), "check", "--quiet", "--output-format", "concise", "."])
    findings = sum(1 for line in out.splitlines() if re.match(r"\S+:\d+:\d+: ", line))
    return Gate("ruff", rc == 0, "ok" if rc == 0 else f"{findings or 'some'} findings",
                time.monotonic() - start, out)


def mypy() -> Gate:
    start = time.monotonic()
    rc, out = _run([str(BIN / "mypy")])
    m = re.search(r"Found (\d+) errors?", out)
    return Gate("mypy", rc == 0, "ok" if rc == 0 else f"{m.group(1) if m else 'some'} errors",
                time.monotonic() - start, out)


def coverage() -> Gate:
    """The unit tests under coverage."""
    start = time.monotonic()
    code, out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", "--cov",
                      "--cov-report=", *unit_paths()])
    (REPO / ".venv" / "coverage-run.log").write_text(out)  # the whole pytest output, slowest tests last
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if re.search(r"\b(passed|failed|errors?|no tests ran)\b.* in [\d.]+s", line):
            counts = {("errors" if k == "error" else k): int(n)
                      for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", line)}
    # The total alone; the floor is judged here (coverage's own check would only change the exit status).
    rc_total, total = _run([sys.executable, "-m", "coverage", "report", "--format=total", "--precision=2",
                            "--fail-under=0"])
    want = floor()
    seconds = time.monotonic() - start
    if rc_total != 0 or not re.fullmatch(r"[\d.]+", total.strip()):
        return Gate("coverage", False, f"no total (floor {want:g}%)", seconds, out + total, counts)
    got = float(total.strip())
    # pytest-cov fails the run below the floor too: the tests' own failures are told apart here.
    tests_ok = counts.get("failed", 0) == 0 and counts.get("errors", 0) == 0 and counts.get("passed", 0) > 0
    ok = tests_ok and got >= want
    summary = f"{got:g}% (floor {want:g}%)"
    if not tests_ok:
        summary += f", tests failed (exit status {code})"
    return Gate("coverage", ok, summary, seconds, out, counts)


def main() -> int:
    start = time.monotonic()
    gates = []
    for gate in (ruff, mypy, coverage):
        g = gate()
        gates.append(g)
        if not g.ok:
            sys.stdout.write(g.output.rstrip("\n")[-20000:] + "\n")
        print(f"check: {g.name} {g.summary} ({g.seconds:.0f} s)", flush=True)
    ok = all(g.ok for g in gates)
    print(f"check: {'passed' if ok else 'FAILED'}: {', '.join(f'{g.name} {g.summary}' for g in gates)} "
          f"in {time.monotonic() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
