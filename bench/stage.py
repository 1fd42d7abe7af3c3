"""``stage``: hash-and-stage a 1 GiB local file into S3 vs boto3's ``upload_file`` of the same file to
the same server, and vs hashing alone.

The server is moto's standalone S3 server in its own process on loopback (MinIO is what the manifests
deploy; moto needs no Docker), at the lowest CPU priority (``nice 19``): it stands for a service on
other machines, so its Python work must not be what the two cores spend their time on, for either
side, nor what stalls the loop measured. ftpsource's side is what the watcher does for a local file
with the default, content-addressed key: the verification read (``LocalAdapter.digest``, worker
thread), a ``HeadObject`` of ``sha256/<hex>`` (``Stager.holds``), then a second read that hashes
again with the upload to that key as its sink (parts sent with their ``Content-MD5`` and an unsigned
payload, from the S3 client's own loop), and ``Upload.finish`` (complete the multipart upload).

boto3's side is ``upload_file`` with its default transfer settings (8 MiB parts, 10 threads; over
http botocore signs each part's SHA-256 in them); it does not hash the file. Its client asks for
checksums as ftpsource's does (``when_required``). With botocore's default (``when_supported``) each
part carries a CRC32 and moto completes the upload by another, cheaper path (a CRC32 per part instead
of one CRC over the whole object, which moto assembles in Python: 8 to 15 s of the 1 GiB run), so the
two would not be timed doing the same server work; boto3 with its defaults is timed too, for
information.

The server is emptied between runs. Warm page cache, alternating runs, best of 3. Not judged: the
same bytes staged again (hash + ``HeadObject``, nothing uploaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import SourceConfig
from ftpsource.core.paths import PathFilter
from ftpsource.core.stage import DEFAULT_KEY, StageTarget
from ftpsource.credentials import Credentials, Secret
from ftpsource.stage import Stager, preload

from .common import LoopLag, Result, best_of_alternating, fmt_s

__all__ = ["run"]

GIB = 1024**3
BLOCK = 4 * 1024 * 1024
LIMIT = 1.5
DEFAULT = "boto3 upload_file, default checksums"
BUCKET = "bench"
KEYS = ("bench-access", "bench-secret-key")


def _make_file(path: Path, size: int) -> None:
    rng = random.Random(3)
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(rng.randbytes(BLOCK))


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(19),  # see the module's docstring
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def run(scratch: Path, quick: bool) -> Result:
    size = GIB // 8 if quick else GIB
    data = scratch / "one.bin"
    _make_file(data, size)
    expected = hashlib.sha256(data.read_bytes()).hexdigest() if quick else None

    with _moto() as endpoint:

        def client(**config: str) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=KEYS[0],
                aws_secret_access_key=KEYS[1],
                region_name="us-east-1",
                config=Config(**config),  # type: ignore[arg-type]
            )

        # checksums as ftpsource asks for them (see the module's docstring); and botocore's defaults
        s3 = client(request_checksum_calculation="when_required", response_checksum_validation="when_required")
        s3_default = client()

        def fresh() -> None:
            req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
            urllib.request.urlopen(req, timeout=30).close()
            s3.create_bucket(Bucket=BUCKET)

        cfg = SourceConfig(url=f"file://{scratch}")
        src = LocalAdapter(cfg, Credentials(), PathFilter([], [], True))
        creds = Credentials(name="bench", access_key=Secret(KEYS[0]), secret_key=Secret(KEYS[1]), endpoint=endpoint)
        target = StageTarget(BUCKET, "landing", DEFAULT_KEY)
        digests: dict[str, str] = {}
        # per run: (hash + HEAD, second read + parts sent, complete), and the same bytes staged again
        phases: list[tuple[float, float, float]] = []
        again: list[float] = []
        lag = LoopLag()
        preload()  # as `serve` does at start when a credential set can stage, before any stream
        gc.freeze()  # and as it then does with what it loaded (`start_server`)

        def hash_only() -> float:
            async def go() -> float:
                t0 = time.perf_counter()
                d = await src.digest("one.bin", "sha256", None, size)
                elapsed = time.perf_counter() - t0
                assert d.value is not None
                digests["hash"] = d.value
                return elapsed

            return asyncio.run(lag.over(go()))

        async def hash_and_look(stager: Stager) -> tuple[str, str, bool]:
            d = await src.digest("one.bin", "sha256", None, size)
            assert d.value is not None
            key = target.key(source_id="bench", path="one.bin", sha256=d.value, generation=1)
            return d.value, key, await stager.holds(key, d.value, size)

        def hash_and_stage() -> float:
            fresh()

            async def go() -> float:
                async with Stager(target, creds, 60.0) as stager:
                    t0 = time.perf_counter()
                    sha256, key, held = await hash_and_look(stager)
                    t1 = time.perf_counter()
                    assert not held
                    upload = stager.upload(size, key, sha256)
                    d = await src.digest("one.bin", "sha256", None, size, upload)
                    t2 = time.perf_counter()
                    assert d.value == sha256
                    staged = await upload.finish(source_id="bench", path="one.bin", generation=1, sha256=sha256)
                    elapsed = time.perf_counter() - t0
                    phases.append((t1 - t0, t2 - t1, elapsed - (t2 - t0)))
                    t3 = time.perf_counter()
                    assert (await hash_and_look(stager))[2]  # the same bytes again: nothing to upload
                    again.append(time.perf_counter() - t3)
                digests["stage"] = sha256
                assert staged.key == key
                head = s3.head_object(Bucket=BUCKET, Key=key)
                assert head["ContentLength"] == size and head["Metadata"]["sha256"] == sha256
                return elapsed

            return asyncio.run(lag.over(go()))

        def boto3_upload(s3: Any = s3) -> float:
            fresh()
            t0 = time.perf_counter()
            s3.upload_file(str(data), BUCKET, "landing/boto3.bin")
            elapsed = time.perf_counter() - t0
            assert s3.head_object(Bucket=BUCKET, Key="landing/boto3.bin")["ContentLength"] == size
            return elapsed

        hash_only()  # warms the page cache
        times = best_of_alternating(
            [
                ("boto3 upload_file", boto3_upload),
                ("ftpsource hash+stage", hash_and_stage),
                ("hash only", hash_only),
                (DEFAULT, lambda: boto3_upload(s3_default)),
            ]
        )
        fresh()
    if len(set(digests.values())) != 1 or (expected is not None and digests["stage"] != expected):
        raise AssertionError(f"digests differ: {digests}")
    base, ours, hashing = (min(times[k]) for k in ("boto3 upload_file", "ftpsource hash+stage", "hash only"))
    mb = size / 1e6
    best = min(phases, key=sum)
    return Result(
        name="stage",
        goal="Hash and stage a 1 GiB file to S3 in ≤ 1.5× the time of boto3 `upload_file` (which does not hash)",
        baseline=f"boto3 `upload_file`: {fmt_s(base)} ({mb / base:.0f} MB/s)",
        measured=f"hash + HEAD + multipart upload to the final key: {fmt_s(ours)} ({mb / ours:.0f} MB/s)",
        ratio=ours / base,
        limit=LIMIT,
        higher_is_better=False,
        size=f"{size / GIB:g} GiB",
        quick=quick,
        details=[
            "ratio = ftpsource time / boto3 time, same moto S3 server (own process, loopback), emptied between runs",
            f"hashing alone (`LocalAdapter.digest`): {fmt_s(hashing)} ({mb / hashing:.0f} MB/s); staging adds "
            f"{fmt_s(ours - hashing)}",
            f"of the best ftpsource run: hashing and the HEAD of the content-addressed key {fmt_s(best[0])}; "
            f"the second read, hashing again and sending the parts {fmt_s(best[1])} "
            f"({best[1] / base:.2f}× boto3's whole upload); completing the multipart upload {fmt_s(best[2])} "
            "(moto assembles the object in Python); no copy, no temporary object",
            f"the same bytes staged again (hash + HEAD, nothing uploaded): {fmt_s(min(again))}",
            f"boto3 `upload_file` with botocore's default checksums (a CRC32 per part; moto then completes the "
            f"upload without assembling a whole-object CRC), not judged: {fmt_s(min(times[DEFAULT]))}",
            "all runs: " + "; ".join(f"{k} {', '.join(fmt_s(t) for t in v)}" for k, v in times.items()),
            lag.line,
        ],
    )
