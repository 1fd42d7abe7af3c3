"""Attacks on the server, as a stream author, the network, a hostile server or an uploader would try
them, through a real gRPC client: each fails with the stated error and leaks nothing."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncssh
import grpc
import pytest

from ftpsource.adapters import adapter_for
from ftpsource.adapters import local as local_adapter
from ftpsource.cli import build_parser, main
from ftpsource.commands.serve import _allow_roots
from ftpsource.config import ServerSettings, parse_source_config
from ftpsource.credentials import Credentials
from ftpsource.errors import ConfigError, FileVanished
from ftpsource.metrics import Metrics
from ftpsource.server import start_server
from tests.support.harness import eventually, open_stream, ready, run_server, stream_to
from tests.support.hostile import BAD_NAMES, alias_bomb, assert_not_leaked
from tests.support.servers import asyncssh_server, counting_listener
from tests.support.sources import write_credentials

FAST = {"stable_for": "300ms", "poll_interval": "5s"}


def metrics_text(port: int | None) -> str:
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


async def refused(port: int, config: dict[str, Any] | str) -> tuple[grpc.StatusCode | None, str]:
    stream = await open_stream(port, config)
    try:
        status = await stream.wait_end(20)
    finally:
        await stream.close()
    return status, stream.details or ""


# --- a stream author ------------------------------------------------------------------------------


async def test_yaml_alias_bomb_is_invalid_argument_quickly_then_a_valid_stream_works(
    tmp_path: Path, root: Path
) -> None:
    async with run_server(tmp_path) as srv:
        t0 = time.monotonic()
        status, details = await refused(srv.port, alias_bomb(9))
        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert time.monotonic() - t0 < 10
        assert "anchors" in details and len(details) < 200
        (root / "a.csv").write_bytes(b"a\n")
        async with stream_to(srv.port, {"url": f"file://{root}", **FAST}) as stream:
            event = await stream.until(ready("a.csv"))
            assert event["data"]["size"] == 2


@pytest.mark.parametrize("scheme", ["ftp", "ftps", "sftp"])
@pytest.mark.parametrize("target", ["other-host", "other-port"])
async def test_credential_set_is_never_sent_to_a_host_its_hosts_file_does_not_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, scheme: str, target: str
) -> None:
    caplog.set_level("DEBUG", logger="ftpsource")
    secret = "pw-" + secrets.token_hex(16)
    creds = write_credentials(
        tmp_path, "sales", hosts="ftp.partner.example\n127.0.0.1:2121\n", username="sales", password=secret
    )
    host = "127.0.0.2" if target == "other-host" else "127.0.0.1"
    async with counting_listener(host) as listener, run_server(tmp_path, credentials_dir=creds) as srv:
        config: dict[str, Any] = {"url": f"{scheme}://{host}:{listener.port}/in", "credentials": "sales"}
        if scheme == "sftp":
            config["insecure_skip_host_key_check"] = True
        status, details = await refused(srv.port, config)
        metrics = metrics_text(srv.metrics_port)
    assert status == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("credentials: set 'sales' may not be sent to") and f"{host}:{listener.port}" in details
    assert listener.accepts == 0
    assert_not_leaked(secret, details=details, logs=caplog.text, metrics=metrics)


async def test_credential_set_without_hosts_file_cannot_be_used(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path, "old", hosts=None, username="u", password="p" * 20)
    async with counting_listener() as listener, run_server(tmp_path, credentials_dir=creds) as srv:
        status, details = await refused(srv.port, {"url": f"ftp://127.0.0.1:{listener.port}/", "credentials": "old"})
    assert status == grpc.StatusCode.PERMISSION_DENIED
    assert "credentials: set 'old' has no hosts file" in details and "add <credentials dir>/old/hosts" in details
    assert listener.accepts == 0


async def test_a_file_url_on_the_credentials_directory_with_a_sidecar_on_the_password_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``url: file:///etc/ftpsource/credentials`` with ``sidecar: "{dir}/password"``, as written."""
    caplog.set_level("DEBUG", logger="ftpsource")
    secret = secrets.token_hex(32)  # what `openssl rand -hex 32` makes
    creds = write_credentials(tmp_path / "etc" / "ftpsource", "sales", username="sales", password=secret)
    data = tmp_path / "data"
    data.mkdir()
    config = {"url": f"file://{creds}", "sidecar": "{dir}/password", "reject_after": "0s", **FAST}
    async with run_server(tmp_path, allow_roots=[data], credentials_dir=creds) as srv:
        status, details = await refused(srv.port, config)
        metrics = metrics_text(srv.metrics_port)
    assert status == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("url: ") and "not inside a root this server allows" in details
    assert_not_leaked(secret, details=details, logs=caplog.text, metrics=metrics)


