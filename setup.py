"""mauth's build: setuptools, plus the XDP filter compiled once into package data.

pyproject.toml holds everything declarative; this file only makes `build_py`
(run by `pip install`, `pip wheel` and editable installs alike) compile
ebpf/mauth_xdp.c into musersd/mauth_xdp.bpf.o first, with
scripts/build_bpf.sh, so that a wheel carries the object and a router needs
neither a compiler nor kernel headers: only libbpf.so.1.
"""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithFilter(build_py):
    def run(self):
        subprocess.run(["bash", str(ROOT / "scripts" / "build_bpf.sh")], check=True)
        super().run()


setup(cmdclass={"build_py": BuildPyWithFilter})
