"""Helpers for the mauthserver lab tests: the real daemons, run as an operator would.

The daemons themselves live in `lab.daemons` (the demo runs them too); this
module keeps the names the tests were written against: `MusersdProc` takes
the key file and port positionally, `MauthserverProc` records "pytest" as
the API actor, and `announce` fails the test when mauthctl fails.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

from lab import daemons
from lab.daemons import API_PORT, ROUTER_PORT, make_secrets, write_secret
from lab.daemons import Daemon as Proc
from lab.netns import inside, patience
from lab.topology import Lab
from mauthclient.api import ApiError, Unreachable
from mauthcore.protocol.model import Reason

__all__ = ["API_PORT", "ROUTER_PORT", "CommandClient", "MauthserverProc", "MusersdProc", "Proc", "announce",
           "command_key", "commands", "expected", "heard_from", "make_secrets", "router_call", "sap_local",
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


# -- a stream of commands for the crash and fail-over tests --------------------------------------


def command_key(i: int) -> tuple[str, str]:
    """1,000 distinct (source, group) pairs."""
    return f"192.0.2.{10 + i % 3}", str(ipaddress.IPv4Address("239.2.0.1") + i)


def commands(n: int, seed: int = 7) -> list[tuple]:
    """`n` commands, mostly adds, with removals of earlier adds mixed in: ("add", S, G, TTL) or ("del", S, G)."""
    rng = random.Random(seed)
    cmds: list[tuple] = []
    live: list[tuple[str, str]] = []
    i = 0
    while len(cmds) < n:
        if live and rng.random() < 0.15:
            key = live.pop(rng.randrange(len(live)))
            cmds.append(("del", *key))
        else:
            key = command_key(i)
            i += 1
            cmds.append(("add", *key, 1 + i % 64))
            live.append(key)
    return cmds


def expected(cmds: list[tuple]) -> dict[tuple[str, str], int]:
    """The rules after every command, applied once each and in order."""
    state: dict[tuple[str, str], int] = {}
    for cmd in cmds:
        if cmd[0] == "add":
            state[(cmd[1], cmd[2])] = cmd[3]
        else:
            state.pop((cmd[1], cmd[2]), None)
    return state


class CommandClient(threading.Thread):
    """Sends the commands in order from inside the router namespace, through `servers` in turn.

    A command that a server cannot carry out (unreachable, or 503: no leader for a moment) is sent
    again, through the next server; a removal answered 404 after such a retry was committed by the
    interrupted attempt. Each command counts as acknowledged once, when an answer says it was done.
    """

    def __init__(self, servers: list[MauthserverProc], cmds: list[tuple], timeout: float = 180.0) -> None:
        super().__init__(daemon=True)
        self.servers, self.cmds = servers, cmds
        self.acked: list[tuple] = []
        self.interrupted = 0
        self.error: BaseException | None = None
        self.deadline = time.monotonic() + patience(timeout)

    def run(self) -> None:
        try:
            with inside(self.servers[0].lab.router.ns):
                apis = [s.api() for s in self.servers]
                turn = 0
                for cmd in self.cmds:
                    while True:
                        if time.monotonic() > self.deadline:
                            raise TimeoutError("the commands took too long")
                        api = apis[turn % len(apis)]
                        turn += 1
                        try:
                            if cmd[0] == "add":
                                api.add_rule(cmd[1], cmd[2], cmd[3])
                            else:
                                try:
                                    api.remove_rule(cmd[1], cmd[2])
                                except ApiError as exc:
                                    if exc.status != 404:
                                        raise
                                    assert self.interrupted, exc.message
                            self.acked.append(cmd)
                            break
                        except Unreachable:
                            self.interrupted += 1
                            time.sleep(0.05)  # the server is down: the client's retry pace (not a wait)
                        except ApiError as exc:
                            if exc.status != 503:
                                raise
                            self.interrupted += 1
                            time.sleep(0.05)
        except BaseException as exc:  # reported by the test
            self.error = exc
