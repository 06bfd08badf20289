"""The unit tier's own rule (tests/unit/conftest.py): no socket, no socket pair, no child process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess

import pytest

from tests.unit.conftest import SocketInUnitTier, no_sockets_or_processes


def refused_by_a_nested_guard(attempt) -> tuple[str, list[str]]:
    refused: list[str] = []
    with no_sockets_or_processes("the probe", refused), pytest.raises(SocketInUnitTier) as info:
        attempt()
    return str(info.value), refused


@pytest.mark.parametrize("attempt, what", [
    (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "opened a socket"),
    (lambda: socket.create_connection(("127.0.0.1", 9)), "opened a socket"),
    (lambda: socket.socketpair(), "opened a socket pair"),
    (lambda: asyncio.run(_endpoint()), "opened a socket"),
    (lambda: subprocess.run(["true"]), "started a process"),
    (lambda: os.fork(), "forked"),
], ids=["socket", "create_connection", "socketpair", "asyncio_endpoint", "subprocess", "fork"])
def test_every_way_out_is_refused_naming_the_test(attempt, what):
    message, refused = refused_by_a_nested_guard(attempt)
    assert message.startswith(f"the probe {what}") and "tests/loopback" in message
    assert len(refused) == 1 and refused[0].startswith(what)
    assert socket.socket.__init__.__qualname__ == "no_sockets_or_processes.<locals>.guarded_init"  # the tier's, again


async def _endpoint():
    await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))


def test_an_event_loop_of_its_own_is_allowed():
    async def main():
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(done.set_result, "ran")
        return await done

    assert asyncio.run(main()) == "ran"


def test_this_test_runs_inside_the_guard():
    """Not only the nested probes above: the tier's own guard is on around this very test (trying a
    socket here would fail it, so this looks at what socket.socket() now runs)."""
    assert socket.socket.__init__.__qualname__ == "no_sockets_or_processes.<locals>.guarded_init"
    assert subprocess.Popen._execute_child.__qualname__ == "no_sockets_or_processes.<locals>.guarded_execute_child"
