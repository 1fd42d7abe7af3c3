"""A real S3-protocol server for the tests: moto's standalone server, in-process on a free loopback port.

MinIO is what the manifests deploy; moto speaks the same protocol for what staging uses (multipart
uploads, copy, head, user metadata, abort), without Docker. The server logs every request it gets
(``S3Server.requests``), so a test can tell what was sent, not only what is left.

moto does not check a body against its ``Content-MD5``; S3 and MinIO do (``400 BadDigest``), so the
server here does too. ``S3Server.corrupt_next_body`` flips a byte of the next body on its way in, as
a bad network path would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from tests.support.servers import HOST

__all__ = ["S3Request", "S3Server", "moto_s3"]

ACCESS_KEY = "ftpsource-test"
SECRET_KEY = "s3-secret-" + "x" * 16


@dataclass(frozen=True)
class S3Request:
    """One request as the server got it: ``key`` is the object key (path-style, without the bucket)."""

    method: str
    key: str
    query: str
    copy_source: str | None  # the x-amz-copy-source header of a CopyObject / UploadPartCopy
    body_size: int = 0
    content_md5: str | None = None  # the Content-MD5 header, when sent
    content_sha256: str | None = None  # the x-amz-content-sha256 header: a hex digest or UNSIGNED-PAYLOAD

    @property
    def writes(self) -> bool:
        """A request that sends object bytes or makes an object (PUT, multipart create/complete, copy)."""
        return self.method in ("PUT", "POST") and "delete" not in self.query


@dataclass
class PartsInFlight:
    """``UploadPart`` requests the server is handling at once (from arrival to response), and the most;
    ``delay_s`` holds each response back, as a slow link to object storage would."""

    now: int = 0
    most: int = 0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        time.sleep(self.delay_s)
        with self.lock:
            self.now -= 1


@dataclass
class S3Server:
    endpoint: str
    client: Any  # a boto3 S3 client straight to the server, to look at what landed
    requests: list[S3Request] = field(default_factory=list)
    #: corruptions to come: each flips one byte of the next request body at least that many bytes long
    corrupt: list[int] = field(default_factory=list)
    parts: PartsInFlight = field(default_factory=PartsInFlight)

    def corrupt_next_body(self, min_size: int = 1) -> None:
        self.corrupt.append(min_size)

    def objects(self, bucket: str) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    def multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@contextlib.contextmanager
def moto_s3(bucket: str = "etl-raw") -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    requests: list[S3Request] = []
    corrupt: list[int] = []
    parts = PartsInFlight()
    app = DomainDispatcherApplication(create_backend_app)

    def logged(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return app(environ, start_response)
        _, _, key = path.lstrip("/").partition("/")  # PATH_INFO is already percent-decoded
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if body and corrupt and len(body) >= corrupt[0]:
            corrupt.pop(0)
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        environ["wsgi.input"] = io.BytesIO(body)
        md5 = environ.get("HTTP_CONTENT_MD5")
        requests.append(
            S3Request(
                environ["REQUEST_METHOD"],
                key,
                environ.get("QUERY_STRING", ""),
                environ.get("HTTP_X_AMZ_COPY_SOURCE"),
                len(body),
                md5,
                environ.get("HTTP_X_AMZ_CONTENT_SHA256"),
            )
        )
        if md5 is not None and base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
            start_response("400 Bad Request", [("Content-Type", "application/xml")])
            return [b"<Error><Code>BadDigest</Code><Message>Content-MD5 does not match the body</Message></Error>"]
        if environ["REQUEST_METHOD"] == "PUT" and "partNumber=" in environ.get("QUERY_STRING", ""):
            with parts:
                return list(app(environ, start_response))
        return app(environ, start_response)

    # moto's ThreadedMotoServer, with the request log in front of its application.
    server = make_server(HOST, 0, logged, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://{HOST}:{server.server_port}"
    # moto keeps its buckets in process-wide state, shared by every server of the run: start empty.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    requests.clear()
    try:
        yield S3Server(endpoint, client, requests, corrupt, parts)
    finally:
        client.close()
        server.shutdown()
        thread.join()
        server.server_close()
