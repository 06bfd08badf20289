"""The systemd units and the manual pages as committed: hardening directives, pages up to date.

What `make install` makes of them (the staged tree, `systemd-analyze verify`,
the ExecStart flags parsed by the daemons) runs programs and is in
tests/loopback/test_systemd_units.py; that the units really run under systemd
with their sandbox is tests/integration/test_capabilities.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen_manpages  # noqa: E402  (scripts/ is not a package)


def directives(text: str) -> list[tuple[str, str]]:
    """(key, value) of every directive, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";", "["))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


# ------------------------------------------------------------------ the units


def test_hardening_settings():
    m = dict(directives((REPO / "systemd/musersd.service").read_text()))
    s = dict(directives((REPO / "systemd/mauthserver.service").read_text()))
    # The capability set is the one tests/integration/test_capabilities.py proves minimal.
    assert set(m["CapabilityBoundingSet"].split()) == {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    assert m["AmbientCapabilities"] == ""
    assert s["CapabilityBoundingSet"] == "" and s["DynamicUser"] == "yes"
    for d in (m, s):
        assert d["Type"] == "notify" and d["Restart"] == "on-failure" and d["WatchdogSec"]
        assert d["NoNewPrivileges"] == "yes" and d["ProtectSystem"] == "strict"
        assert d["MemoryDenyWriteExecute"] == "yes" and d["SystemCallArchitectures"] == "native"
        assert set(d["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    # Nothing of musersd reads /lib/modules; a read-only /sys/fs/bpf would stop it pinning (see the unit's comments).
    assert m["ProtectKernelModules"] == "yes" and "ProtectKernelTunables" not in m
    filters = [v for k, v in directives((REPO / "systemd/musersd.service").read_text()) if k == "SystemCallFilter"]
    assert filters == ["@system-service bpf", "~@debug"]
    assert s["StateDirectory"] == "mauth"


# ------------------------------------------------------------------ manual pages


def test_manual_pages_are_up_to_date():
    pages = gen_manpages.generate()
    assert sorted(pages) == ["mauthctl.1", "mauthserver.1", "musersd.1"]
    for name, text in pages.items():
        committed = REPO / "docs/man" / name
        assert committed.read_text() == text, f"docs/man/{name} is out of date: run 'make man'"


def test_gen_manpages_check_detects_a_stale_page(tmp_path):
    for name, text in gen_manpages.generate().items():
        (tmp_path / name).write_text(text)
    assert gen_manpages.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "musersd.1").write_text("stale\n")
    assert gen_manpages.main(["--out", str(tmp_path), "--check"]) == 1
