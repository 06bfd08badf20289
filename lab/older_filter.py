"""The XDP filter of an earlier commit, built as scripts/build_bpf.sh builds today's.

For the test of an in-place upgrade from an earlier map layout
(tests/integration/test_xdp_program.py) and the benchmark that measures an
unbound rule under the earlier program side by side (bench/xdp_cost.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from musersd import maps

REPO = Path(__file__).resolve().parent.parent
LAYOUT4_COMMIT = "2650f1c"  # the last commit of map layout 4
LAYOUT5_COMMIT = "36d724a"  # the last commit of map layout 5


def build_filter_at(commit: str, workdir: Path) -> Path:
    """The compiled filter of `commit` (its ebpf/mauth_xdp.c and mauth.h), in `workdir`."""
    src = workdir / f"ebpf-{commit}"
    src.mkdir()
    for name in ("mauth_xdp.c", "mauth.h"):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:ebpf/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (src / name).write_text(text)
    out = workdir / f"mauth_xdp-{commit}.bpf.o"
    subprocess.run(["bash", str(REPO / "scripts" / "build_bpf.sh"), str(out)], check=True,
                   env={**os.environ, "MAUTH_EBPF_DIR": str(src)})
    return out


@contextlib.contextmanager
def layout4(obj: Path) -> Iterator[None]:
    """musersd.maps as a musersd of layout 4 had it: `obj` (build_filter_at(LAYOUT4_COMMIT, ...)), its
    layout number, its maps, reasons and read-only options (no bindings, no rpf interfaces)."""
    saved = {name: getattr(maps, name) for name in ("OBJECT", "LAYOUT", "ADOPTABLE_LAYOUTS", "MAPS", "REASONS",
                                                    "Opts")}
    maps.OBJECT, maps.LAYOUT, maps.ADOPTABLE_LAYOUTS = obj, 4, ()
    maps.MAPS = {c: v for c, v in saved["MAPS"].items() if c != "mauth_bindings" and c not in maps.RECEIVER_MAPS}
    maps.REASONS = {i: n for i, n in saved["REASONS"].items() if i < 11}
    maps.Opts = type("Opts4", (ctypes.Structure,), {  # type: ignore[misc]
        "_fields_": [f for f in saved["Opts"]._fields_ if f[0] != "rpf_ifindex"]})
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(maps, name, value)


@contextlib.contextmanager
def layout5(obj: Path) -> Iterator[None]:
    """musersd.maps as a musersd of layout 5 had it: `obj` (build_filter_at(LAYOUT5_COMMIT, ...)), its layout
    number, its maps (no receiver maps) and reasons (no join_refused, join_limit)."""
    saved = {name: getattr(maps, name) for name in ("OBJECT", "LAYOUT", "ADOPTABLE_LAYOUTS", "MAPS", "REASONS")}
    maps.OBJECT, maps.LAYOUT, maps.ADOPTABLE_LAYOUTS = obj, 5, (4,)
    maps.MAPS = {c: v for c, v in saved["MAPS"].items() if c not in maps.RECEIVER_MAPS}
    maps.REASONS = {i: n for i, n in saved["REASONS"].items() if i < 14}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(maps, name, value)
