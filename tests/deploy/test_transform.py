"""deploy/examples/etl/transform.py, the ETL example's transform step (shipped as a ConfigMap)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.deploy import DEPLOY

SCRIPT = DEPLOY / "examples" / "etl" / "transform.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("etl_transform", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


transform = _load()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Order ID", "order_id"),
        ("  Customer Name ", "customer_name"),
        ("unitPrice", "unit_price"),
        ("OrderID", "order_id"),
        ("e-mail", "e_mail"),
        ("Amount (EUR)", "amount_eur"),
        ("2024 total", "_2024_total"),
        ("already_snake", "already_snake"),
        ("***", ""),
        ("", ""),
    ],
)
def test_normalise_header(raw: str, expected: str) -> None:
    assert transform.normalise_header(raw) == expected


def test_headers_are_unique_and_never_blank() -> None:
    assert transform.normalise_headers(["Name", "name", "NAME", "", "  "]) == [
        "name",
        "name_2",
        "name_3",
        "column_4",
        "column_5",
    ]


def test_transform_text_drops_empty_rows_pads_short_ones_and_adds_the_checksum() -> None:
    text = "Order ID,Customer Name,Amount\n1, Ann ,10\n,,\n\n2,Bob\n   ,  , \n3,Cy,7\n"
    assert transform.transform_text(text, checksum="abc") == (
        "order_id,customer_name,amount,_source_checksum\n1,Ann,10,abc\n2,Bob,,abc\n3,Cy,7,abc\n"
    )


def test_an_existing_checksum_column_is_kept_apart() -> None:
    out = transform.transform_text("a,_source_checksum\n1,old\n", checksum="new")
    assert out == "a,source_checksum,_source_checksum\n1,old,new\n"


def test_quoted_cells_and_other_delimiters_survive() -> None:
    text = 'id;note\n1;"a; b"\n2;"line\nbreak"\n'
    out = transform.transform_text(text, checksum="", delimiter=";")
    assert out == 'id,note,_source_checksum\n1,a; b,\n2,"line\nbreak",\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "input is empty"),
        ("a,b\n1,2,3\n", "line 2: 3 cells but the header has 2"),
    ],
)
def test_malformed_input_is_an_error(text: str, message: str) -> None:
    with pytest.raises(transform.TransformError, match=message):
        transform.transform_text(text)


def test_main_reads_and_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "raw.csv"
    # A BOM, as spreadsheet exports write it, must not end up in the first header name.
    source.write_bytes("\ufeffFirst Name,Age\r\nAnn,31\r\n,\r\n".encode())
    target = tmp_path / "clean.csv"
    code = transform.main(["--input", str(source), "--output", str(target), "--source-checksum", "f00d"])
    assert code == 0
    assert target.read_text(encoding="utf-8") == "first_name,age,_source_checksum\nAnn,31,f00d\n"
    assert "wrote 1 rows and 3 columns" in capsys.readouterr().out


def test_main_fails_cleanly_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "raw.csv"
    source.write_text("a\n1,2\n", encoding="utf-8")
    target = tmp_path / "clean.csv"
    assert transform.main(["--input", str(source), "--output", str(target)]) == 1
    assert "line 2" in capsys.readouterr().err
    assert not target.exists(), "no partial output on failure"
    assert transform.main(["--input", str(tmp_path / "absent.csv"), "--output", str(target)]) == 1
    assert transform.main(["--input", str(source), "--output", str(target), "--delimiter", "ab"]) == 2


def test_runs_as_a_script_with_only_the_standard_library(tmp_path: Path) -> None:
    """The workflow runs it as `python /opt/etl/transform.py` in a bare python image."""
    source = tmp_path / "raw.csv"
    source.write_text("X,Y\n1,2\n", encoding="utf-8")
    target = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), f"--input={source}", f"--output={target}", "--source-checksum=c"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_text(encoding="utf-8") == "x,y,_source_checksum\n1,2,c\n"
