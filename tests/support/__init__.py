"""Helpers and servers the tests share: the in-process gRPC harness, real FTP/SFTP servers, sources."""

from __future__ import annotations

import os

#: Set in CI: a missing server binary or tool fails the test instead of skipping it.
REQUIRE_REAL_SERVERS = os.environ.get("FTPSOURCE_REQUIRE_REAL_SERVERS") == "1"
