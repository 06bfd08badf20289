"""A real PostgreSQL server for the loopback tests, private to one test session.

Strategy: Debian's own binaries (/usr/lib/postgresql/<version>/bin, the
newest found there; the `postgresql` package of scripts/setup.sh) make a
cluster in a temporary directory (`initdb`) and run it (`pg_ctl`) with no TCP
listener at all (`listen_addresses=''`): its only socket is a Unix socket in
that directory. initdb refuses to run as root, so as root every server
command runs as Debian's `postgres` user (`runuser`), on a directory that
user owns; as any other user, as that user. fsync stays on: the server is
the one mauthserver would use. `stop()` is `pg_ctl stop -m immediate` and
removes the directory; `running()` does it on the way out, failures too.

Authentication: the superuser `postgres` connects without a password over
the socket (trust), every other role with one (scram-sha-256), so that the
tests of --db-password-file and PGPASSFILE meet a server that wants it.
Each test gets a database of its own (`new_database`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def bin_dir() -> Path:
    """Debian's PostgreSQL binaries, of the newest version installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql (scripts/setup.sh installs Debian's"
                           " postgresql package)")
    return Path(found[-1]).parent


class PostgresServer:
    """One cluster in a temporary directory, reached at its Unix socket."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        """`base`: the directory to make the cluster's directory in (default the temporary directory,
        /tmp; bench/control.py gives /dev/shm). Keep it short: the socket's path is at most 107 bytes,
        and as root the `postgres` user must be able to reach it."""
        self.bin = bin_dir()
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="mauth-pg-", dir=base))  # default directly under /tmp: a short path
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.started = False
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, check=False, timeout=120)

    def _checked(self, *args: str) -> None:
        done = self._run(*args)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()} {log}")

    def start(self) -> None:
        self._checked(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--encoding=UTF8",
                      "--locale=C", "--auth-local=trust", "--auth-host=reject")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.dir}'\n"
                       "shared_buffers = 16MB\nmax_connections = 60\nfsync = on\n")
        with open(self.data / "pg_hba.conf", "w") as hba:
            hba.write("local all postgres trust\nlocal all all scram-sha-256\n")
        self._checked(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                      "start")
        self.started = True

    def stop(self) -> None:
        try:
            if self.started:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate", "-w")
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- using it ------------------------------------------------------------------

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """The URL mauthserver's --db would be given (no password: none is needed, or it comes from a file)."""
        return f"postgresql:///{dbname}?host={self.dir}&user={user}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection in autocommit mode (the caller closes it)."""
        return psycopg.connect(host=str(self.dir), dbname=dbname, user="postgres", autocommit=True)

    def new_database(self) -> str:
        """A new, empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def running(base: str | os.PathLike[str] | None = None) -> Iterator[PostgresServer]:
    """A server for the time of the block, stopped and removed afterwards whatever happened."""
    server = PostgresServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
