"""A PostgreSQL password written into `--state` never reaches an error or the `state` command's
output, however the URL is written: characters that end a URL's user part (`#`, `?`, `/`) inside a
password, an unparseable host, a `password` parameter."""

from __future__ import annotations

import pytest

from ftpsource.cli import main
from ftpsource.store import redact_url

SECRET = "S3CRET"
URLS = [
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}#x@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}?x@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}/x@127.0.0.1:1/db",
    f"postgresql://u:x{SECRET}@x@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}@[::1/db",
    f"postgres://u@127.0.0.1:1/db?sslmode=disable&password={SECRET}",
    f"postgresql://u@127.0.0.1:1/db?PASSWORD={SECRET}",
]


@pytest.mark.parametrize("url", URLS)
def test_redacted_url_holds_no_password(url: str) -> None:
    redacted = redact_url(url)
    assert SECRET not in redacted and redacted.startswith(url.split(":", 1)[0] + "://u")


def test_redacted_url_keeps_what_locates_the_database() -> None:
    assert redact_url("postgresql://u:pw@db.example:5432/state?sslmode=require") == (
        "postgresql://u@db.example:5432/state?sslmode=require"
    )
    assert redact_url("postgresql://db.example/state") == "postgresql://db.example/state"


@pytest.mark.parametrize("url", URLS)
def test_state_command_errors_never_show_the_password(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["state", "list", "--state", url])
    out, err = capsys.readouterr()
    assert rc != 0 and err.strip()
    assert SECRET not in out + err
