"""Helpers of the mauthctl tests in both tiers: run it with click's CliRunner, read its one error line,
write secrets files, and keep the machine's and the user's configuration files out of every test."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from mauthclient import config as mconfig
from mauthclient.cli import main as mauthctl


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


def run(*args, input=None):
    return CliRunner().invoke(mauthctl, [str(a) for a in args], input=input)


def one_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mauthctl: ") and needle in lines[0], result.stderr
