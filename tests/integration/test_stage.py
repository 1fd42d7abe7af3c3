"""``stage``: the bytes read for hashing land in object storage (moto's S3 server on loopback), and the
ready event carries where; through a real gRPC client."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ftpsource import stage
from ftpsource.core.stage import DEFAULT_KEY, StageTarget
from ftpsource.credentials import Credentials, Secret
from ftpsource.stage import Stager
from tests.support import servers
from tests.support.files import put
from tests.support.harness import Proxy, eventually, ready, ready_events, run_server, stream_to
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, S3Server, moto_s3
from tests.support.sources import source_under_test, write_credentials

BUCKET = "etl-raw"


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with moto_s3(BUCKET) as server:
        yield server


def _creds(tmp: Path, endpoint: str) -> Path:
    host = endpoint.removeprefix("http://")
    return write_credentials(
        tmp, "minio", access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint=endpoint, hosts=f"{host}\n"
    )


def _config(root: Path, **kw: Any) -> dict[str, Any]:
    return {
        "url": f"file://{root}",
        "id": "landing",
        "stable_for": "300ms",
        "poll_interval": "300ms",
        "stage": {"url": f"s3://{BUCKET}/landing", "credentials": "minio"},
        **kw,
    }


async def test_staged_object_holds_the_reported_bytes_once(tmp_path: Path, root: Path, s3: S3Server) -> None:
    big = os.urandom(9 * 1024 * 1024 + 123)  # more than one part: a multipart upload
    async with (
        run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
        stream_to(srv.port, _config(root)) as stream,
    ):
        put(root, "big.bin", big)
        event = await stream.until(ready("big.bin"))
        staged, checksum = event["data"]["staged"], event["data"]["checksum"]["value"]
        assert checksum == hashlib.sha256(big).hexdigest()
        assert staged == {
            "url": f"s3://{BUCKET}/landing/sha256/{checksum}",
            "bucket": BUCKET,
            "key": f"landing/sha256/{checksum}",
            "size": len(big),
            "sha256": checksum,
        }
        landed = s3.objects(BUCKET)
        assert list(landed) == [staged["key"]]
        assert hashlib.sha256(landed[staged["key"]]).hexdigest() == checksum
        head = s3.client.head_object(Bucket=BUCKET, Key=staged["key"])
        assert head["Metadata"]["sha256"] == checksum
        # A local file is hashed first, so its bytes went straight to the final key: no temporary
        # object, no copy, one multipart upload of two parts.
        writes = [r for r in s3.requests if r.writes]
        assert {r.key for r in writes} == {staged["key"]}
        assert [r for r in s3.requests if r.copy_source is not None] == []
        assert sum(r.method == "POST" and r.query == "uploads" for r in writes) == 1
        assert sum(r.method == "PUT" for r in writes) == 2
        # Each body is checked by the server against its Content-MD5 (computed off the event loop); the
        # signature does not hash the body again (botocore would do that on the loop).
        sent = [r for r in writes if r.method == "PUT"]
        assert sent and all(r.content_md5 and r.content_sha256 == "UNSIGNED-PAYLOAD" for r in sent)
        # Every other body stays signed: the list of parts that completes the upload cannot be changed
        # on the way (a part dropped from it).
        (complete,) = [r for r in writes if r.method == "POST" and "uploadId" in r.query]
        assert complete.body_size and len(complete.content_sha256 or "") == 64
        seen = len(s3.requests)

        # The same bytes under another name: the same object, not uploaded again; a small file: one PUT.
        put(root, "copy/of-big.bin", big)
        put(root, "small.csv", b"a,b\n1,2\n")
        again, small = await ready_events(stream, "copy/of-big.bin", "small.csv")
        assert again["data"]["staged"]["key"] == staged["key"]
        assert [r.key for r in s3.requests[seen:] if r.writes] == [small["data"]["staged"]["key"]]
        assert [r.content_md5 is not None for r in s3.requests[seen:] if r.method == "PUT"] == [True]
        assert s3.client.get_object(Bucket=BUCKET, Key=small["data"]["staged"]["key"])["Body"].read() == b"a,b\n1,2\n"
        assert sorted(s3.objects(BUCKET)) == sorted([staged["key"], small["data"]["staged"]["key"]])
        assert s3.multipart_uploads(BUCKET) == []
        assert SECRET_KEY not in str(stream.received)


@pytest.mark.parametrize(("kind", "copied"), [("ftp-proftpd", False), ("ftp-pyftpdlib", True)])
async def test_a_server_hash_makes_the_key_known_before_downloading(
    tmp_path: Path, s3: S3Server, kind: str, copied: bool
) -> None:
    """proftpd hashes on the server: one download straight to the content-addressed key, and none of the
    same bytes under another name. pyftpdlib cannot: one download to a temporary key, then a copy."""
    async with source_under_test(kind, tmp_path) as source:
        config = source.config(
            id="landing", stable_for="300ms", poll_interval="300ms", stage=_config(source.root)["stage"]
        )
        async with (
            run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
            stream_to(srv.port, config) as stream,
        ):
            big = os.urandom(9 * 1024 * 1024)
            put(source.root, "big.bin", big)
            event = await stream.until(ready("big.bin"))
            key = event["data"]["staged"]["key"]
            assert key == f"landing/sha256/{hashlib.sha256(big).hexdigest()}"
            assert s3.objects(BUCKET) == {key: big}
            assert any(r.copy_source is not None for r in s3.requests) is copied
            assert any(r.key.startswith("landing/.ftpsource-incoming/") for r in s3.requests) is copied
            seen = len(s3.requests)
            put(source.root, "again.bin", big)
            again = await stream.until(ready("again.bin"))
            assert again["data"]["staged"]["key"] == key
            uploaded_again = [r for r in s3.requests[seen:] if r.writes]
            assert (uploaded_again == []) is not copied  # without a server hash: found held only at the end
            assert s3.objects(BUCKET) == {key: big} and s3.multipart_uploads(BUCKET) == []


@pytest.mark.parametrize("claim", ["an object the bucket holds", "bytes nobody has"])
async def test_a_server_hash_that_is_not_its_bytes_never_names_an_object_in_an_event(
    tmp_path: Path, s3: S3Server, claim: str
) -> None:
    """A server answers XSHA256 with a digest that is not its file's: the hash of another object in the
    bucket (say, another source's file, whose key is its digest), or of nothing at all. The event must
    name the object holding the bytes the server sent, and the version must still be reported."""
    theirs = os.urandom(4096)
    theirs_sha = hashlib.sha256(theirs).hexdigest()
    theirs_key = f"landing/sha256/{theirs_sha}"
    s3.client.put_object(Bucket=BUCKET, Key=theirs_key, Body=theirs, Metadata={"sha256": theirs_sha})
    claimed = theirs_sha if claim == "an object the bucket holds" else hashlib.sha256(b"nothing").hexdigest()
    ours = os.urandom(len(theirs))  # the same size, so that only the digest tells them apart
    ours_sha = hashlib.sha256(ours).hexdigest()

    def xsha256(path: str) -> str:
        return claimed if path.endswith("/liar.bin") else hashlib.sha256(Path(path).read_bytes()).hexdigest()

    async with servers.pyftpdlib_server(xsha256=xsha256) as ftp:
        creds = write_credentials(tmp_path, "ftp", username=ftp.username, password=ftp.password)
        _creds(tmp_path, s3.endpoint)
        config = {
            "url": ftp.url(),
            "credentials": "ftp",
            "id": "landing",
            "stable_for": "300ms",
            "poll_interval": "300ms",
            "stage": _config(ftp.root)["stage"],
        }
        async with run_server(tmp_path, credentials_dir=creds) as srv, stream_to(srv.port, config) as stream:
            put(ftp.root, "liar.bin", ours)
            event = await stream.until(ready("liar.bin"))
    data = event["data"]
    assert data["checksum"]["value"] == ours_sha
    assert data["staged"]["key"] == f"landing/sha256/{ours_sha}" and data["staged"]["sha256"] == ours_sha
    assert s3.objects(BUCKET)[data["staged"]["key"]] == ours
    assert s3.objects(BUCKET)[theirs_key] == theirs


async def test_key_template_and_sha256_required(tmp_path: Path, root: Path, s3: S3Server) -> None:
    stage = {"url": f"s3://{BUCKET}/in", "credentials": "minio", "key": "{source_id}/{path}/g{generation}"}
    async with (
        run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
        stream_to(srv.port, _config(root, stage=stage)) as stream,
    ):
        put(root, "d/a.csv", b"v1")
        first = await stream.until(ready("d/a.csv"))
        assert first["data"]["staged"]["key"] == "in/landing/d/a.csv/g1"
        put(root, "d/a.csv", b"v2 bytes", mtime=time.time() + 5)
        second = await stream.until(ready("d/a.csv"))
        assert second["data"]["staged"]["key"] == "in/landing/d/a.csv/g2"
        assert s3.objects(BUCKET) == {"in/landing/d/a.csv/g1": b"v1", "in/landing/d/a.csv/g2": b"v2 bytes"}
        # Past one part, a key known before reading takes the multipart upload directly: no copy.
        big = os.urandom(9 * 1024 * 1024)
        put(root, "big.bin", big)
        third = await stream.until(ready("big.bin"))
        assert third["data"]["staged"]["key"] == "in/landing/big.bin/g1"
        landed = s3.objects(BUCKET)
        assert landed["in/landing/big.bin/g1"] == big and len(landed) == 3  # nothing under .ftpsource-incoming
        assert s3.multipart_uploads(BUCKET) == []
    async with run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv:
        bad = await _first_error(srv.port, _config(root, checksum="md5"))
        assert "stage: needs `checksum: sha256`" in bad


async def _first_error(port: int, config: dict[str, Any]) -> str:
    async with stream_to(port, config) as stream:
        await stream.wait_end()
        return stream.details or ""


async def test_a_file_changed_while_staged_leaves_nothing(tmp_path: Path, root: Path, s3: S3Server) -> None:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = await Proxy.start(host, int(port))
    config = _config(root, stable_for="2s")
    try:
        async with (
            run_server(tmp_path, credentials_dir=_creds(tmp_path, f"http://127.0.0.1:{proxy.port}")) as srv,
            stream_to(srv.port, config) as stream,
        ):
            proxy.freeze()  # staging stalls between the read that hashes and the read that uploads
            put(root, "grow.bin", os.urandom(20 * 1024 * 1024), mtime=time.time() - 60)
            await eventually(lambda: bool(proxy.conns), 30, "staging to start")
            with (root / "grow.bin").open("ab") as f:
                f.write(b"more bytes after the read began")
            proxy.restore()
            # The read sees the change: the multipart upload is aborted and no event is made.
            await eventually(lambda: s3.multipart_uploads(BUCKET) == [] and s3.objects(BUCKET) == {}, 1.5, "the abort")
            assert stream.received == []
            # The new version is staged once it is stable, and only it.
            event = await stream.until(ready("grow.bin"))
            final = (root / "grow.bin").read_bytes()
            assert event["data"]["checksum"]["value"] == hashlib.sha256(final).hexdigest()
            assert list(s3.objects(BUCKET).values()) == [final]
            assert len(stream.received) == 1
    finally:
        await proxy.close()


async def test_a_file_rewritten_between_hashing_and_uploading_leaves_nothing(
    tmp_path: Path, root: Path, s3: S3Server
) -> None:
    """A local file is read twice (hash, then upload to the content-addressed key): other bytes the
    second time, even at the same size and mtime, abort the upload, and the version waits to be stable."""
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = await Proxy.start(host, int(port))
    try:
        async with (
            run_server(tmp_path, credentials_dir=_creds(tmp_path, f"http://127.0.0.1:{proxy.port}")) as srv,
            stream_to(srv.port, _config(root, stable_for="2s")) as stream,
        ):
            proxy.freeze()  # the look for an object holding the hashed bytes stalls
            first, second = os.urandom(9 * 1024 * 1024), os.urandom(9 * 1024 * 1024)
            mtime = time.time() - 60
            put(root, "same.bin", first, mtime=mtime)
            await eventually(lambda: bool(proxy.conns), 30, "the hash read to end")
            put(root, "same.bin", second, mtime=mtime)
            proxy.restore()
            first_key = f"landing/sha256/{hashlib.sha256(first).hexdigest()}"
            await eventually(
                lambda: any(r.method == "DELETE" and "uploadId" in r.query and r.key == first_key for r in s3.requests),
                10,
                "the direct upload to be aborted",
            )
            assert s3.multipart_uploads(BUCKET) == [] and s3.objects(BUCKET) == {}
            assert stream.received == []
            # Pending again, as for any change while read: staged once stable, under its own digest.
            event = await stream.until(ready("same.bin"))
            checksum = hashlib.sha256(second).hexdigest()
            assert event["data"]["checksum"]["value"] == checksum
            assert s3.objects(BUCKET) == {f"landing/sha256/{checksum}": second}
            assert [r for r in s3.requests if r.copy_source is not None] == []
            assert len(stream.received) == 1
    finally:
        await proxy.close()


async def test_storage_down_the_event_waits_then_arrives_once(tmp_path: Path, root: Path, s3: S3Server) -> None:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = await Proxy.start(host, int(port))
    try:
        async with (
            run_server(tmp_path, credentials_dir=_creds(tmp_path, f"http://127.0.0.1:{proxy.port}")) as srv,
            stream_to(srv.port, _config(root)) as stream,
        ):
            await proxy.cut()
            put(root, "a.csv", b"while the store was down")
            await eventually(
                lambda: (
                    (
                        srv.app.metrics.registry.get_sample_value(
                            "ftpsource_source_errors_total", {"source": "landing", "kind": "stage"}
                        )
                        or 0
                    )
                    >= 1
                ),
                20,
                "a staging failure",
            )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stream.events.get(), 1.0)
            proxy.restore()
            event = await stream.until(ready("a.csv"))
            assert s3.client.get_object(Bucket=BUCKET, Key=event["data"]["staged"]["key"])["Body"].read() == (
                b"while the store was down"
            )
            put(root, "sentinel", b"s")
            await stream.until(ready("sentinel"))
            assert [e["subject"] for e in stream.received] == ["a.csv", "sentinel"]
    finally:
        await proxy.close()


@pytest.mark.parametrize("size", [9 * 1024 * 1024 + 5, 1000], ids=["a part", "a small file's one PUT"])
async def test_bytes_corrupted_on_the_way_are_refused_and_sent_again(
    tmp_path: Path, root: Path, s3: S3Server, size: int
) -> None:
    data = os.urandom(size)
    s3.corrupt_next_body(min(size, 1024 * 1024))
    async with (
        run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
        stream_to(srv.port, _config(root)) as stream,
    ):
        put(root, "data.bin", data)
        event = await stream.until(ready("data.bin"))
        key = event["data"]["staged"]["key"]
        assert s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
        assert s3.corrupt == []  # a body was corrupted, and refused: the bytes above were sent again
        assert [e["subject"] for e in stream.received] == ["data.bin"]
        errors = srv.app.metrics.registry.get_sample_value(
            "ftpsource_source_errors_total", {"source": "landing", "kind": "stage"}
        )
        assert errors == 1
        assert s3.multipart_uploads(BUCKET) == []


async def test_stage_credentials_go_only_to_listed_hosts(tmp_path: Path, root: Path, s3: S3Server) -> None:
    creds = write_credentials(
        tmp_path, "minio", access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint=s3.endpoint, hosts="minio.example\n"
    )
    async with run_server(tmp_path, credentials_dir=creds) as srv, stream_to(srv.port, _config(root)) as stream:
        assert await stream.wait_end() is grpc.StatusCode.PERMISSION_DENIED
        assert "may not be sent to" in (stream.details or "") and SECRET_KEY not in (stream.details or "")
    (creds / "minio" / "secret_key").unlink()
    async with run_server(tmp_path, credentials_dir=creds) as srv, stream_to(srv.port, _config(root)) as stream:
        assert await stream.wait_end() is grpc.StatusCode.INVALID_ARGUMENT
        assert "has no secret_key" in (stream.details or "")


def _most_uploads_open(requests: list[Any]) -> int:
    """The most multipart uploads open at once, from the order the server got their requests in."""
    open_now = most = 0
    for r in requests:
        if r.method == "POST" and r.query.startswith("uploads"):
            open_now += 1
            most = max(most, open_now)
        elif (r.method == "POST" or r.method == "DELETE") and "uploadId=" in r.query:
            open_now -= 1
    return most


async def test_a_burst_of_big_files_goes_up_two_uploads_at_a_time(tmp_path: Path, root: Path, s3: S3Server) -> None:
    # Each multipart upload holds up to six parts in memory: a local directory verifies eight files at
    # once, but uploads only two of those bigger than a part.
    files = {f"big{i}.bin": os.urandom(9 * 1024 * 1024) for i in range(6)}
    async with (
        run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
        stream_to(srv.port, _config(root)) as stream,
    ):
        for name, data in files.items():
            put(root, name, data, mtime=time.time() - 60)
        events = await ready_events(stream, *files, timeout=120)
    assert [e["data"]["checksum"]["value"] for e in events] == [hashlib.sha256(d).hexdigest() for d in files.values()]
    assert sorted(s3.objects(BUCKET).values()) == sorted(files.values())
    assert _most_uploads_open(s3.requests) == 2


def _stager(endpoint: str) -> Stager:
    creds = Credentials(name="minio", access_key=Secret(ACCESS_KEY), secret_key=Secret(SECRET_KEY), endpoint=endpoint)
    return Stager(StageTarget(BUCKET, "landing", DEFAULT_KEY), creds, 30.0)


def _open_sessions() -> list[Any]:
    """aiohttp sessions alive and not closed (after a full collection)."""
    import aiohttp

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


async def test_a_stager_closed_while_an_upload_aborts_in_the_background_waits_for_it(s3: S3Server) -> None:
    # The watcher leaves an abort going on when its stream is cancelled; the stream then closes its
    # Stager. A request made after the client closed would open a connection pool nobody closes.
    async with _stager(s3.endpoint) as stager:
        upload = stager.upload(20 * 1024 * 1024)
        await upload.write(os.urandom(9 * 1024 * 1024))  # a multipart upload, its first part on its way
        background = asyncio.ensure_future(upload.abort())
    assert background.done()
    assert s3.multipart_uploads(BUCKET) == []
    assert _open_sessions() == []


async def test_a_stager_cancelled_twice_while_closing_still_aborts_its_uploads_first(s3: S3Server) -> None:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = await Proxy.start(host, int(port))
    stager = _stager(f"http://127.0.0.1:{proxy.port}")
    try:
        await stager.__aenter__()
        upload = stager.upload(20 * 1024 * 1024)
        await upload.write(os.urandom(9 * 1024 * 1024))  # a multipart upload, its first part on its way
        await eventually(lambda: any("partNumber=1" in r.query for r in s3.requests), 10, "the part to arrive")
        proxy.freeze()  # the abort's request hangs on the way
        closing = asyncio.ensure_future(stager.__aexit__(None, None, None))
        await asyncio.sleep(0.2)
        closing.cancel()
        await asyncio.sleep(0.2)
        closing.cancel()
        await asyncio.sleep(0.2)
        assert not closing.done()  # the abort is still on its way: the clients stay open for it
        proxy.restore()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert s3.multipart_uploads(BUCKET) == []
    finally:
        await proxy.close()
    assert _open_sessions() == []


async def test_parts_on_their_way_share_one_budget_across_sources(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each upload may have four parts on their way; all the server's uploads together only
    # PARTS_IN_FLIGHT_TOTAL (3 here, so that two sources' two uploads would exceed it).
    monkeypatch.setattr(stage, "PARTS_IN_FLIGHT_TOTAL", 3)
    s3.parts.delay_s = 0.3  # a slow link: parts pile up waiting for their answers
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        root.mkdir()
    files = {root: os.urandom(40 * 1024 * 1024) for root in roots}
    async with (
        run_server(tmp_path, credentials_dir=_creds(tmp_path, s3.endpoint)) as srv,
        stream_to(srv.port, _config(roots[0], id="a")) as a,
        stream_to(srv.port, _config(roots[1], id="b")) as b,
    ):
        for root, data in files.items():
            put(root, "big.bin", data, mtime=time.time() - 60)
        for stream, root in ((a, roots[0]), (b, roots[1])):
            event = await stream.until(ready("big.bin"), timeout=120)
            assert event["data"]["checksum"]["value"] == hashlib.sha256(files[root]).hexdigest()
    assert s3.parts.most == 3
