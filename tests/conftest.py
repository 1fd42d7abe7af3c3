from __future__ import annotations

import os

# gRPC's fork handlers run in a child forked while gRPC threads are busy (a keepalive ping, say) and
# can crash it before it execs: subprocess.run(..., user=...) forks rather than spawns, and pg_ctl
# died of SIGSEGV that way. The tests never use gRPC in a forked child, so they are off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REQUIRE_REAL_SERVERS
from tests.support.postgres import PgDatabase, PostgresCluster, postgres_cluster


def pytest_report_header() -> str:
    return f"FTPSOURCE_REQUIRE_REAL_SERVERS={'1' if REQUIRE_REAL_SERVERS else '0'}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL for the whole run, started on first use."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_db(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[PgDatabase]:
    """A fresh database per test."""
    db = pg_cluster.create_database(tmp_path)
    try:
        yield db
    finally:
        pg_cluster.drop_database(db)
