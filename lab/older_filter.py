"""The XDP filter of an earlier commit, built as scripts/build_bpf.sh builds today's.

For the test of an in-place upgrade from an earlier map layout
(tests/integration/test_xdp_program.py) and the benchmark that measures an
unbound rule under the earlier program side by side (bench/xdp_cost.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUT4_COMMIT = "2650f1c"  # the last commit of map layout 4


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
