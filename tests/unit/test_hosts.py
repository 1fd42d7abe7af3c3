"""Host rules of credential sets, table-driven."""

from __future__ import annotations

import pytest

from ftpsource.core.hosts import host_allowed, parse_host_rules


@pytest.mark.parametrize(
    ("hosts", "host", "port", "allowed"),
    [
        ("ftp.partner.com", "ftp.partner.com", 21, True),
        ("ftp.partner.com", "FTP.Partner.com.", 2121, True),
        ("ftp.partner.com", "attacker.example", 21, False),
        ("ftp.partner.com", "ftp.partner.com.attacker.example", 21, False),
        ("ftp.partner.com", "evilftp.partner.com", 21, False),
        ("ftp.partner.com:21", "ftp.partner.com", 21, True),
        ("ftp.partner.com:21", "ftp.partner.com", 2121, False),
        ("*.partner.com", "ftp.partner.com", 21, True),
        ("*.partner.com", "a.b.partner.com", 22, True),
        ("*.partner.com", "partner.com", 21, False),
        ("*.partner.com", "evilpartner.com", 21, False),
        ("*.partner.com:22", "sftp.partner.com", 2222, False),
        ("127.0.0.1", "127.0.0.1", 2121, True),
        ("127.0.0.1:2121", "127.0.0.1", 2121, True),
        ("127.0.0.1:2121", "127.0.0.2", 2121, False),
        ("::1", "::1", 22, True),
        ("[::1]:22", "0:0::1", 22, True),
        ("[::1]:22", "::1", 23, False),
        ("# comment\n\nftp.a.com  # trailing\nsftp.b.com:22", "sftp.b.com", 22, True),
        ("", "ftp.partner.com", 21, False),
    ],
)
def test_host_rules(hosts: str, host: str, port: int, allowed: bool) -> None:
    rules, problems = parse_host_rules(hosts)
    assert problems == []
    assert host_allowed(rules, host, port) is allowed


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("ftp.a.com:x", "the port must be a number"),
        ("ftp.a.com:0", "the port must be a number"),
        ("ftp.a.com:70000", "the port must be a number"),
        ("*", "expected host"),
        ("*.*.a.com", "expected host"),
        ("a b", "expected host"),
        ("[::1", "expected [address]:port"),
        ("ftp://a.com/", "expected host"),
        ("*.::1", "expected host"),
    ],
)
def test_bad_host_lines_are_named(line: str, problem: str) -> None:
    rules, problems = parse_host_rules(f"ok.com\n{line}\n")
    assert len(rules) == 1 and len(problems) == 1
    assert problems[0].startswith(f"line 2: {problem}")
