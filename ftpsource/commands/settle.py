"""``ftpsource settle``: tell the server how a file version's Workflow ended (a Workflow's exit handler).

Exit 0 when the server accepted the outcome (also when it had already been recorded); otherwise one
line on stderr and exit 1. A server that is unavailable is retried until ``--timeout``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

from .._proto import settlement_pb2, settlement_pb2_grpc
from ..config import parse_duration
from .common import add_common, env

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_FAILED = 1
_OUTCOMES = {"succeeded": settlement_pb2.SUCCEEDED, "failed": settlement_pb2.FAILED}
# Codes worth another try: the server restarting, or a rolling update moving the Service.
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _fail(message: str) -> int:
    print(f"ftpsource settle: {message}", file=sys.stderr)
    return EXIT_FAILED


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--token-file: cannot read {path} ({exc.strerror})") from None
    if not token:
        raise ValueError(f"--token-file: {path} is empty")
    return token


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.tls_ca is None:
        return grpc.insecure_channel(args.server)
    try:
        ca = Path(args.tls_ca).read_bytes()
    except OSError as exc:
        raise ValueError(f"--tls-ca: cannot read {args.tls_ca} ({exc.strerror})") from None
    return grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root_certificates=ca))


def run(args: argparse.Namespace) -> int:
    if not args.server:
        return _fail("--server HOST:PORT is required (or $FTPSOURCE_SERVER)")
    try:
        timeout = parse_duration(args.timeout)
        metadata = (("authorization", f"Bearer {_read_token(args.token_file)}"),) if args.token_file else None
        channel = _channel(args)
    except ValueError as exc:
        return _fail(str(exc))
    request = settlement_pb2.SettleRequest(
        event_id=args.event_id, outcome=_OUTCOMES[args.outcome], message=args.message or ""
    )
    deadline = time.monotonic() + timeout
    delay = 0.5
    with channel:
        stub = settlement_pb2_grpc.SettlementStub(channel)  # type: ignore[no-untyped-call]
        while True:
            left = deadline - time.monotonic()
            try:
                reply = stub.Settle(request, metadata=metadata, timeout=max(1.0, min(left, 30.0)))
                break
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code in _RETRY and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                return _fail(f"{args.server}: {code.name}: {details}")
    if reply.already_settled:
        print(f"event {args.event_id} was already settled as {args.outcome}; nothing changed")
    else:
        print(f"settled event {args.event_id} as {args.outcome} (action: {reply.action})")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "report how a file version's Workflow ended, so the server archives, deletes or quarantines it"
    p = sub.add_parser("settle", help=text, description=text)
    p.add_argument("--server", default=env("SERVER"), help="ftpsource gRPC address HOST:PORT ($FTPSOURCE_SERVER)")
    p.add_argument(
        "--token-file", default=env("TOKEN_FILE"), help="file holding the server's bearer token ($FTPSOURCE_TOKEN_FILE)"
    )
    p.add_argument("--tls-ca", default=env("TLS_CA"), help="CA certificate, to reach a server that serves TLS")
    p.add_argument("--message", default="", help="free text kept with the outcome (e.g. the Workflow's name)")
    p.add_argument("--timeout", default="60s", help="keep retrying an unavailable server this long (default 60s)")
    p.add_argument("event_id", metavar="EVENT_ID", help="the `id` of the ftpsource.file.ready event")
    p.add_argument("outcome", choices=sorted(_OUTCOMES), help="how processing ended")
    add_common(p)
    p.set_defaults(handler=run)
