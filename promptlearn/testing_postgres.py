"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl on 127.0.0.1, a free port, a temp dir.

Debian's server binaries (the `postgresql` package, /usr/lib/postgresql/N/bin). PostgreSQL refuses to run as
root, so as root the cluster runs as the unprivileged `postgres` user (runuser), its data dir owned by it.
Roles: `postgres` (superuser, trusted from 127.0.0.1) and `alice` with password `PASSWORD` (scram), for the
password tests. `stop()` / `start()` let a test take the server away in the middle of a run and bring it back.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "s3cret-Pa55word"


def find_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (newest Debian version first, then PATH), or None."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "pg_ctl")):
            return Path(d)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster in a temp dir; `url(db, user)` gives a connection URL. Use as a context manager."""

    def __init__(self, bindir: Path | None = None):
        found = bindir or find_bin()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin: Path = found
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="promptlearn-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.user = "postgres" if os.geteuid() == 0 else None  # run as this user; None: as ourselves

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120,
                              cwd=self.root)

    def __enter__(self) -> "PostgresServer":
        self.sockets.mkdir(parents=True)
        if self.user:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, self.user)
            shutil.chown(self.sockets, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all all trust\n"
                       "host all postgres 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self.sql("CREATE ROLE alice LOGIN PASSWORD '%s'" % PASSWORD)
        self.sql("CREATE DATABASE promptlearn OWNER alice")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            conn.execute(statement)

    def url(self, db: str = "promptlearn", user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def fresh_db(self, name: str) -> str:
        """A new empty database (owned by alice), for a test that must not see other tests' runs."""
        self.sql(f'CREATE DATABASE "{name}" OWNER alice')
        return self.url(name)

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop("immediate")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
