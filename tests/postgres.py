"""A throw-away PostgreSQL 15 cluster for tests: initdb in a temp dir, a free port, removed after.

The store's PostgreSQL backend is tested against a real server, not a mock. This helper finds
Debian's ``postgresql-15`` binaries (``pg_config --bindir``, else ``/usr/lib/postgresql/15/bin``),
runs ``initdb`` and ``pg_ctl`` as an unprivileged user when the tests run as root (PostgreSQL
refuses to run as root), with the data directory in a temp dir that user owns, listens on
127.0.0.1 only with trust authentication, and hands out a fresh database per test::

    with Cluster() as cluster:
        url = cluster.new_database()    # postgresql://rlaif@127.0.0.1:PORT/t1

Nothing is installed here: a missing server raises ``PostgresMissing`` naming the package
(scripts/test.sh installs it), so a test fails rather than skips.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "rlaif"
FALLBACK_BINDIR = Path("/usr/lib/postgresql/15/bin")
UNPRIVILEGED = "nobody"


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def bindir() -> Path:
    """The folder holding initdb and pg_ctl."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                    check=True).stdout.strip())
        if (found / "initdb").is_file():
            return found
    if (FALLBACK_BINDIR / "initdb").is_file():
        return FALLBACK_BINDIR
    raise PostgresMissing("PostgreSQL 15 is not installed: apt-get install -y postgresql-15 "
                          "(scripts/test.sh does this)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A running PostgreSQL cluster of its own, stopped and deleted on exit."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="rlaif-pg-"))
        self.port = free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.root, pwd.getpwnam(UNPRIVILEGED).pw_uid, -1)
            self._as = ["runuser", "-u", UNPRIVILEGED, "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def __enter__(self) -> Cluster:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options,
                  "-l", str(self.root / "log"), "-w", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                      "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
