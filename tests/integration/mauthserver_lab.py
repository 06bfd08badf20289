"""Helpers for the mauthserver lab tests: the real daemons, run as an operator would.

The daemons themselves live in `lab.daemons` (the demo runs them too); this
module keeps the names the tests were written against: `MusersdProc` takes
the key file and port positionally, `MauthserverProc` records "pytest" as
the API actor, and `announce` fails the test when mauthctl fails.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from lab import daemons
from lab.daemons import API_PORT, ROUTER_PORT, make_secrets, write_secret
from lab.daemons import Daemon as Proc
from lab.netns import inside
from lab.topology import Lab
from mauthcore.protocol.model import Reason

__all__ = ["API_PORT", "ROUTER_PORT", "MauthserverProc", "MusersdProc", "Proc", "announce", "heard_from",
           "make_secrets", "router_call", "sap_local", "write_secret"]


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


def heard_from(sock: socket.socket, source: str) -> int:
    """Datagrams from `source` read until the socket has been quiet for its timeout (IPv4 or IPv6)."""
    n = 0
    while True:
        try:
            _, addr = sock.recvfrom(65535)
        except TimeoutError:
            return n
        n += addr[0] == source


def router_call(musersd: MusersdProc, method: str):
    """One protocol v2 call (a RouterClient method without arguments) to the lab's musersd."""
    client = musersd.client()
    try:
        with inside(musersd.lab.router.ns):
            return getattr(client, method)()
    finally:
        client.close()


def sap_local(musersd: MusersdProc) -> int:
    """The router's sap_local packet count."""
    c = router_call(musersd, "counters").by_reason().get(Reason.SAP_LOCAL)
    return c.packets if c else 0
