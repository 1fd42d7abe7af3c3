from __future__ import annotations

import os

import pytest

REQUIRE_REAL_SERVERS = os.environ.get("FTPSOURCE_REQUIRE_REAL_SERVERS") == "1"


def pytest_report_header() -> str:
    return f"FTPSOURCE_REQUIRE_REAL_SERVERS={'1' if REQUIRE_REAL_SERVERS else '0'}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
