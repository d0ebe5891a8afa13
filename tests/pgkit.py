"""A real PostgreSQL server for tests: initdb and pg_ctl from the `postgresql` Debian package,
in a temp folder, as an unprivileged user, on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root: when the tests run as root (CI containers), the server
runs as the `postgres` user the Debian package creates, through runuser. Clients connect
over TCP with a password (scram-sha-256), as `sorterd archive` does at a hub; the
superuser connects over the server's private socket folder, where local trust applies.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from drivers.broker import free_port

__all__ = ["ROLE", "ROLE_PASSWORD", "PgServer", "pg_bin", "pg_missing"]

ROLE = "sorterd"
ROLE_PASSWORD = "s3cret-archive-pw"  # a test server's, on 127.0.0.1 only


def pg_bin() -> Path | None:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def pg_missing() -> str | None:
    """Why no test server can run here, or None (tests/conftest.py REQUIREMENTS)."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (Debian package postgresql: initdb, pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root, and runuser is missing"
    return None


class PgServer:
    """One server in its own folder; `start`/`stop` may be called again (outage tests).
    `folder`: where its data lives (kept: benchmarks/archive.py's cache), else a temp one."""

    def __init__(self, folder: Path | None = None) -> None:
        bin_dir = pg_bin()
        assert bin_dir is not None, pg_missing()
        self.bin = bin_dir
        self.port = free_port()
        self.folder = folder if folder is not None else Path(tempfile.mkdtemp(prefix="sorterd-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "run"
        self.log = self.folder / "server.log"
        self._as_root = os.geteuid() == 0
        self._databases = 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{log}")

    def init(self) -> None:
        self.sockets.mkdir()
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chmod(self.folder, 0o755)
            for path in (self.folder, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pw_file = self.folder / "pw"
        pw_file.write_text("postgres-superuser\n")
        if self._as_root:
            os.chown(pw_file, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", f"--pwfile={pw_file}", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def create_role(self) -> None:
        with self.superuser() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")

    def new_database(self) -> str:
        """An empty database owned by ROLE; its URL (without the password)."""
        self._databases += 1
        name = f"archive{self._databases}"
        with self.superuser() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    def cleanup(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    """A server started with the role ROLE; stopped and its folder removed after."""
    server = PgServer()
    try:
        server.init()
        server.start()
        server.create_role()
        yield server
    finally:
        server.cleanup()
