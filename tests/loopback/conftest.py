"""The loopback tier: real sockets on the loopback interface, and child processes; no root.

The tests here run mauth's real network code against itself on 127.0.0.1 and
::1: the router protocol over UDP (client, server core, mauthserver's
fan-out), mauthserver's HTTP API and event stream with mauthctl and the
dashboard as its clients (tests/support/loopback_fleet.py), the Prometheus
endpoints, the daemons' start-up; and `make install` into a temporary tree
with `systemd-analyze verify` over it. Nothing leaves the machine, nothing
needs root, XDP or a network namespace (that is tests/integration).
Everything that needs neither sockets nor processes is in tests/unit, which
refuses them.

mauthserver's PostgreSQL back end is tested here against a real server of
the session's own (`postgres`, tests/support/postgres.py: Unix socket only,
in a temporary directory), each test in a fresh database (`pg_db`).
"""

from __future__ import annotations

import pytest

from tests.support.postgres import PostgresServer, running


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/support/postgres.py), removed at the end."""
    with running() as server:
        yield server


@pytest.fixture
def pg_db(postgres: PostgresServer):
    """A fresh database of its own for one test: its name (postgres.url(name) is its --db URL)."""
    name = postgres.new_database()
    yield name
    postgres.drop_database(name)
