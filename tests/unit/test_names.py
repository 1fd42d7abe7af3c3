"""Names from listings: one check for every server and protocol."""

from __future__ import annotations

import pytest

from ftpsource.adapters.base import child_path
from ftpsource.core.listing import name_problem
from ftpsource.core.model import Listing
from tests.support.hostile import BAD_NAMES


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is ''"),
        (".", "is '.'"),
        ("..", "is '..'"),
        ("../escape", "contains '/'"),
        ("a/b", "contains '/'"),
        ("/abs", "contains '/'"),
        ("x\x00y", "contains NUL"),
        ("cr\rname", "contains CR"),
        ("lf\nname", "contains LF"),
        ("ok.csv", None),
        ("...", None),
        ("..x", None),
        (".hidden", None),
        ("caf\u00e9 \u65e5\u672c.csv", None),
        ("back\\slash", None),
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_bad_name_is_skipped_and_described(name: str) -> None:
    listing = Listing([])
    assert child_path(listing, "sub", name) is None
    assert len(listing.bad_names) == 1 and listing.bad_names[0].startswith("sub: skipped an entry whose name ")


def test_directories_list_themselves_quietly_but_a_file_named_dotdot_is_hostile() -> None:
    listing = Listing([])
    assert child_path(listing, "", ".", is_dir=True) is None
    assert child_path(listing, "", b"..", is_dir=True) is None
    assert listing.bad_names == []
    assert child_path(listing, "", "..") is None
    assert listing.bad_names == ["sub: skipped an entry whose name is '..': '..'".replace("sub", ".")]


def test_good_names_become_relative_paths_and_descriptions_are_short() -> None:
    listing = Listing([])
    assert child_path(listing, "", "a.csv") == "a.csv"
    assert child_path(listing, "d/e", b"f.csv") == "d/e/f.csv"
    assert child_path(listing, "d/", "f.csv") == "d/f.csv"  # the local adapter's form of a directory
    assert child_path(listing, "", b"\xff" * 10_000) is None
    assert child_path(listing, "", "x/" * 10_000) is None
    assert [len(d) < 150 for d in listing.bad_names] == [True, True]
    assert "not UTF-8" in listing.bad_names[0] and "contains '/'" in listing.bad_names[1]


def test_a_str_name_decoded_from_bytes_that_are_not_utf8_is_refused_too() -> None:
    # os.scandir hands such a name over as a str with surrogate escapes: no event, record or log can
    # encode it as UTF-8, so it is as bad as the bytes a remote server sends.
    listing = Listing([])
    assert child_path(listing, "d", "bad\udcff.csv") is None
    assert listing.bad_names == ["d: skipped an entry whose name is not UTF-8: 'bad\\udcff.csv'"]
