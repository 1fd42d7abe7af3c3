"""``stage``: land a version's bytes in S3-compatible object storage, streamed as they are read.

The bytes go up as a multipart upload while they are read (memory stays at a few parts). When the
final key is known before the read, the upload goes straight there: with a key template that needs no
digest (``{source_id}/{path}/{generation}``), or when the digest is known first (a local file hashed
by the verification read, or a server-side hash); a key that already holds those bytes (same
``x-amz-meta-sha256`` and size, see ``Stager.holds``) is then not uploaded at all. Otherwise (a
content-addressed key of a remote file without a server hash) it goes under a temporary key below the
prefix (``.ftpsource-incoming/``), because the final key is known only after the last byte. Once the
version is found ready, the upload is completed (and, from a temporary key, copied server-side to its
final key); objects whose digest is known carry it as object metadata, ``x-amz-meta-sha256``. If the
final key already holds those bytes, nothing is copied. A version that changed while being read, or
was not new, has its multipart upload aborted: nothing is left in the bucket. Files no bigger than one
part are sent in one PUT at the end. Every request runs on the S3 clients' own event loop, in a thread of
its own (``ftpsource.offloop``): the server's loop only hands the parts over.

What this relies on, as MinIO and S3 document it: path-style addressing, multipart parts of at least
5 MiB except the last and at most 10,000 parts, ``CopyObject`` up to 5 GiB (``UploadPartCopy``
beyond), ``AbortMultipartUpload`` discarding the parts, and user metadata (``x-amz-meta-*``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from botocore.exceptions import BotoCoreError, ClientError

from .config import SourceConfig
from .core.model import Staged
from .core.stage import StageTarget
from .credentials import Credentials, load_credentials
from .errors import ConfigError, StageError
from .offloop import Offloop, until_ended
from .policy import check_endpoint_host

if TYPE_CHECKING:
    import aiobotocore.session
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CopySourceTypeDef

__all__ = ["PART_SIZE", "Stager", "Upload", "check_stage_credentials", "load_stage_credentials"]

PART_SIZE = 8 * 1024 * 1024
#: Parts on their way at once: memory stays at most this many parts, and the read overlaps the sending.
PARTS_IN_FLIGHT = 4
#: Parts on their way at once across every upload of the server (of its event loop): however many
#: sources stage, what waits for object storage stays at 64 MiB of 8 MiB parts (each upload also holds
#: the part being read and the one read ahead).
PARTS_IN_FLIGHT_TOTAL = 8
_part_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
MAX_PARTS = 9_000  # below S3's 10,000, so a file that grew a little still fits
COPY_LIMIT = 5 * 1024**3
COPY_PART = 512 * 1024 * 1024
INCOMING = ".ftpsource-incoming"
#: Where each part is assembled and its Content-MD5 computed: a few milliseconds of memcpy and MD5 per
#: 8 MiB part that must not run on the event loop (both release the GIL on big buffers).
_PART_POOL = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="ftpsource-stage")
#: Where the S3 clients live and every request to object storage runs: a loop of its own, so sending
#: gigabytes does not lag the server's loop (``ftpsource.offloop``). Nothing else touches the clients.
_S3 = Offloop("ftpsource-s3")


def check_stage_credentials(credentials: Credentials) -> None:
    """A stage credential set needs keys and an endpoint; raises ``ConfigError`` naming what is missing."""
    missing = [
        name
        for name, value in (
            ("access_key", credentials.access_key),
            ("secret_key", credentials.secret_key),
            ("endpoint", credentials.endpoint),
        )
        if value is None
    ]
    if missing:
        raise ConfigError([f"stage.credentials: set {credentials.name!r} has no {', '.join(missing)}"])
    endpoint = credentials.endpoint or ""
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(["stage.credentials: endpoint must be an http:// or https:// URL"])


def load_stage_credentials(credentials_dir: Path | None, config: SourceConfig) -> Credentials | None:
    """The credential set named by ``stage.credentials`` (None without ``stage``). ``ConfigError`` if it
    lacks keys or an endpoint; ``PolicyError`` unless its ``hosts`` file lists the endpoint's host."""
    if config.stage is None:
        return None
    credentials = load_credentials(credentials_dir, config.stage.credentials)
    check_stage_credentials(credentials)
    assert credentials.endpoint is not None
    check_endpoint_host(credentials, credentials.endpoint)
    return credentials


