"""A real S3-protocol server for the tests: moto's standalone server, in-process on a free loopback port.

MinIO is what the manifests deploy; moto speaks the same protocol for what staging uses (multipart
uploads, copy, head, user metadata, abort), without Docker. The server logs every request it gets
(``S3Server.requests``), so a test can tell what was sent, not only what is left.
"""

from __future__ import annotations

import contextlib
import logging
import threading
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

    @property
    def writes(self) -> bool:
        """A request that sends object bytes or makes an object (PUT, multipart create/complete, copy)."""
        return self.method in ("PUT", "POST") and "delete" not in self.query


@dataclass
class S3Server:
    endpoint: str
    client: Any  # a boto3 S3 client straight to the server, to look at what landed
    requests: list[S3Request] = field(default_factory=list)

    def objects(self, bucket: str) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    def multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@contextlib.contextmanager
def moto_s3(bucket: str = "etl-raw") -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    requests: list[S3Request] = []
    app = DomainDispatcherApplication(create_backend_app)

    def logged(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/moto-api"):
            _, _, key = path.lstrip("/").partition("/")  # PATH_INFO is already percent-decoded
            copy = environ.get("HTTP_X_AMZ_COPY_SOURCE")
            query = environ.get("QUERY_STRING", "")
            requests.append(S3Request(environ["REQUEST_METHOD"], key, query, copy))
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
        yield S3Server(endpoint, client, requests)
    finally:
        client.close()
        server.shutdown()
        thread.join()
        server.server_close()
