"""The unit tier: needs nothing but Python. No socket, no child process, no root.

Every test here checks mauth's code inside this process: codecs, state
machines, cores driven with fake clocks, fake data planes and fake routers.
A test that needs a real socket (even on 127.0.0.1) or runs a program belongs
in tests/loopback; one that needs root, XDP or network namespaces in
tests/integration.

The tier proves it. Around every phase of every test here (setup, with
fixtures of any scope; call; teardown), creating a socket (socket.socket(),
and so socket.create_connection(), asyncio's create_datagram_endpoint() and
open_connection(), aiohttp's servers and clients) or a socket pair, and
starting a child process (subprocess, os.fork), raise SocketInUnitTier naming
the test. Code under test that catches the error does not hide it: the test
also fails afterwards for every attempt that was refused. The one socket pair
allowed is the wake-up pipe every asyncio event loop makes for itself
(asyncio's _make_self_pipe), which carries no traffic.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest


class SocketInUnitTier(RuntimeError):
    """A unit test opened a socket or started a process. Not an OSError, so that code under test
    handling network errors does not take it for one."""


_REAL = {
    "socket_init": socket.socket.__init__,
    "socketpair": socket.socketpair,
    "execute_child": subprocess.Popen._execute_child,
    "fork": os.fork,
}
_self_pipe = threading.local()


@contextmanager
def no_sockets_or_processes(test: str, refused: list[str]):
    """While inside: a socket, a socket pair (but asyncio's own wake-up pipe) or a child process raises."""

    def refuse(what: str):
        refused.append(what)
        raise SocketInUnitTier(f"{test} {what}: the unit tier opens no sockets and starts no processes "
                               f"(tests/unit/conftest.py); a test that needs them belongs in tests/loopback")

    def guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
        if getattr(_self_pipe, "making", False):  # socketpair() wrapping the loop's own wake-up pipe
            return _REAL["socket_init"](self, family, type, proto, fileno)
        refuse(f"opened a socket (socket.socket(family={family!r}, type={type!r}))")

    def guarded_socketpair(*args, **kwargs):
        caller = sys._getframe(1).f_code
        if caller.co_name == "_make_self_pipe" and f"{os.sep}asyncio{os.sep}" in caller.co_filename:
            _self_pipe.making = True
            try:
                return _REAL["socketpair"](*args, **kwargs)
            finally:
                _self_pipe.making = False
        refuse("opened a socket pair (socket.socketpair())")

    def guarded_execute_child(self, args, *rest, **kwargs):
        refuse(f"started a process ({args!r})")

    def guarded_fork():
        refuse("forked (os.fork())")

    before = (socket.socket.__init__, socket.socketpair, subprocess.Popen._execute_child, os.fork)
    socket.socket.__init__ = guarded_init
    socket.socketpair = guarded_socketpair
    subprocess.Popen._execute_child = guarded_execute_child
    os.fork = guarded_fork
    try:
        yield
    finally:  # what was there before, so that the guard nests (tests/unit/test_unit_tier.py)
        socket.socket.__init__, socket.socketpair, subprocess.Popen._execute_child, os.fork = before


def _guarded(item, phase: str):
    refused: list[str] = []
    with no_sockets_or_processes(item.nodeid, refused):
        result = yield  # re-raises the phase's own failure, if any
    if refused:  # caught and hidden by the code under test: fail anyway
        pytest.fail(f"{item.nodeid} broke the unit tier's rule in {phase}: " + "; ".join(refused), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    yield from _guarded(item, "setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    yield from _guarded(item, "the test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    yield from _guarded(item, "teardown")