@pytest.mark.parametrize("secret_bytes", [32, 16])  # `openssl rand -hex 32` (a sha256's length), 16 (md5's)
async def test_sidecar_pointed_at_a_secret_in_an_allowed_root_never_quotes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret_bytes: int
) -> None:
    """The same attack where an operator did allow the directory: the ``rejected`` events say which
    sidecar does not match, never what it holds."""
    caplog.set_level("DEBUG", logger="ftpsource")
    secret = secrets.token_hex(secret_bytes)
    creds = write_credentials(tmp_path / "etc" / "ftpsource", "sales", username="sales", password=secret)
    config = {"url": f"file://{creds}", "sidecar": "{dir}/password", "reject_after": "0s", **FAST}
    async with run_server(tmp_path, allow_roots=[creds]) as srv, stream_to(srv.port, config) as stream:
        rejected = await stream.until(lambda e: e["type"] == "ftpsource.file.rejected")
        await stream.until(lambda e: e["type"] == "ftpsource.file.rejected" and e is not rejected)
        metrics = metrics_text(srv.metrics_port)
    problems = {e["data"]["problem"] for e in stream.received if e["type"] == "ftpsource.file.rejected"}
    algorithm = "sha256" if secret_bytes == 32 else "md5"
    assert f"{algorithm} mismatch with sidecar password: the file does not match it" in problems
    assert_not_leaked(secret, events=json.dumps(stream.received), logs=caplog.text, metrics=metrics)


@pytest.mark.parametrize("how", ["outside", "dotdot", "symlinked", "no-allow-root"])
async def test_file_url_outside_the_allowed_roots_is_permission_denied(tmp_path: Path, how: str) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"secret")
    (allowed / "link").symlink_to(outside)
    url = {
        "outside": f"file://{outside}",
        "dotdot": f"file://{allowed}/../outside",
        "symlinked": f"file://{allowed}/link",
        "no-allow-root": f"file://{allowed}",
    }[how]
    roots = [] if how == "no-allow-root" else [allowed]
    async with run_server(tmp_path, allow_roots=roots) as srv:
        status, details = await refused(srv.port, {"url": url, **FAST})
    assert status == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("url: ")
    assert ("without --allow-root" in details) if how == "no-allow-root" else ("not inside a root" in details)


def test_allow_root_flag_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("FTPSOURCE_ALLOW_ROOTS", f"{a}:{b}")
    assert _allow_roots(build_parser().parse_args(["serve"])) == [str(a), str(b)]
    assert _allow_roots(build_parser().parse_args(["serve", "--allow-root", str(b)])) == [str(b)]
    with pytest.raises(ConfigError, match=r"--allow-root: .* is not a directory"):
        _allow_roots(build_parser().parse_args(["serve", "--allow-root", str(tmp_path / "nope")]))


# --- a malicious uploader -------------------------------------------------------------------------


async def _after_three_polls(srv: Any) -> str:
    """Wait until the server has polled three times; returns its metrics page as it was then."""
    text = ""

    def polled_thrice() -> bool:
        nonlocal text
        text = metrics_text(srv.metrics_port)
        return _polls_ok(text) >= 3

    await eventually(polled_thrice, what="three polls")
    return text


async def _three_polls_then_a_sentinel(srv: Any, root: Path, stream: Any) -> str:
    """Let three polls pass over what is in the root, then wait for a fresh file's event (everything
    polled before it has been decided). Returns the metrics page as it was after the three polls."""
    text = await _after_three_polls(srv)
    (root / "sentinel").write_bytes(b"s")
    await stream.until(ready("sentinel"))
    return text


