"""``ftpsource serve``: the gRPC server Argo's generic EventSource connects to."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ..config import ServerSettings
from ..errors import ConfigError
from ..server import serve
from .common import STATE_HELP, STATE_PASSWORD_HELP, add_common, env, path_or_none

__all__ = ["add_parser", "run"]


def _allow_roots(args: argparse.Namespace) -> list[str]:
    """``--allow-root`` flags, or else ``$FTPSOURCE_ALLOW_ROOTS`` (colon-separated, like PATH)."""
    if args.allow_root:
        roots: list[str] = args.allow_root
    else:
        roots = [r for r in (env("ALLOW_ROOTS") or "").split(":") if r]
    for root in roots:
        if not Path(root).is_dir():
            raise ConfigError([f"--allow-root: {root} is not a directory"])
    return roots


def run(args: argparse.Namespace) -> int:
    settings = ServerSettings(
        listen=args.listen,
        metrics_listen=args.metrics_listen or None,
        state=args.state,
        state_password_file=path_or_none(args.state_password_file),
        auth_token_file=path_or_none(args.auth_token_file),
        settle_token_file=path_or_none(args.settle_token_file),
        credentials_dir=path_or_none(args.credentials_dir),
        allow_roots=tuple(Path(r) for r in _allow_roots(args)),
        no_auth=args.no_auth,
        tls_cert=path_or_none(args.tls_cert),
        tls_key=path_or_none(args.tls_key),
        log_format=args.log_format or "text",
        log_level=args.log_level,
        grace_s=args.grace,
        keepalive_s=args.keepalive,
        retention_s=args.retention_days * 86400.0,
        loop_stall_s=args.loop_stall,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError(["--tls-cert and --tls-key go together"])
    asyncio.run(serve(settings))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_p = sub.add_parser("serve", help="run the gRPC server Argo's generic EventSource connects to")
    serve_p.add_argument(
        "--listen",
        default=env("LISTEN", "0.0.0.0:8080"),
        help="gRPC host:port; [::] is every IPv6 and IPv4 address (IPv4 only where there is no IPv6)",
    )
    serve_p.add_argument(
        "--metrics-listen",
        default=env("METRICS_LISTEN", "0.0.0.0:9090"),
        help="host:port for /metrics, /healthz, /readyz; empty to disable",
    )
    serve_p.add_argument("--state", default=env("STATE", "ftpsource.db"), help=STATE_HELP)
    serve_p.add_argument("--state-password-file", default=env("STATE_PASSWORD_FILE"), help=STATE_PASSWORD_HELP)
    serve_p.add_argument("--auth-token-file", default=env("AUTH_TOKEN_FILE"))
    serve_p.add_argument(
        "--settle-token-file",
        default=env("SETTLE_TOKEN_FILE"),
        help="a second token that may settle events but not open streams (for Workflows)",
    )
    serve_p.add_argument(
        "--no-auth",
        action="store_true",
        default=env("NO_AUTH", "") in ("1", "true"),
        help="accept streams without a token even when listening beyond loopback",
    )
    serve_p.add_argument("--credentials-dir", default=env("CREDENTIALS_DIR"))
    serve_p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="a local directory streams may read (repeatable; env FTPSOURCE_ALLOW_ROOTS, colon-separated); "
        "without it no file:// stream is allowed",
    )
    serve_p.add_argument("--tls-cert", default=env("TLS_CERT"))
    serve_p.add_argument("--tls-key", default=env("TLS_KEY"))
    serve_p.add_argument(
        "--grace",
        type=float,
        default=float(env("GRACE", "10") or 10),
        help="seconds to confirm what streams were sent and close them on SIGTERM",
    )
    serve_p.add_argument(
        "--keepalive",
        type=float,
        default=float(env("KEEPALIVE", "5") or 5),
        help="seconds of client silence before a ping; unanswered ones are dropped (also how soon a "
        "written event counts as delivered)",
    )
    serve_p.add_argument(
        "--retention-days",
        type=float,
        default=float(env("RETENTION_DAYS", "35") or 35),
        help="days to keep delivered events and tombstones of deleted files (identical bytes uploaded "
        "again within this time are not reported again)",
    )
    serve_p.add_argument(
        "--loop-stall",
        type=float,
        default=float(env("LOOP_STALL", "30") or 30),
        help="seconds without event-loop progress after which /healthz answers 503",
    )
    add_common(serve_p)
    serve_p.set_defaults(handler=run)