def _describe(exc: BaseException, action: str) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"object storage: {action}: {error.get('Code', 'error')} {error.get('Message', '')}".strip()
    if isinstance(exc, TimeoutError):
        return f"object storage: {action}: timed out"
    return f"object storage: {action}: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _errors(action: str) -> Iterator[None]:
    try:
        yield
    except StageError:
        raise
    except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
        raise StageError(_describe(exc, action)) from exc


@functools.cache
def _session() -> aiobotocore.session.AioSession:
    """One botocore session for every stage client, its data loaded once, in a worker thread.

    A new session parses botocore's S3 model and endpoint data (megabytes of JSON) when it creates its
    first client: 0.4 to 0.9 s measured on the event loop, at every stream start of a staging source.
    The JSON parser holds the GIL even in a worker thread, so a server with stage credentials warms it
    before it accepts streams (``warm_up``). aiobotocore (and aiohttp) are imported here, not with the
    module: a server that never stages does not carry them (about 20 MB of resident memory).
    """
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    loader = session.get_component("data_loader")
    for name in ("service-2", "endpoint-rule-set-1"):
        loader.load_service_model("s3", name)
    for name in ("endpoints", "partitions", "sdk-default-configuration"):
        loader.load_data(name)
    return session


def preload() -> None:
    """Load the S3 client's data (once per process; blocking: call it from a worker thread)."""
    _session()


def warm_up(credentials_dir: Path | None) -> bool:
    """``preload`` if any credential set can stage (has an ``access_key``), so the first staging
    stream does not hold the event loop for it. Returns whether it did."""
    if credentials_dir is None or not credentials_dir.is_dir():
        return False
    if not any((d / "access_key").is_file() for d in credentials_dir.iterdir() if d.is_dir()):
        return False
    preload()
    return True


