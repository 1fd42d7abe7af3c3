"""Problems found in a watched file never quote what the file holds (sidecars above all: a sidecar
template pointed at a password file must not bring the password back in a ``rejected`` event)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ftpsource.core.formats import verifier_for
from ftpsource.core.verify import build_verifier

SECRETS = st.text(alphabet="0123456789abcdef", min_size=32, max_size=64) | st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="()=*"), min_size=16, max_size=40
)


def _problem(sidecar: bytes, data: bytes = b"data\n", name: str = "a.csv") -> str | None:
    verifier, problem = build_verifier(verifier_for(name), sidecar, name, f"{name}.sha256")
    if problem is not None or verifier is None:
        return problem
    verifier.update(data)
    return verifier.finish()


@settings(max_examples=200, deadline=None)
@given(
    SECRETS, st.sampled_from(["{s}", "{s}  a.csv", "{s} *a.csv", "SHA256 (a.csv) = {s}", "{s} (a.csv) = 00", "x\n{s}"])
)
def test_sidecar_problems_never_quote_the_sidecar(secret: str, form: str) -> None:
    problem = _problem(form.format(s=secret).encode())
    if hashlib.sha256(b"data\n").hexdigest() == secret:
        return
    assert problem is not None
    assert secret not in problem and secret.upper() not in problem


def test_a_mismatch_names_the_sidecar_and_says_it_does_not_match() -> None:
    secret = "ab" * 32
    problem = _problem(f"{secret}  a.csv\n".encode())
    assert problem == "sha256 mismatch with sidecar a.csv.sha256: the file does not match it"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.sampled_from(["a.gz", "a.bz2", "a.xz", "a.zip", "a.parquet"]))
def test_format_problems_never_quote_the_file(data: bytes, name: str) -> None:
    marker = b"S3cr3tMarker"
    verifier = verifier_for(name)
    assert verifier is not None
    verifier.update(marker + data + marker)
    problem = verifier.finish() or ""
    assert "S3cr3tMarker" not in problem and "\\x" not in problem
