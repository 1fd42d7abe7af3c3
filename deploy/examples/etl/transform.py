"""Transform step of the example ETL workflow: tidy one CSV file.

- header names become lower_snake_case identifiers ("Order ID" -> "order_id"); blank names become
  ``column_<n>`` and repeated names get a ``_2``, ``_3`` suffix, so every column can be addressed;
- rows whose cells are all blank are dropped; short rows are padded, and a row longer than the header
  is an error (the file is malformed: better to fail the run than to shift columns);
- a ``_source_checksum`` column records which file version (the event's sha256) each row came from.

Usage: python transform.py --input raw.csv --output clean.csv [--source-checksum HEX] [--delimiter ,]
Only the standard library is used: the workflow runs it in a plain python:3.11-slim container.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator, Sequence

CHECKSUM_COLUMN = "_source_checksum"


class TransformError(Exception):
    """The input cannot be transformed; the message says where."""


def normalise_header(name: str) -> str:
    """One header cell -> a lower_snake_case identifier ('' when nothing usable is left)."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    if text and text[0].isdigit():
        text = f"_{text}"
    return text


def normalise_headers(names: Sequence[str]) -> list[str]:
    """All header cells, made unique and never blank."""
    result: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(names, start=1):
        base = normalise_header(name) or f"column_{index}"
        candidate, suffix = base, 2
        while candidate in seen:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        seen.add(candidate)
        result.append(candidate)
    return result


def transform_rows(rows: Iterable[Sequence[str]], checksum: str) -> Iterator[list[str]]:
    """Header row first, then data rows; yields the rows to write (header included)."""
    iterator = iter(rows)
    try:
        header = next(iterator)
    except StopIteration:
        raise TransformError("input is empty: expected a header row") from None
    # Normalised names never start with "_" + a letter, so the added column cannot collide.
    columns = normalise_headers(header)
    yield [*columns, CHECKSUM_COLUMN]
    width = len(columns)
    # Line 1 is the header; data rows are numbered as a spreadsheet would show them.
    for line, row in enumerate(iterator, start=2):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) > width:
            raise TransformError(f"line {line}: {len(cells)} cells but the header has {width}")
        yield [*cells, *([""] * (width - len(cells))), checksum]


def transform_text(text: str, checksum: str = "", delimiter: str = ",") -> str:
    """The whole transformation on in-memory CSV text; returns CSV text with ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(transform_rows(csv.reader(io.StringIO(text), delimiter=delimiter), checksum))
    return out.getvalue()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transform.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="CSV file to read (UTF-8, a BOM is accepted)")
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--source-checksum", default="", help="sha256 of the source file version")
    parser.add_argument("--delimiter", default=",", help="field delimiter of the input (default: ,)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if len(args.delimiter) != 1:
        print("transform: --delimiter must be one character", file=sys.stderr)
        return 2
    try:
        with open(args.input, encoding="utf-8-sig", newline="") as source:
            rows = list(transform_rows(csv.reader(source, delimiter=args.delimiter), args.source_checksum))
    except (OSError, UnicodeDecodeError, csv.Error, TransformError) as exc:
        print(f"transform: {args.input}: {exc}", file=sys.stderr)
        return 1
    with open(args.output, "w", encoding="utf-8", newline="") as target:
        csv.writer(target, lineterminator="\n").writerows(rows)
    print(f"transform: wrote {len(rows) - 1} rows and {len(rows[0])} columns to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
