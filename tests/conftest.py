from __future__ import annotations

import pytest

from tests.support import REQUIRE_REAL_SERVERS


def pytest_report_header() -> str:
    return f"FTPSOURCE_REQUIRE_REAL_SERVERS={'1' if REQUIRE_REAL_SERVERS else '0'}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
