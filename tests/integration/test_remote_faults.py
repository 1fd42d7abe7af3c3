"""Remote faults as Argo sees them: through the gRPC stream, with real servers."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc

from tests.support import servers
from tests.support.harness import eventually, open_stream, run_server, stream_to
from tests.support.sources import write_credentials

TIMING = {"stable_for": "300ms", "poll_interval": "300ms"}


def errors(srv: object, kind: str) -> float:
    metric = srv.app.metrics.source_errors  # type: ignore[attr-defined]
    return sum(
        s.value
        for m in metric.collect()
        for s in m.samples
        if s.labels.get("kind") == kind and s.name.endswith("_total")
    )


async def test_wrong_host_key_ends_the_stream_with_a_clear_error(tmp_path: Path) -> None:
    async with servers.asyncssh_server() as ssh, servers.asyncssh_server() as other:
        creds = write_credentials(
            tmp_path,
            "s",
            username=ssh.username,
            password=ssh.password,
            known_hosts=other.known_hosts.read_text().replace(str(other.port), str(ssh.port)),
        )
        async with run_server(tmp_path, credentials_dir=creds) as srv:
            stream = await open_stream(srv.port, {"url": ssh.url(), "credentials": "s", **TIMING})
            assert await stream.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
            assert "host key" in (stream.details or "") and ssh.password not in (stream.details or "")
            await stream.close()
            # A wrong pin is refused the same way.
            write_credentials(tmp_path, "nokh", username=ssh.username, password=ssh.password)
            stream = await open_stream(
                srv.port, {"url": ssh.url(), "credentials": "nokh", "host_key": other.fingerprint, **TIMING}
            )
            assert await stream.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
            assert ssh.fingerprint in (stream.details or "")  # names the key it saw
            await stream.close()
            # A credential set that does not exist is a config error.
            stream = await open_stream(srv.port, {"url": ssh.url(), "credentials": "nosuch", **TIMING})
            assert await stream.wait_end() == grpc.StatusCode.INVALID_ARGUMENT
            assert "nosuch" in (stream.details or "")
            await stream.close()


async def test_no_host_key_is_refused_unless_explicitly_skipped(tmp_path: Path) -> None:
    async with servers.asyncssh_server() as ssh:
        creds = write_credentials(tmp_path, "s", username=ssh.username, password=ssh.password)
        async with run_server(tmp_path, credentials_dir=creds) as srv:
            refused = await open_stream(srv.port, {"url": ssh.url(), "credentials": "s", **TIMING})
            assert await refused.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
            assert "insecure_skip_host_key_check" in (refused.details or "")
            await refused.close()
            (ssh.root / "a").write_bytes(b"1")
            async with stream_to(
                srv.port, {"url": ssh.url(), "credentials": "s", "host_key": ssh.fingerprint, **TIMING}
            ) as pinned:
                assert (await pinned.next())["data"]["path"] == "a"
            async with stream_to(
                srv.port,
                {"url": ssh.url(), "credentials": "s", "id": "skip", "insecure_skip_host_key_check": True, **TIMING},
            ) as skipping:
                assert (await skipping.next())["data"]["path"] == "a"


async def test_connection_refused_keeps_the_stream_and_retries(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    async with run_server(tmp_path) as srv, stream_to(srv.port, {"url": f"ftp://127.0.0.1:{port}/", **TIMING}) as st:
        await eventually(lambda: errors(srv, "connect") >= 1, what="a refused connection to be counted")
        assert not st.ended.is_set()  # transient: retried with backoff, the stream stays open


async def test_silent_server_times_out_instead_of_hanging(tmp_path: Path) -> None:
    async with (
        servers.silent_server() as port,
        run_server(tmp_path) as srv,
        stream_to(srv.port, {"url": f"ftp://127.0.0.1:{port}/", "timeout": "500ms", **TIMING}) as st,
    ):
        await eventually(lambda: errors(srv, "timeout") >= 1, timeout=10, what="a timeout to be counted")
        assert not st.ended.is_set()


async def test_missing_remote_root_ends_the_stream(tmp_path: Path) -> None:
    async with servers.pyftpdlib_server() as ftp:
        creds = write_credentials(tmp_path, "f", username=ftp.username, password=ftp.password)
        async with run_server(tmp_path, credentials_dir=creds) as srv:
            st = await open_stream(srv.port, {"url": ftp.url("no/such/dir"), "credentials": "f", **TIMING})
            assert await st.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no/such/dir" in (st.details or "")
            await st.close()
