"""A real PostgreSQL 15 per test or session: a free loopback port, password (scram) auth, bounded waits.

Postgres refuses to run as root, and CI runs as root: the server and initdb then run as the
``postgres`` user, in folders it owns below a world-traversable temporary folder (pytest's tmp
folders are 0700 root). One cluster is initialised per session (initdb costs seconds) and copied
for every server. ``fsync=off``: a killed server loses nothing the OS already holds, and the tests
never cut power, so flushing every commit would only make them slower.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from functools import cache
from pathlib import Path

from support import HOST, accepts, free_port, wait

BIN = Path(os.environ.get("EDGE_SDK_PG_BIN", "/usr/lib/postgresql/15/bin"))
MISSING = (None if all((BIN / name).exists() for name in ("initdb", "postgres"))
           else f"PostgreSQL 15 is not installed ({BIN}/postgres missing; .ci/run installs Debian's postgresql)")

SUPERUSER, SUPER_PASSWORD = "postgres", "super-Secret-9"
USER, PASSWORD, DATABASE = "ingest", "ingest-Pa55word-7", "fleet"


def _as_postgres() -> dict:
    """Popen arguments that run a child as the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _scratch(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)  # postgres must traverse it
    return folder


@cache
def template() -> Path:
    """One initialised cluster per session, with the ``ingest`` user and its ``fleet`` database."""
    root = _scratch("edge-sdk-pg-template-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "pwfile").write_text(SUPER_PASSWORD + "\n")
    _own(root)
    data = root / "data"
    subprocess.run(
        [str(BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(root / "pwfile"),
         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True, timeout=120, cwd=root, **_as_postgres(),
    )
    with Postgres(data=data) as server:
        server.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", f"CREATE DATABASE {DATABASE} OWNER {USER}")
    return data


class Postgres:
    """One server on its own port, restartable on the same port with the same data.

    ``url()`` is the ``ingest`` user's URL to its ``fleet`` database, with the password in it or not.
    """

    def __init__(self, *, data: Path | None = None, fsync: bool = False) -> None:
        if MISSING:
            raise RuntimeError(MISSING)
        self.folder = _scratch("edge-sdk-pg-")
        if data is None:
            data = self.folder / "data"
            shutil.copytree(template(), data)
        _own(self.folder)  # the data, and the socket's lock file postgres writes here
        self.data = data
        self.fsync = fsync
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = self.folder / "postgres.log"

    def url(self, *, password: bool = True, database: str = DATABASE, user: str = USER, secret: str = PASSWORD) -> str:
        auth = f"{user}:{secret}" if password else user
        return f"postgresql://{auth}@{HOST}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Postgres:
        if self.running:
            return self
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
             "-c", f"listen_addresses={HOST}", "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", f"full_page_writes={'on' if self.fsync else 'off'}",
             "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True, **_as_postgres(),
        )
        log.close()
        wait(lambda: self.ready() or not self.running, 30, step=0.05)
        if not self.ready():
            raise RuntimeError(f"postgres did not start on port {self.port}:\n{self.log()[-3000:]}")
        return self

    def ready(self) -> bool:
        """Accepting connections and past recovery (a port that answers may still say 'starting up')."""
        if not accepts(self.port):
            return False
        try:
            self.sql("SELECT 1")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, the data is checkpointed."""
        if self.running:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)
        wait(lambda: not accepts(self.port), 10)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend, as a crash or an OOM killer would."""
        if not self.running:
            return
        os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the backends go with it
        self.process.wait(10)
        wait(lambda: not accepts(self.port), 10)

    def restart(self) -> Postgres:
        self.stop()
        return self.start()

    def sql(self, *statements: str, database: str = "postgres") -> list:
        """Runs statements as the superuser (autocommit); the rows of the last one."""
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, password=SUPER_PASSWORD, dbname=database,
                             autocommit=True, connect_timeout=5) as conn:
            rows: list = []
            for statement in statements:
                cur = conn.execute(statement)
                rows = cur.fetchall() if cur.description else []
            return rows

    def new_database(self) -> str:
        """A fresh empty database owned by ``ingest``; its URL (with the password)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(database=name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
