"""A real S3-protocol server for the tests: moto's standalone server, in-process on a free loopback port.

MinIO is what the manifests deploy; moto speaks the same protocol for what staging uses (multipart
uploads, copy, head, user metadata, abort), without Docker.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.servers import HOST, free_port

__all__ = ["S3Server", "moto_s3"]

ACCESS_KEY = "ftpsource-test"
SECRET_KEY = "s3-secret-" + "x" * 16


@dataclass
class S3Server:
    endpoint: str
    client: Any  # a boto3 S3 client straight to the server, to look at what landed

    def objects(self, bucket: str) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    def multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@contextlib.contextmanager
def moto_s3(bucket: str = "etl-raw") -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    endpoint = f"http://{HOST}:{port}"
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
    try:
        yield S3Server(endpoint, client)
    finally:
        client.close()
        server.stop()
