"""``stage``, the pure part: the bucket URL, the object key template."""

from __future__ import annotations

import pytest

from ftpsource.config import parse_source_config
from ftpsource.core.stage import DEFAULT_KEY, StageTarget, check_key_template, parse_s3_url
from ftpsource.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("s3://etl-raw/landing", ("etl-raw", "landing")),
        ("s3://etl-raw/a/b/", ("etl-raw", "a/b")),
        ("s3://etl-raw", ("etl-raw", "")),
    ],
)
def test_s3_urls(url: str, parsed: tuple[str, str]) -> None:
    assert parse_s3_url(url) == parsed


@pytest.mark.parametrize("url", ["http://x/y", "s3://UPPER/x", "s3://ab/x", "s3://bucket/a//b", "s3://bucket/../x"])
def test_bad_s3_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_url(url)


def test_keys() -> None:
    def key(target: StageTarget) -> str:
        return target.key(source_id="src", path="in/a.csv", sha256="ab" * 32, generation=3)

    assert key(StageTarget("b", "landing", DEFAULT_KEY)) == f"landing/sha256/{'ab' * 32}"
    assert key(StageTarget("b", "", "{source_id}/{path}.g{generation}")) == "src/in/a.csv.g3"
    assert StageTarget("b", "p", "{name}-{sha256}").needs_digest


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{source_id}/fixed", "every file would get the same object"),
        ("{path}", "a new version would replace the old one"),
        ("{nope}/{sha256}", "unknown key field {nope}"),
        ("/{sha256}", "relative to the prefix"),
        ("../other/{sha256}", "must stay under the prefix"),
        ("a/../../{path}.{generation}", "must stay under the prefix"),
        ("{sha256}/./x", "must stay under the prefix"),
        ("{sha256}//{name}", "must stay under the prefix"),
        ("{sha256}/{name}/", "must stay under the prefix"),
    ],
)
def test_bad_key_templates(template: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_key_template(template)
    assert problem in str(info.value)


def test_stage_config() -> None:
    cfg = parse_source_config("url: file:///in\nstage: {url: 's3://etl-raw/landing', credentials: minio}\n")
    assert cfg.stage is not None and cfg.stage.target() == StageTarget("etl-raw", "landing", DEFAULT_KEY)
    with pytest.raises(ConfigError) as info:
        parse_source_config(
            "url: file:///in\nchecksum: md5\nstage: {url: 's3://etl-raw/x', credentials: minio, extra: 1}\n"
        )
    assert "stage.extra: unknown key" in str(info.value)
    with pytest.raises(ConfigError, match=r"stage: needs `checksum: sha256`"):
        parse_source_config("url: file:///in\nchecksum: md5\nstage: {url: 's3://etl-raw/x', credentials: minio}\n")
