"""The daemon shell: an unexpected exception anywhere stops it with exit status 1; start-up errors are one sentence."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from mauthserver.config import Options
from mauthserver.daemon import Daemon, StartupError


def options(tmp_path, **kw) -> Options:
    return Options(db=str(tmp_path / "m.db"), api=("127.0.0.1", 0), sap=False, listen=None, **kw)


def test_an_unexpected_exception_in_a_task_stops_the_daemon_with_1(tmp_path, monkeypatch):
    daemon = Daemon(options(tmp_path), "t" * 20, None)

    async def broken(self):  # its first step runs once the daemon is up and waits to be stopped
        raise RuntimeError("a bug")

    monkeypatch.setattr(Daemon, "_housekeeping", broken)
    assert asyncio.run(asyncio.wait_for(daemon.run(), 10)) == 1
    assert daemon.store is not None and daemon.store._lock_fd == -1  # closed on the way out


def test_a_busy_port_is_a_startup_error(tmp_path):
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        daemon = Daemon(options(tmp_path, **{}), "t" * 20, None)
        daemon.opts.listen = ("127.0.0.1", port)
        with pytest.raises(StartupError, match=f"cannot listen for the router protocol on 127.0.0.1:{port}"):
            asyncio.run(daemon.run())
    finally:
        busy.close()
    assert os.path.exists(tmp_path / "m.db")


def test_max_sessions_bounds_the_directory_and_its_bytes(tmp_path, monkeypatch):
    from sap.directory import DEFAULT_MAX_BYTES

    seen = {}

    async def stop_at_once(self):
        seen["directory"] = self.mediator.directory
        self.fatal()

    monkeypatch.setattr(Daemon, "_housekeeping", stop_at_once)
    for n, max_bytes in [(2000, DEFAULT_MAX_BYTES), (10, DEFAULT_MAX_BYTES), (20000, 10 * DEFAULT_MAX_BYTES)]:
        daemon = Daemon(options(tmp_path, max_sessions=n), "t" * 20, None)
        asyncio.run(asyncio.wait_for(daemon.run(), 10))
        d = seen.pop("directory")
        assert (d.max_sessions, d.max_bytes) == (n, max_bytes)