async def test_symlinks_out_of_the_root_are_neither_read_nor_reported_and_logged_once(
    tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="ftpsource")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = secrets.token_hex(32)
    (outside / "secret.csv").write_text(secret)
    (root / "inside.csv").write_bytes(b"inside\n")
    (root / "out.csv").symlink_to(outside / "secret.csv")
    (root / "outdir").symlink_to(outside)
    (root / "in-link.csv").symlink_to(root / "inside.csv")
    config = {"url": f"file://{root}", "stable_for": "200ms", "poll_interval": "200ms", "checksum": "sha256"}
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        await stream.until_all(ready("inside.csv"), ready("in-link.csv"))  # verified in either order
        text = await _three_polls_then_a_sentinel(srv, root, stream)
    paths = {e["data"]["path"] for e in stream.received}
    assert paths == {"inside.csv", "in-link.csv", "sentinel"}
    outside_logs = [r.getMessage() for r in caplog.records if "outside the source root" in r.getMessage()]
    assert sorted(outside_logs) == sorted(
        [
            "skipping 'out.csv': a symlink to outside the source root",
            "skipping 'outdir': a symlink to outside the source root",
        ]
    )
    assert_not_leaked(secret, events=json.dumps(stream.received), logs=caplog.text, metrics=text)


async def test_a_local_name_that_is_not_utf8_is_skipped_counted_once_and_the_source_keeps_going(
    tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="ftpsource")
    (root / "ok.csv").write_bytes(b"fine\n")
    with open(os.path.join(os.fsencode(root), b"bad-\xff.csv"), "wb") as f:
        f.write(b"any uploader can name a file so")
    config = {"url": f"file://{root}", "stable_for": "200ms", "poll_interval": "200ms"}
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        await stream.until(ready("ok.csv"))
        text = await _three_polls_then_a_sentinel(srv, root, stream)
    assert [e["data"]["path"] for e in stream.received] == ["ok.csv", "sentinel"]
    bad_count = [line for line in text.splitlines() if 'kind="bad_name"' in line and "source_errors_total{" in line]
    assert len(bad_count) == 1 and float(bad_count[0].split()[-1]) == 1
    warnings = [r.getMessage() for r in caplog.records if "skipped an entry whose name" in r.getMessage()]
    assert warnings == ["listing: .: skipped an entry whose name is not UTF-8: 'bad-\\udcff.csv'"]


async def test_a_file_swapped_for_a_link_out_of_the_root_after_listing_is_not_read(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"not yours")
    (root / "a.csv").write_bytes(b"mine")
    config = parse_source_config(f"url: file://{root}")
    async with adapter_for(config, Credentials(), config.policy().path_filter) as src:
        listing = await src.list()
        assert [e.path for e in listing.entries] == ["a.csv"]
        os.unlink(root / "a.csv")
        (root / "a.csv").symlink_to(outside)
        with pytest.raises(FileVanished, match="outside the source root"):
            await src.digest("a.csv", "sha256", None, len(b"not yours"))
        with pytest.raises(FileVanished, match="outside the source root"):
            await src.read_small("a.csv")
        assert await src.stat("a.csv") is None
        assert [e.path for e in (await src.list()).entries] == []


# --- the network ----------------------------------------------------------------------------------


async def test_a_directory_swapped_for_a_link_out_of_the_root_while_listing_is_not_read(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan saw a directory; by the time it is opened it is a link leading out of the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"not yours")
    (root / "sub").mkdir()
    (root / "sub" / "a.csv").write_bytes(b"mine")
    config = parse_source_config(f"url: file://{root}")
    real_open_dir = local_adapter._open_dir

    def swapping_open_dir(path: str) -> Any:
        if path.endswith("/sub") and (root / "sub").is_dir() and not (root / "sub").is_symlink():
            (root / "sub" / "a.csv").unlink()
            (root / "sub").rmdir()
            (root / "sub").symlink_to(outside)
        return real_open_dir(path)

    monkeypatch.setattr(local_adapter, "_open_dir", swapping_open_dir)
    async with adapter_for(config, Credentials(), config.policy().path_filter) as src:
        listing = await src.list()
    assert [e.path for e in listing.entries] == []
    assert listing.unlisted_dirs == ["sub"]  # kept as it was, not read as deleted
    assert any("outside the source root" in w for w in listing.warnings)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.10:8080", "ftpsource.example:8080", ":8080"])
