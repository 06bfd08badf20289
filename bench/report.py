"""Rewrite the generated tables of docs/benchmarks.md from docs/benchmarks.json.

    python -m bench.report          # after any benchmark; `make bench` runs it last

docs/benchmarks.md is written by hand: what each benchmark does, why, and
what limits it. Its tables of figures are not: each sits between a pair of
markers,

    <!-- generated: forwarding -->
    ...
    <!-- end generated: forwarding -->

and is rendered here from that benchmark's section of benchmarks.json by
the same function that prints its table when it runs. So the tables always
show the last run's figures, and a benchmark run alone updates its own.
The block `machine` holds the machine of the newest section and, for each
section, when it was generated and on which CPU and kernel. A marker pair
with no section in the JSON is left as it is; a section with no marker
pair is reported, not added. A part of a section can have a block of its
own (PART_RENDERERS: control's stores part, `control-stores`), left as it
is while the section has no such part.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from . import common

MD_PATH = common.REPO / "docs" / "benchmarks.md"


def _xdp_cost(s: dict) -> str:
    from . import xdp_cost

    return xdp_cost.markdown(s["results"], s["bulk_load"], s.get("bindings"), s.get("receivers"))


def _forwarding(s: dict) -> str:
    from . import forwarding

    labels = {name: g["label"] for name, g in s["guards"].items()}
    return forwarding.markdown(s["results"], labels, s["upcalls"])


def _control(s: dict) -> str:
    from . import control

    return control.markdown(s, stores=False)  # the stores part has a block of its own, below


def _control_stores(s: dict) -> str | None:
    from . import control

    return control.stores_markdown(s["stores"]) if "stores" in s else None


def _sap(s: dict) -> str:
    from . import sap

    return sap.markdown(s)


def _loader(s: dict) -> str:
    from . import loader

    return loader.markdown(s)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "xdp_cost": _xdp_cost,
    "forwarding": _forwarding,
    "control": _control,
    "sap": _sap,
    "loader": _loader,
}

# Blocks rendered from a part of a section: block name -> (section, renderer; None: no such part).
PART_RENDERERS: dict[str, tuple[str, Callable[[dict], str | None]]] = {
    "control-stores": ("control", _control_stores),
}


def machine_block(data: dict) -> str:
    newest = max(data.values(), key=lambda s: s.get("generated", ""))
    m = newest["machine"]
    lines = [
        "| | |",
        "| --- | --- |",
        f"| OS, kernel | {m['os']}, Linux {m['kernel']}{' (virtual machine)' if m.get('virtualized') else ''} |",
        f"| CPU | {m['cpus']} × {m['cpu_model']} at {float(m['cpu_mhz']):.0f} MHz |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| BPF | JIT {'on' if m.get('bpf_jit_enable') == '1' else m.get('bpf_jit_enable')}; "
        f"libbpf {m.get('libbpf')} |",
        f"| mitigations | spectre_v2: {m.get('spectre_v2')} |",
        f"| Python | {m['python']} |",
        "",
        "| section | generated (UTC) | command | took | CPU, kernel |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for name in sorted(data):
        s = data[name]
        took = f"{s['elapsed_s']:.0f} s" if "elapsed_s" in s else ""
        sm = s.get("machine", {})
        where = f"{sm.get('cpu_model')}, {sm.get('kernel')}"
        lines.append(f"| {name} | {s.get('generated', '')} | `{s.get('command', '')}` | {took} | {where} |")
    return "\n".join(lines)


def render(md: str, data: dict) -> tuple[str, list[str]]:
    """(new text, names of sections with no marker pair)."""
    blocks = {name: RENDERERS[name](section) for name, section in data.items() if name in RENDERERS}
    for block, (section, renderer) in PART_RENDERERS.items():
        text = renderer(data[section]) if section in data else None
        if text is not None:
            blocks[block] = text
    blocks["machine"] = machine_block(data)
    missing = []
    for name, text in blocks.items():
        pattern = re.compile(rf"(<!-- generated: {re.escape(name)} -->\n).*?"
                             rf"(\n<!-- end generated: {re.escape(name)} -->)", re.S)
        if not pattern.search(md):
            missing.append(name)
            continue
        md = pattern.sub(lambda m, text=text: m.group(1) + text + m.group(2), md)
    return md, missing


def main(argv: list[str] | None = None) -> int:
    data = json.loads(common.JSON_PATH.read_text())
    md = MD_PATH.read_text()
    new, missing = render(md, data)
    for name in missing:
        print(f"{MD_PATH.name} has no generated block for section {name!r}", file=sys.stderr)
    if new != md:
        tmp = Path(str(MD_PATH) + ".tmp")
        tmp.write_text(new)
        tmp.replace(MD_PATH)
        print(f"rewrote the generated tables of {MD_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
