"""A real PostgreSQL for the tests: Debian's ``postgresql`` binaries, started by the tests themselves.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` in a temporary directory on a free loopback port, as
an unprivileged system user (``ftpsourcepg``, created when absent) because PostgreSQL refuses to run
as root; when the tests are not root they run it as themselves. Password authentication (SCRAM) is
on, so the tests exercise ``--state-password-file`` and libpq's environment like a deployment.
``fsync`` is off: these clusters hold nothing worth a disk flush, and a crash test kills ftpsource,
not PostgreSQL.

Missing binaries skip the test, or fail it with ``FTPSOURCE_REQUIRE_REAL_SERVERS=1`` (CI).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.support.servers import HOST, free_port, unavailable

__all__ = ["PG_USER", "PgDatabase", "PostgresCluster", "find_bindir", "postgres_cluster"]

PG_USER = "ftpsourcepg"
APP_ROLE = "ftpsource"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb`` and ``pg_ctl``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    override = os.environ.get("FTPSOURCE_PG_BINDIR")
    if override:
        return Path(override)
    return Path(found[-1]).parent if found else None


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        unavailable("useradd is missing; cannot create the PostgreSQL test user")
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        check=False,
        capture_output=True,
    )
    return pwd.getpwnam(PG_USER)  # raced with another run: it exists either way


@dataclass(frozen=True)
class PgDatabase:
    """One database of a cluster, owned by the unprivileged role ``ftpsource``."""

    cluster: PostgresCluster
    name: str
    password_file: Path

    @property
    def url(self) -> str:
        """No password in it: pass ``password_file`` (``--state-password-file``) or set ``PGPASSWORD``."""
        return f"postgresql://{APP_ROLE}@{HOST}:{self.cluster.port}/{self.name}?sslmode=disable"

    @property
    def password(self) -> str:
        return self.cluster.app_password

    def connect(self) -> psycopg.Connection[Any]:
        """A direct connection, for tests that check what the database holds."""
        return psycopg.connect(self.url, password=self.password, autocommit=True)


class PostgresCluster:
    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="ftpsource-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.app_password = "app-" + secrets.token_urlsafe(16)
        self._user: pwd.struct_passwd | None = _ensure_user() if os.geteuid() == 0 else None
        self._databases = 0
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.dir.chmod(0o700)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        return subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, check=check, env={"PATH": "/usr/bin:/bin"}, **kw
        )

    def _write_own(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def init(self) -> None:
        pwfile = self.dir / "admin.password"
        self._write_own(pwfile, self.admin_password + "\n")
        r = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout}{r.stderr}")
        pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -h {HOST} -k {self.dir} -c max_connections=100"
        if not self.durable:  # tests: nothing here is worth a disk flush
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB"
        r = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", options,
            "start", check=False,
        )  # fmt: skip
        if r.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=HOST, port=self.port, user="postgres", password=self.admin_password, dbname=dbname, autocommit=True
        )

    def setup_role(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{self.app_password}'")

    def create_database(self, directory: Path) -> PgDatabase:
        """A fresh, empty database owned by the ``ftpsource`` role; its password file in ``directory``."""
        self._databases += 1
        name = f"t{self._databases}_{secrets.token_hex(3)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        password_file = directory / f"{name}.password"
        password_file.write_text(self.app_password + "\n")
        password_file.chmod(0o600)
        return PgDatabase(self, name, password_file)

    def drop_database(self, db: PgDatabase) -> None:
        with contextlib.suppress(psycopg.Error), self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = False) -> Iterator[PostgresCluster]:
    """A running cluster with the ``ftpsource`` role; removed afterwards. ``durable``: fsync on, as a
    real database runs (benchmarks)."""
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        unavailable("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster(bindir, durable=durable)
    try:
        cluster.init()
        cluster.start()
        cluster.setup_role()
        yield cluster
    finally:
        cluster.destroy()
