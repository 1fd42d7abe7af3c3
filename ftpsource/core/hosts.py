"""PURE: which hosts a credential set may be sent to.

A set's ``hosts`` file lists, one a line, ``host`` (any port), ``host:port``, ``[v6addr]:port`` or
``*.example.com`` (any subdomain of example.com, not example.com itself). Names are compared without
case and without a trailing dot; IP addresses in their canonical form.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["HostRule", "host_allowed", "parse_host_rules"]

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True, slots=True)
class HostRule:
    """``host`` exactly, or any subdomain of it when ``wildcard``; ``port`` None means any port."""

    host: str
    port: int | None
    wildcard: bool = False

    def allows(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def _canonical(host: str) -> str | None:
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host if _NAME.fullmatch(host) else None


def _parse_rule(entry: str) -> HostRule:
    host, port = entry, None
    if "/" in entry:
        raise ValueError("expected host, host:port, [address]:port or *.domain, not a URL")
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected [address]:port")
        host, port_text = inside, rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        port_text = None  # a name, or a bare IPv6 address (any port)
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    wildcard = host.startswith("*.")
    canonical = _canonical(host[2:] if wildcard else host)
    if canonical is None or (wildcard and ":" in canonical):
        raise ValueError("expected host, host:port, [address]:port or *.domain")
    return HostRule(canonical, port, wildcard)


def parse_host_rules(text: str) -> tuple[list[HostRule], list[str]]:
    """Rules from a ``hosts`` file, and one problem per unusable line (blank and ``#`` lines are skipped)."""
    rules: list[HostRule] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            rules.append(_parse_rule(entry))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    return rules, problems


def host_allowed(rules: list[HostRule], host: str, port: int) -> bool:
    """Whether a connection to ``host:port`` is allowed by any rule."""
    canonical = _canonical(host)
    return canonical is not None and any(rule.allows(canonical, port) for rule in rules)