class Stager:
    """One S3 client for a source. ``async with Stager(...) as stager: upload = stager.upload(size)``."""

    def __init__(self, target: StageTarget, credentials: Credentials, timeout_s: float) -> None:
        check_stage_credentials(credentials)
        self.target = target
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._clients = contextlib.AsyncExitStack()
        self._uploads: weakref.WeakSet[Upload] = weakref.WeakSet()
        self.client: S3Client | None = None
        #: the same, but a request's signature leaves its body out (``UNSIGNED-PAYLOAD``): for bodies
        #: sent with their ``Content-MD5`` (object bytes), so botocore does not hash them on the loop
        self.body_client: S3Client | None = None

    async def __aenter__(self) -> Self:
        session = await asyncio.to_thread(_session)
        try:
            await _S3.run(self._open(session))
        except BaseException:
            # cancelled just as the clients were made, say: close what ``_open`` left open
            await _S3.run(self._clients.aclose(), cancellable=False)
            raise
        return self

    async def _open(self, session: aiobotocore.session.AioSession) -> None:
        creds = self._credentials
        assert creds.access_key is not None and creds.secret_key is not None
        from aiobotocore.config import AioConfig

        try:
            for unsigned in (False, True):
                config = AioConfig(
                    # Over http botocore signs a SHA-256 of every body, computed on the event loop: about
                    # 20 ms per 8 MiB part. Object bytes go without it, with a Content-MD5 (worker thread)
                    # that the server checks and the signature covers; every other body (the small XML
                    # that completes an upload, say) stays signed.
                    s3={"addressing_style": "path", "payload_signing_enabled": False}
                    if unsigned
                    else {"addressing_style": "path"},
                    connect_timeout=self._timeout_s,
                    read_timeout=self._timeout_s,
                    retries={"max_attempts": 2, "mode": "standard"},
                    # The SHA-256 ftpsource computes is the integrity check of the whole object; no extra
                    # checksum headers, which not every S3-compatible server understands.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                client = await self._clients.enter_async_context(
                    session.create_client(
                        "s3",
                        endpoint_url=creds.endpoint,
                        region_name=creds.region or "us-east-1",
                        aws_access_key_id=creds.access_key.reveal(),
                        aws_secret_access_key=creds.secret_key.reveal(),
                        verify=str(creds.ca_file) if creds.ca_file is not None else True,
                        config=config,
                    )
                )
                if unsigned:
                    self.body_client = client
                else:
                    self.client = client
        except BaseException:
            await self._clients.aclose()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # An upload still open (its reader cancelled, or its abort still going on in the background)
            # is aborted first, to its end even if this is cancelled meanwhile: a request reaching a
            # closed client fails, and would leave the multipart upload in the bucket.
            await until_ended([upload.aborting() for upload in list(self._uploads)])
        finally:
            self.client = self.body_client = None
            # Closing must finish even if the stream is being cancelled: a client cut short leaves its
            # connection pool open on the S3 loop for good.
            await _S3.run(self._clients.aclose(), cancellable=False)

    def upload(self, expected_size: int, final_key: str | None = None, sha256: str | None = None) -> Upload:
        """``final_key``: where the object will go, when it is known before reading; the upload then goes
        straight there, with no temporary object and no copy. ``sha256``: the digest, when known before
        reading (the object carries it from the start)."""
        assert self.client is not None and self.body_client is not None, "use the Stager as an async context manager"
        upload = Upload(self.client, self.body_client, self.target, expected_size, final_key, sha256)
        self._uploads.add(upload)
        return upload

    async def holds(self, key: str, sha256: str, size: int) -> bool:
        """Whether ``key`` already holds these bytes (its ``x-amz-meta-sha256`` and size match)."""
        assert self.client is not None, "use the Stager as an async context manager"
        return await _S3.run(_holds(self.client, self.target.bucket, key, sha256, size))


def _part_budget() -> asyncio.Semaphore:
    """``PARTS_IN_FLIGHT_TOTAL`` for the running loop (the server has one; each test its own)."""
    loop = asyncio.get_running_loop()
    budget = _part_budgets.get(loop)
    if budget is None:
        budget = _part_budgets[loop] = asyncio.Semaphore(PARTS_IN_FLIGHT_TOTAL)
    return budget


def _join(pieces: list[bytes]) -> tuple[io.BytesIO, str]:
    body = io.BytesIO()
    md5 = hashlib.md5(usedforsecurity=False)
    for piece in pieces:
        body.write(piece)
        md5.update(piece)
    body.seek(0)
    return body, base64.b64encode(md5.digest()).decode("ascii")


async def _assemble(pieces: list[bytes]) -> tuple[io.BytesIO, str]:
    """A request body joined from its pieces, and its Content-MD5, computed in a worker thread. The body
    is a ``BytesIO`` that owns its bytes, as botocore and aiohttp want it: handed ``bytes``, botocore
    wraps them in a ``BytesIO`` that aiohttp then copies (``getbuffer``), on the loop."""
    return await asyncio.get_running_loop().run_in_executor(_PART_POOL, _join, pieces)


async def _holds(client: S3Client, bucket: str, key: str, sha256: str, size: int) -> bool:
    with _errors("checking the object"):
        try:
            head = await client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return head.get("Metadata", {}).get("sha256") == sha256 and head.get("ContentLength") == size


