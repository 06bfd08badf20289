"""Helpers of the mauthctl tests in both tiers: run it with click's CliRunner, read its one error line,
write secrets files, and keep the machine's and the user's configuration files out of every test."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from mauthclient import api as mapi
from mauthclient import config as mconfig
from mauthclient.cli import main as mauthctl
from mauthcore.protocol.keys import format_key_line
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.udp import serve


def secret(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    """Tests never read the machine's or the user's configuration files (autouse where imported)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(mconfig, "SYSTEM_FILE", str(tmp_path / "etc-mauthctl.toml"))
    for var in ("MAUTHCTL_CONFIG", "MAUTH_SERVER", "MAUTH_ROUTER", "MAUTH_TOKEN_FILE", "MAUTH_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(name="api")
def fake_api(tmp_path, monkeypatch):
    """mauthctl's options for a mauthserver that records every request and answers `api.answer`."""
    calls: list[tuple[str, str, dict | None]] = []

    class Fake:
        answer: object = {}
        error: mapi.ApiError | None = None

    def fake_json(self, method, path, body=None):
        calls.append((method, path, body))
        if Fake.error is not None:
            raise Fake.error
        return Fake.answer

    monkeypatch.setattr(mapi.ApiClient, "_json", fake_json)
    opts = ["--server", "http://127.0.0.1:7580", "--token-file", secret(tmp_path / "api.token", "t" * 40)]
    return Fake, calls, opts


def run(*args, input=None):
    return CliRunner().invoke(mauthctl, [str(a) for a in args], input=input)


def one_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mauthctl: ") and needle in lines[0], result.stderr


@contextmanager
def served(core: ServerCore, host: str, key_dir) -> Iterator[list[str]]:
    """`core` serving the router protocol on `host` (127.0.0.1 or ::1) from a thread, for as long as the
    block runs; yields mauthctl's options to reach it (--router, a key file in `key_dir`, short timeouts)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sock, core, stop), daemon=True)
    thread.start()
    key = secret(key_dir / "router.key", format_key_line(1, bytes(range(32))))
    where = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield ["--router", f"{where}:{sock.getsockname()[1]}", "--key-file", key, "--timeout", "0.05", "--tries", "3"]
    finally:
        stop.set()
        thread.join(5)
        sock.close()
