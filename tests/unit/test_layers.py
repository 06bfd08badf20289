"""The import graph: the programs share the core and import nothing of one another.

Read from the source (every `import` and `from ... import`, at any depth, also
inside functions), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mauthcore", "musersd", "mauthserver", "mauthclient", "sap")
# What each package may import of the repository's packages (itself always).
ALLOWED = {
    "mauthcore": set(),
    "sap": {"mauthcore"},
    "musersd": {"mauthcore"},
    "mauthserver": {"mauthcore", "sap"},
    "mauthclient": {"mauthcore", "sap"},
}
OURS = set(PACKAGES) | {"lab", "bench", "tests", "ebpf"}


def imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & OURS


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_core_and_what_it_is_allowed(package):
    wrong = {}
    for path in sorted((REPO / package).rglob("*.py")):
        extra = imported_packages(path) - ALLOWED[package] - {package}
        if extra:
            wrong[str(path.relative_to(REPO))] = sorted(extra)
    assert wrong == {}, f"{package} imports outside its layer: {wrong}"


def test_the_check_reads_imports_inside_functions_too(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from musersd.daemon import Musersd\n    import lab.vm\n")
    assert imported_packages(probe) == {"musersd", "lab"}