class Upload:
    """The bytes of one read on their way to the bucket; ``finish`` or ``abort`` ends it."""

    def __init__(
        self,
        client: S3Client,
        body_client: S3Client,
        target: StageTarget,
        expected_size: int,
        final_key: str | None = None,
        sha256: str | None = None,
    ) -> None:
        self._client = client
        self._body_client = body_client  # for the object bytes (see ``Stager.body_client``)
        self._target = target
        base = f"{target.prefix}/{INCOMING}" if target.prefix else INCOMING
        self._direct = final_key is not None
        self._temp_key = final_key if final_key is not None else f"{base}/{uuid.uuid4().hex}"
        self._metadata = {"sha256": sha256} if sha256 is not None and self._direct else {}
        # Parts grow with the file so that even a large one stays under S3's part count.
        self._part_size = max(PART_SIZE, -(-expected_size // MAX_PARTS))
        #: a local read of this size is one part, sent as read: no joining, no copy
        self.read_size = self._part_size
        # The bytes read but not yet sent, as the chunks they came in: a part is joined from them once,
        # in a worker thread, not copied on the event loop as it grows.
        self._pieces: list[bytes] = []
        self._pending = 0
        self._upload_id: str | None = None
        self._sending: list[asyncio.Task[dict[str, Any]]] = []
        self._aborting: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self.size = 0
        #: set when object storage failed during the read (the caller backs off before the next try)
        self.failed = False

    async def write(self, chunk: bytes) -> None:
        # A part is whole chunks, at least ``_part_size`` (S3 needs no two parts alike, only 5 MiB but
        # for the last): chunks are never split, so joining them copies bytes objects only, which
        # ``bytes.join`` does without holding the GIL.
        self.size += len(chunk)
        self._pieces.append(chunk)
        self._pending += len(chunk)
        if self._pending >= self._part_size:
            await self._start_part(self._take_rest())

    def _take_rest(self) -> list[bytes]:
        pieces, self._pieces, self._pending = self._pieces, [], 0
        return pieces

    async def _start_part(self, pieces: list[bytes]) -> None:
        """Send a part in the background; waits while ``PARTS_IN_FLIGHT`` are already on their way."""
        self._raise_failed_part()
        if self._upload_id is None:
            self.failed = True  # until the upload exists
            await _S3.run(self._create())
            self.failed = False
        budget = _part_budget()
        await self._slots.acquire()
        try:
            await budget.acquire()
        except BaseException:
            self._slots.release()
            raise
        upload_id = self._upload_id
        if upload_id is None or self._aborting is not None:
            budget.release()
            self._slots.release()
            raise StageError("object storage: the upload was aborted")
        number = len(self._sending) + 1
        task = asyncio.create_task(self._send_part(number, upload_id, pieces))
        task.add_done_callback(lambda _: budget.release())
        task.add_done_callback(lambda _: self._slots.release())
        self._sending.append(task)

    async def _create(self) -> None:
        """Start the multipart upload (on the S3 loop). Its id is kept there, so that an upload made
        just as the caller was cancelled is still known to ``abort``."""
        with _errors("uploading"):
            created = await self._client.create_multipart_upload(
                Bucket=self._target.bucket, Key=self._temp_key, Metadata=self._metadata
            )
        self._upload_id = created["UploadId"]

    def _raise_failed_part(self) -> None:
        for task in self._sending:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.failed = True
                raise task.exception()  # type: ignore[misc]

    async def _send_part(self, number: int, upload_id: str, pieces: list[bytes]) -> dict[str, Any]:
        sending = self._put_part(number, upload_id, pieces)
        del pieces  # the part's bytes go with it, not kept here until it is sent
        return await _S3.run(sending)

    async def _put_part(self, number: int, upload_id: str, pieces: list[bytes]) -> dict[str, Any]:
        body, md5 = await _assemble(pieces)
        del pieces
        with _errors("uploading"):
            sent = await self._body_client.upload_part(
                Bucket=self._target.bucket,
                Key=self._temp_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=md5,
            )
        return {"ETag": sent["ETag"], "PartNumber": number}

    async def _parts(self) -> list[dict[str, Any]]:
        try:
            return list(await asyncio.gather(*self._sending))
        except BaseException:
            self.failed = True
            raise

    async def finish(self, *, source_id: str, path: str, generation: int, sha256: str) -> Staged:
        """Make the object complete under its final key and return where it is."""
        target, client = self._target, self._client
        key = target.key(source_id=source_id, path=path, sha256=sha256, generation=generation)
        staged = Staged(f"s3://{target.bucket}/{key}", target.bucket, key, self.size, sha256)
        if await _S3.run(_holds(client, target.bucket, key, sha256, self.size)):
            await self.abort()  # those bytes are there already: upload nothing more
            return staged
        metadata = {"sha256": sha256}
        if self._upload_id is None:
            await _S3.run(self._put_object(key, self._take_rest(), metadata))
            return staged
        if self._pieces:
            await self._start_part(self._take_rest())
        parts = await self._parts()
        if self._direct and (key != self._temp_key or self._metadata.get("sha256", sha256) != sha256):
            raise StageError(f"object storage: the key changed while reading ({self._temp_key!r} -> {key!r})")
        with _errors("completing the upload"):
            await _S3.run(
                client.complete_multipart_upload(
                    Bucket=target.bucket,
                    Key=self._temp_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
            )
        self._upload_id = None
        if self._direct:
            return staged
        try:
            await _S3.run(self._copy(key, metadata))
        finally:
            with contextlib.suppress(ClientError, BotoCoreError, OSError, TimeoutError):
                await _S3.run(client.delete_object(Bucket=target.bucket, Key=self._temp_key))
        return staged

    async def _put_object(self, key: str, pieces: list[bytes], metadata: dict[str, str]) -> None:
        body, md5 = await _assemble(pieces)
        del pieces
        with _errors("uploading"):
            await self._body_client.put_object(
                Bucket=self._target.bucket, Key=key, Body=body, ContentMD5=md5, Metadata=metadata
            )

    async def _copy(self, key: str, metadata: dict[str, str]) -> None:
        bucket, client = self._target.bucket, self._client
        source: CopySourceTypeDef = {"Bucket": bucket, "Key": self._temp_key}
        with _errors("copying to the final key"):
            if self.size <= COPY_LIMIT:
                await client.copy_object(
                    Bucket=bucket, Key=key, CopySource=source, Metadata=metadata, MetadataDirective="REPLACE"
                )
                return
            created = await client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)
            upload_id = created["UploadId"]
            parts = []
            try:
                for number, start in enumerate(range(0, self.size, COPY_PART), start=1):
                    end = min(start + COPY_PART, self.size) - 1
                    copied = await client.upload_part_copy(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append({"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number})
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError, OSError, TimeoutError):
                    await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                raise

    async def abort(self) -> None:
        """Leave nothing behind: the parts sent so far are discarded. Every call waits for the one abort
        (a cancelled caller leaves it going on)."""
        await asyncio.shield(self.aborting())

    def aborting(self) -> asyncio.Future[None]:
        """The abort, started if it is not yet."""
        if self._aborting is None:
            self._aborting = asyncio.ensure_future(self._abort())
            # seen by whoever waits; if every caller was cancelled, nobody is left to be told
            self._aborting.add_done_callback(lambda done: done.cancelled() or done.exception())
        return self._aborting

    async def _abort(self) -> None:
        self._take_rest()
        for task in self._sending:
            task.cancel()
        try:
            # A part still arriving after the abort would be stored again: wait for every one to end
            # first, even if this is cancelled meanwhile (at shutdown, say).
            await until_ended(self._sending)
        finally:
            for task in self._sending:
                task.cancelled() or task.exception()  # its failure is the abort's business now
            self._sending.clear()
            upload_id, self._upload_id = self._upload_id, None
            if upload_id is not None:
                with _errors("aborting the upload"):
                    await _S3.run(
                        self._client.abort_multipart_upload(
                            Bucket=self._target.bucket, Key=self._temp_key, UploadId=upload_id
                        ),
                        cancellable=False,  # bounded by the client's timeouts; cut short, it leaves the parts
                    )
