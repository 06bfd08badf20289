"""Helpers for the mauthserver lab tests: the real daemons, run as an operator would.

The daemons themselves live in `lab.daemons` (the demo runs them too); this
module keeps the names the tests were written against: `MusersdProc` takes
the key file and port positionally, `MauthserverProc` records "pytest" as
the API actor, and `announce` fails the test when mauthctl fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab import daemons
from lab.daemons import API_PORT, ROUTER_PORT, make_secrets, write_secret
from lab.daemons import Daemon as Proc
from lab.topology import Lab

__all__ = ["API_PORT", "ROUTER_PORT", "MauthserverProc", "MusersdProc", "Proc", "announce", "make_secrets",
           "write_secret"]


class MusersdProc(daemons.Musersd):
    def __init__(self, lab: Lab, pin_dir: Path, key_file: Path, *, port: int = ROUTER_PORT,
                 ifaces: list[str] | None = None, name: str = "musersd") -> None:
        super().__init__(lab, pin_dir, listen=f"0.0.0.0:{port}", key_file=key_file, ifaces=ifaces, name=name)


class MauthserverProc(daemons.Mauthserver):
    api_user = "pytest"


def announce(lab: Lab, ns: str, sdp_file: Path, *args: str) -> subprocess.CompletedProcess:
    """mauthctl announce SDP_FILE ARGS in namespace `ns`; the test fails if mauthctl does."""
    proc = daemons.announce(lab, ns, sdp_file, *args)
    assert proc.returncode == 0, proc.stderr
    return proc