def test_serve_beyond_loopback_without_a_token_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str
) -> None:
    rc = main(["serve", "--listen", listen, "--metrics-listen", "", "--state", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1
    assert "--auth-token-file" in err and "--no-auth" in err and listen in err
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:0", "localhost:0"])
async def test_serve_on_loopback_needs_no_token(tmp_path: Path, listen: str) -> None:
    settings = ServerSettings(listen=listen, metrics_listen=None, state=tmp_path / "s.db")
    try:
        running = await start_server(settings, Metrics())
    except ConfigError as exc:
        assert "--auth-token-file" not in str(exc)  # e.g. no IPv6 here: a bind error, not the token rule
        return
    await running.stop(0.5)


async def test_no_auth_serves_beyond_loopback_on_purpose(tmp_path: Path) -> None:
    settings = ServerSettings(listen="0.0.0.0:0", metrics_listen=None, state=tmp_path / "s.db", no_auth=True)
    running = await start_server(settings, Metrics())
    try:
        assert running.port > 0
    finally:
        await running.stop(0.5)


# --- a malicious FTP/SFTP server ------------------------------------------------------------------


def _lying_listing(path: bytes, names: list[asyncssh.SFTPName]) -> list[asyncssh.SFTPName]:
    """The root's listing, plus every hostile name as a regular file and one as a directory."""
    if path.rstrip(b"/") not in (b"", b"."):
        return names
    now = int(time.time()) - 60

    def fake(name: bytes, mode: int) -> asyncssh.SFTPName:
        attrs = asyncssh.SFTPAttrs(type=None, size=5, permissions=mode, mtime=now, atime=now)
        return asyncssh.SFTPName(name, b"", attrs)

    fakes = [fake(n.encode("utf-8", "surrogatepass"), 0o100644) for n in BAD_NAMES]
    return [*names, *fakes, fake(b"\xff-not-utf8.csv", 0o100644), fake(b"../up", 0o040755)]


async def test_hostile_sftp_server_names_are_skipped_warned_once_counted_never_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="ftpsource")
    async with asyncssh_server(names_hook=_lying_listing) as ssh:
        (ssh.root / "ok.csv").write_bytes(b"fine\n")
        creds = write_credentials(
            tmp_path, "sftp", username=ssh.username, password=ssh.password, known_hosts=ssh.known_hosts.read_text()
        )
        config = {"url": ssh.url(), "credentials": "sftp", "stable_for": "200ms", "poll_interval": "300ms"}
        async with run_server(tmp_path, credentials_dir=creds) as srv, stream_to(srv.port, config) as stream:
            await stream.until(ready("ok.csv"))
            text = await _after_three_polls(srv)
    expected_bad = len(BAD_NAMES) + 2
    assert [e["data"]["path"] for e in stream.received] == ["ok.csv"]
    bad_count = [line for line in text.splitlines() if 'kind="bad_name"' in line and "source_errors_total{" in line]
    assert len(bad_count) == 1 and float(bad_count[0].split()[-1]) == expected_bad
    warnings = [r.getMessage() for r in caplog.records if "skipped an entry whose name" in r.getMessage()]
    assert len(warnings) == expected_bad  # once each, not once per poll
    assert all(len(w) < 200 and "\n" not in w and "\r" not in w for w in warnings)


def _polls_ok(metrics: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("ftpsource_polls_total{") and 'outcome="ok"' in line
    )


@pytest.mark.parametrize("command", ["check", "watch"])
def test_operator_commands_refuse_a_credential_set_without_hosts_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    creds = write_credentials(tmp_path, "old", hosts=None, username="u", password="p" * 20)
    config = tmp_path / "source.yaml"
    config.write_text("url: ftp://127.0.0.1:1/in\ncredentials: old\n")
    rc = main([command, str(config), "--credentials-dir", str(creds), "--state", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "credentials: set 'old' has no hosts file" in err and "p" * 20 not in err
