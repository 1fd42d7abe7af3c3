"""Format verifiers and the sidecar parser, over real archives built here with the standard library."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import itertools
import lzma
import random
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpsource.core.formats import SidecarDigest, SidecarError, parse_sidecar, verifier_for

MiB = 1024 * 1024

# Incompressible and compressible parts, so streams have several blocks and real structure.
PAYLOAD = random.Random(20240601).randbytes(20_000) + b"date,store,amount\n2024-06-01,42,17.50\n" * 1_500


def verify(name: str, chunks: Iterable[bytes]) -> str | None:
    verifier = verifier_for(name)
    assert verifier is not None
    for chunk in chunks:
        verifier.update(chunk)
    return verifier.finish()


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- archive builders ------------------------------------------------------------------------------


def make_zip(members: dict[str, bytes], *, comment: bytes = b"", method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.comment = comment
    return buf.getvalue()


EOCD = struct.Struct("<4s4H2LH")


def zip_end(data: bytes) -> tuple[int, int, int]:
    """(entries, cd_size, cd_offset) of a zip without comment."""
    _, _, _, _, entries, cd_size, cd_offset, _ = EOCD.unpack_from(data, len(data) - 22)
    return entries, cd_size, cd_offset


def with_end(
    data: bytes, *, entries: int | None = None, cd_size: int | None = None, cd_offset: int | None = None
) -> bytes:
    """Rewrite fields of the end record of a zip without comment."""
    n, size, offset = zip_end(data)
    n = n if entries is None else entries
    size = size if cd_size is None else cd_size
    offset = offset if cd_offset is None else cd_offset
    return data[:-22] + EOCD.pack(b"PK\x05\x06", 0, 0, n, n, size, offset, 0)


def to_zip64(data: bytes) -> bytes:
    """The same archive with zip64 end records and a maxed-out classic end record."""
    entries, cd_size, cd_offset = zip_end(data)
    body = data[:-22]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


def make_parquet(payload: bytes, footer: bytes) -> bytes:
    return b"PAR1" + payload + footer + struct.pack("<L", len(footer)) + b"PAR1"


def corrupt(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x55
    return bytes(out)


GZ = gzip.compress(PAYLOAD, mtime=0)
GZ_STORED = gzip.compress(PAYLOAD, compresslevel=0, mtime=0)
BZ2 = bz2.compress(PAYLOAD)
XZ = lzma.compress(PAYLOAD)
ZIP = make_zip({"a.csv": PAYLOAD, "dir/b.txt": b"hello", "empty": b""}, comment=b"made by a test")
ZIP_PLAIN = make_zip({"a.csv": PAYLOAD, "b.txt": b"hello"})
ZIP_STORED = make_zip({"a.bin": PAYLOAD}, method=zipfile.ZIP_STORED)
ZIP_EMPTY = make_zip({})
ZIP_BIG_DIRECTORY = make_zip({f"{i:05d}-{'n' * 60}.txt": b"x" for i in range(1500)})  # directory > tail
ZIP_LONG_COMMENT = make_zip({"a.csv": PAYLOAD}, comment=b"c" * 65_000)
ZIP64 = to_zip64(ZIP_PLAIN)
PARQUET = make_parquet(random.Random(3).randbytes(5_000), b"\x15\x00" + b"footer" * 50)

VALID: list[tuple[str, str, bytes]] = [
    ("gzip", "data.csv.gz", GZ),
    ("gzip-stored", "data.csv.gz", GZ_STORED),
    ("gzip-empty-payload", "empty.gz", gzip.compress(b"", mtime=0)),
    ("gzip-multi-member", "data.gz", GZ + gzip.compress(b"second member", mtime=0) + GZ),
    ("gzip-zero-padding", "data.gz", GZ + b"\0" * 512),
    ("gzip-upper-ext", "DATA.CSV.GZ", GZ),
    ("tgz", "backup.tgz", GZ),
    ("bz2", "data.csv.bz2", BZ2),
    ("bz2-multi-stream", "data.bz2", BZ2 + bz2.compress(b"more") + BZ2),
    ("bz2-empty-payload", "empty.bz2", bz2.compress(b"")),
    ("xz", "data.csv.xz", XZ),
    ("xz-multi-stream", "data.xz", XZ + lzma.compress(b"more") + XZ),
    ("xz-stream-padding", "data.xz", XZ + b"\0" * 4 + XZ + b"\0" * 8),
    ("xz-crc32-check", "data.xz", lzma.compress(PAYLOAD, check=lzma.CHECK_CRC32)),
    ("zip", "archive.zip", ZIP),
    ("zip-plain", "archive.ZIP", ZIP_PLAIN),
    ("zip-stored", "archive.zip", ZIP_STORED),
    ("zip-empty", "empty.zip", ZIP_EMPTY),
    ("zip-big-directory", "many.zip", ZIP_BIG_DIRECTORY),
    ("zip-long-comment", "comment.zip", ZIP_LONG_COMMENT),
    ("zip64", "big.zip", ZIP64),
    ("zip-self-extracting-prefix", "sfx.zip", b"#!/bin/sh\nexit 0\n" * 10 + ZIP),
    ("parquet", "part-0000.parquet", PARQUET),
    ("parquet-minimal", "tiny.parquet", make_parquet(b"", b"f")),
]

INVALID: list[tuple[str, str, bytes, str]] = [
    ("gzip-empty-file", "a.gz", b"", "truncated gzip: empty file"),
    ("gzip-not-gzip", "a.gz", b"date,amount\n1,2\n", "gzip: not gzip data"),
    ("gzip-zlib-stream", "a.gz", zlib.compress(PAYLOAD), "gzip: not gzip data"),
    ("gzip-half", "a.gz", GZ[: len(GZ) // 2], "truncated gzip: no end of stream"),
    ("gzip-no-trailer", "a.gz", GZ[:-8], "truncated gzip: no end of stream"),
    ("gzip-half-trailer", "a.gz", GZ[:-4], "truncated gzip: no end of stream"),
    ("gzip-last-byte-missing", "a.gz", GZ[:-1], "truncated gzip: no end of stream"),
    ("gzip-payload-byte-flipped", "a.gz", corrupt(GZ_STORED, len(GZ_STORED) // 2), "gzip: CRC mismatch"),
    ("gzip-crc-byte-flipped", "a.gz", corrupt(GZ, len(GZ) - 8), "gzip: CRC mismatch"),
    ("gzip-length-byte-flipped", "a.gz", corrupt(GZ, len(GZ) - 1), "gzip: length mismatch"),
    ("gzip-deflate-corrupt", "a.gz", corrupt(GZ, 200), "gzip: "),
    ("gzip-trailing-garbage", "a.gz", GZ + b"garbage", "gzip: trailing garbage after end of stream"),
    ("gzip-zeros-then-garbage", "a.gz", GZ + b"\0\0garbage", "gzip: trailing garbage after end of stream"),
    ("gzip-second-member-cut", "a.gz", GZ + GZ[:100], "truncated gzip: no end of stream"),
    ("gzip-second-member-magic-only", "a.gz", GZ + GZ[:2], "truncated gzip: no end of stream"),
    ("gzip-second-member-corrupt", "a.gz", GZ + corrupt(GZ_STORED, 5000), "gzip: CRC mismatch in member 2"),
    ("bz2-empty-file", "a.bz2", b"", "truncated bz2: empty file"),
    ("bz2-half", "a.bz2", BZ2[: len(BZ2) // 2], "truncated bz2: no end of stream"),
    ("bz2-last-byte-missing", "a.bz2", BZ2[:-1], "truncated bz2"),
    ("bz2-corrupt", "a.bz2", corrupt(BZ2, len(BZ2) // 2), "bz2: corrupt data"),
    ("bz2-trailing-garbage", "a.bz2", BZ2 + b"garbage", "bz2: trailing garbage after end of stream"),
    ("bz2-gzip-inside", "a.bz2", GZ, "bz2: not bz2 data"),
    ("xz-empty-file", "a.xz", b"", "truncated xz: empty file"),
    ("xz-half", "a.xz", XZ[: len(XZ) // 2], "truncated xz: no end of stream"),
    ("xz-no-footer", "a.xz", XZ[:-12], "truncated xz: no end of stream"),
    ("xz-last-byte-missing", "a.xz", XZ[:-1], "truncated xz"),
    ("xz-corrupt", "a.xz", corrupt(XZ, len(XZ) // 2), "xz: corrupt data"),
    ("xz-odd-padding-between", "a.xz", XZ + b"\0" * 3 + XZ, "xz: stream padding is not a multiple of 4"),
    ("xz-odd-padding-at-end", "a.xz", XZ + b"\0" * 5, "xz: stream padding is not a multiple of 4 bytes"),
    (
        "xz-huge-dictionary",
        "a.xz",
        lzma.compress(b"tiny", filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 30}]),
        "xz: needs more than 256 MiB to decompress",
    ),
    ("xz-trailing-garbage", "a.xz", XZ + b"garbage", "xz: trailing garbage after end of stream"),
    ("zip-empty-file", "a.zip", b"", "zip: no central directory (end record missing)"),
    ("zip-half", "a.zip", ZIP[: len(ZIP) // 2], "zip: no central directory (end record missing)"),
    ("zip-last-byte-missing", "a.zip", ZIP[:-1], "zip: no central directory (end record missing)"),
    ("zip-no-central-directory", "a.zip", ZIP_PLAIN[: zip_end(ZIP_PLAIN)[2]], "zip: no central directory"),
    (
        "zip-end-record-only",
        "a.zip",
        ZIP_PLAIN[: zip_end(ZIP_PLAIN)[2]] + ZIP_PLAIN[-22:],
        "does not fit in the file",
    ),
    ("zip-offset-beyond-file", "a.zip", with_end(ZIP_PLAIN, cd_offset=10**9), "does not fit in the file"),
    ("zip-size-beyond-file", "a.zip", with_end(ZIP_PLAIN, cd_size=10**6), "does not fit in the file"),
    (
        "zip-directory-signature-broken",
        "a.zip",
        corrupt(ZIP_PLAIN, zip_end(ZIP_PLAIN)[2]),
        "zip: central directory is corrupt",
    ),
    (
        "zip-entry-count-wrong",
        "a.zip",
        with_end(ZIP_PLAIN, entries=3),
        "central directory and end record disagree on the number of entries",
    ),
    ("zip-entries-without-directory", "a.zip", with_end(ZIP_EMPTY, entries=1), "central directory is empty"),
    ("zip-trailing-data", "a.zip", ZIP_PLAIN + b"junk", "zip: unexpected data after the end record"),
    ("zip-comment-cut", "a.zip", ZIP[:-3], "zip: no central directory (end record missing)"),
    ("zip64-locator-without-record", "a.zip", ZIP64[:-98] + ZIP64[-42:], "zip: zip64 end record missing"),
    (
        "zip64-maxed-without-locator",
        "a.zip",
        ZIP_PLAIN[:-22] + EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0),
        "does not fit in the file",
    ),
    ("zip-is-gzip", "a.zip", GZ, "zip: no central directory"),
    ("parquet-empty", "a.parquet", b"", "truncated parquet"),
    ("parquet-magic-only", "a.parquet", b"PAR1", "truncated parquet"),
    (
        "parquet-half",
        "a.parquet",
        PARQUET[: len(PARQUET) // 2],
        "truncated parquet: missing PAR1 magic at the end",
    ),
    ("parquet-last-byte-missing", "a.parquet", PARQUET[:-1], "truncated parquet"),
    (
        "parquet-no-start-magic",
        "a.parquet",
        b"XXXX" + PARQUET[4:],
        "parquet: missing PAR1 magic at the start",
    ),
    ("parquet-csv", "a.parquet", b"a,b\n" * 10, "parquet: missing PAR1 magic at the start"),
    (
        "parquet-footer-too-long",
        "a.parquet",
        PARQUET[:-8] + struct.pack("<L", len(PARQUET)) + b"PAR1",
        "parquet: footer length",
    ),
    (
        "parquet-zero-footer",
        "a.parquet",
        b"PAR1" + b"x" * 20 + struct.pack("<L", 0) + b"PAR1",
        "parquet: empty footer",
    ),
]

ALL_CASES = [(case_id, name, data) for case_id, name, data in VALID] + [
    (case_id, name, data) for case_id, name, data, _ in INVALID
]


def test_fixtures_are_what_they_claim() -> None:
    """The hand-made zip64 and prefixed archives are readable by zipfile; the broken zips are not."""
    for data in (ZIP, ZIP64, ZIP_BIG_DIRECTORY, ZIP_LONG_COMMENT, b"#!/bin/sh\nexit 0\n" * 10 + ZIP):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
    assert len(ZIP_BIG_DIRECTORY) - zip_end(ZIP_BIG_DIRECTORY)[2] > 70_000
    assert gzip.decompress(GZ + b"\0" * 512) == PAYLOAD
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(ZIP_PLAIN[: zip_end(ZIP_PLAIN)[2]]))


@pytest.mark.parametrize(("name", "data"), [pytest.param(n, d, id=i) for i, n, d in VALID])
def test_complete_files_pass(name: str, data: bytes) -> None:
    assert verify(name, [data]) is None


@pytest.mark.parametrize(("name", "data", "problem"), [pytest.param(n, d, p, id=i) for i, n, d, p in INVALID])
def test_broken_files_fail(name: str, data: bytes, problem: str) -> None:
    result = verify(name, [data])
    assert result is not None
    assert problem in result
    assert len(result) < 200


SINGLE_STREAMS = [
    ("a.gz", GZ),
    ("a.gz", GZ_STORED),
    ("a.bz2", BZ2),
    ("a.xz", XZ),
    ("a.zip", ZIP),
    ("a.zip", ZIP_BIG_DIRECTORY),
    ("a.zip", ZIP64),
    ("a.parquet", PARQUET),
]


@pytest.mark.parametrize(("name", "data"), SINGLE_STREAMS, ids=[f"{n}-{len(d)}" for n, d in SINGLE_STREAMS])
@pytest.mark.parametrize("keep", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_files_fail(name: str, data: bytes, keep: float) -> None:
    cut = max(1, int(len(data) * keep)) if keep else 0
    if cut == len(data):
        cut -= 1
    assert verify(name, [data[:cut]]) is not None
    for back in (1, 2, 4, 8, 12, 22):
        assert verify(name, [data[:-back]]) is not None


@pytest.mark.parametrize(("name", "data"), [pytest.param(n, d, id=i) for i, n, d in ALL_CASES])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 65_536, 65_537, 1_000_003])
def test_fixed_chunk_sizes_do_not_matter(name: str, data: bytes, chunk_size: int) -> None:
    if chunk_size == 1 and len(data) > 30_000:
        chunk_size = 3  # same coverage of awkward boundaries, a third of the calls
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert verify(name, chunks) == verify(name, [data])


@pytest.mark.parametrize(("name", "data"), [pytest.param(n, d, id=i) for i, n, d in ALL_CASES])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.data())
def test_chunk_boundaries_do_not_matter(name: str, data: bytes, cuts: st.DataObject) -> None:
    points = cuts.draw(st.lists(st.integers(0, len(data)), max_size=24))
    assert verify(name, split(data, points)) == verify(name, [data])


def test_empty_chunks_are_harmless() -> None:
    assert verify("a.gz", [b"", GZ[:10], b"", GZ[10:], b""]) is None
    assert verify("a.zip", [b"", ZIP, b""]) is None
    assert verify("a.parquet", [b"", PARQUET[:3], b"", PARQUET[3:]]) is None


@pytest.mark.parametrize(
    "name",
    ["a.csv", "a.txt", "README", "archive.tar", "a.gz.part", "gz", ".gz", "dir.gz/file", "a.7z", "a.zst"],
)
def test_other_extensions_have_no_verifier(name: str) -> None:
    assert verifier_for(name) is None


@pytest.mark.parametrize(
    "name",
    ["a.gz", "a.GZ", "x/y/a.tar.gz", "a.tgz", "a.bz2", "a.tbz2", "a.xz", "a.txz", "a.zip", "a.Parquet"],
)
def test_known_extensions_have_fresh_verifiers(name: str) -> None:
    first, second = verifier_for(name), verifier_for(name)
    assert first is not None
    assert first is not second


# -- bounded memory --------------------------------------------------------------------------------


def test_gzip_stream_of_200_mib_needs_little_memory() -> None:
    """A 200 MiB (decompressed) gzip stream, generated and compressed on the fly, chunk by chunk."""
    block = bytes(range(256)) * 4096  # 1 MiB, highly compressible
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    verifier = verifier_for("big.csv.gz")
    assert verifier is not None
    tracemalloc.start()
    try:
        for _ in range(200):
            verifier.update(compressor.compress(block))
        verifier.update(compressor.flush())
        problem = verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem is None
    assert peak < 16 * MiB


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("bomb.gz", lambda data: gzip.compress(data, compresslevel=9, mtime=0)),
        ("bomb.bz2", bz2.compress),
        ("bomb.xz", lambda data: lzma.compress(data, preset=0)),
    ],
)
def test_highly_compressed_single_chunk_needs_little_memory(name: str, compress: Callable[[bytes], bytes]) -> None:
    """32 MiB of zeros compress to a few KiB; one update must not inflate them in one piece."""
    packed = compress(bytes(32 * MiB))
    assert len(packed) < MiB
    verifier = verifier_for(name)
    assert verifier is not None
    tracemalloc.start()
    try:
        verifier.update(packed)
        problem = verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem is None
    assert peak < 16 * MiB


def test_zip_keeps_a_bounded_tail() -> None:
    verifier = verifier_for("big.zip")
    assert verifier is not None
    tracemalloc.start()
    try:
        junk = bytes(MiB)
        for _ in range(64):
            verifier.update(junk)
        for i in range(0, len(ZIP), 1000):
            verifier.update(ZIP[i : i + 1000])
        problem = verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem is None  # the archive sits after 64 MiB of prefix, like a self-extracting one
    assert peak < 2 * MiB


# -- sidecars --------------------------------------------------------------------------------------

DATA = b"date,amount\n2024-06-01,17.50\n"
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
OTHER_SHA = hashlib.sha256(b"other").hexdigest()


def gnu_line(hexdigest: str, name: str, *, binary: bool = False) -> str:
    """A line as coreutils writes it, escaping names that hold a backslash, newline or CR."""
    escape = any(c in name for c in "\\\n\r")
    if escape:
        name = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    prefix = "\\" if escape else ""
    return f"{prefix}{hexdigest} {'*' if binary else ' '}{name}\n"


SIDECAR_OK: list[tuple[str, bytes, str, SidecarDigest]] = [
    ("gnu-text", f"{SHA}  sales.csv\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("gnu-binary", f"{SHA} *sales.csv\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("single-space", f"{SHA} sales.csv".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("md5", f"{MD5}  sales.csv\n".encode(), "sales.csv", SidecarDigest("md5", MD5)),
    ("bare", f"{SHA}\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("bare-no-newline", SHA.encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("bare-md5", f"{MD5}\r\n".encode(), "sales.csv", SidecarDigest("md5", MD5)),
    ("stdin", f"{SHA}  -\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("uppercase-hex", f"{SHA.upper()}  sales.csv\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("bsd-sha256", f"SHA256 (sales.csv) = {SHA}\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("bsd-md5", f"MD5 (sales.csv) = {MD5}\n".encode(), "sales.csv", SidecarDigest("md5", MD5)),
    ("openssl", f"SHA2-256(sales.csv)= {SHA}\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    (
        "bsd-parentheses-in-name",
        f"SHA256 (sales (1).csv) = {SHA}\n".encode(),
        "sales (1).csv",
        SidecarDigest("sha256", SHA),
    ),
    ("crlf", f"{SHA}  sales.csv\r\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("bom", b"\xef\xbb\xbf" + f"{SHA}  sales.csv\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    (
        "comments-and-blank-lines",
        f"# generated nightly\n\n  \n{SHA}  sales.csv\n\n".encode(),
        "sales.csv",
        SidecarDigest("sha256", SHA),
    ),
    (
        "multi-line-picks-name",
        f"{OTHER_SHA}  a.csv\n{SHA}  sales.csv\n{OTHER_SHA}  b.csv\n".encode(),
        "sales.csv",
        SidecarDigest("sha256", SHA),
    ),
    (
        "multi-line-mixed-algorithms",
        f"{MD5}  sales.csv\nSHA256 (other.csv) = {OTHER_SHA}\n".encode(),
        "sales.csv",
        SidecarDigest("md5", MD5),
    ),
    (
        "path-in-sidecar",
        f"{SHA}  ./exports/2024/sales.csv\n".encode(),
        "sales.csv",
        SidecarDigest("sha256", SHA),
    ),
    (
        "path-in-data-name",
        f"{SHA}  sales.csv\n".encode(),
        "exports/2024/sales.csv",
        SidecarDigest("sha256", SHA),
    ),
    (
        "repeated-same-value",
        f"{SHA}  sales.csv\n{SHA} *sales.csv\n".encode(),
        "sales.csv",
        SidecarDigest("sha256", SHA),
    ),
    ("leading-whitespace", f"  {SHA}  sales.csv\n".encode(), "sales.csv", SidecarDigest("sha256", SHA)),
    ("name-with-spaces", f"{SHA}  my sales.csv\n".encode(), "my sales.csv", SidecarDigest("sha256", SHA)),
    ("escaped-name", gnu_line(SHA, "a\\b\nc.csv").encode(), "a\\b\nc.csv", SidecarDigest("sha256", SHA)),
    ("escaped-bsd", f"\\SHA256 (a\\\\b.csv) = {SHA}\n".encode(), "a\\b.csv", SidecarDigest("sha256", SHA)),
    (
        "named-match-despite-bad-line",
        f"-----BEGIN PGP SIGNED MESSAGE-----\n{SHA}  sales.csv\n".encode(),
        "sales.csv",
        SidecarDigest("sha256", SHA),
    ),
]

SIDECAR_BAD: list[tuple[str, bytes, str, str]] = [
    ("wrong-name", f"{SHA}  other.csv\n".encode(), "sales.csv", "sidecar: no checksum line for 'sales.csv'"),
    ("garbage", b"hello world\n", "sales.csv", "sidecar: unrecognised format in line 1"),
    ("garbage-line-3", b"\n# c\nnot a checksum\n", "sales.csv", "sidecar: unrecognised format in line 3"),
    ("html", b"<html><body>404</body></html>", "sales.csv", "sidecar: unrecognised format in line 1"),
    ("non-utf8", b"\xff\xfe" + SHA.encode(), "sales.csv", "sidecar: not UTF-8 text"),
    ("latin1-name", f"{SHA}  caf".encode() + b"\xe9.csv\n", "caf\u00e9.csv", "sidecar: not UTF-8 text"),
    ("empty", b"", "sales.csv", "sidecar: empty"),
    ("only-comments", b"# nothing here\n\n", "sales.csv", "sidecar: empty"),
    (
        "sha1",
        f"{hashlib.sha1(DATA).hexdigest()}  sales.csv\n".encode(),
        "sales.csv",
        "unsupported digest length 40",
    ),
    (
        "sha512",
        f"{hashlib.sha512(DATA).hexdigest()}  sales.csv\n".encode(),
        "sales.csv",
        "unsupported digest length",
    ),
    ("bare-truncated", SHA[:40].encode(), "sales.csv", "unsupported digest length 40"),
    ("bsd-sha512", f"SHA512 (sales.csv) = {SHA}\n".encode(), "sales.csv", "unsupported algorithm SHA512"),
    (
        "bsd-length-mismatch",
        f"SHA256 (sales.csv) = {MD5}\n".encode(),
        "sales.csv",
        "SHA256 digest for 'sales.csv' has 32",
    ),
    (
        "conflicting",
        f"{SHA}  sales.csv\n{OTHER_SHA}  sales.csv\n".encode(),
        "sales.csv",
        "sidecar: conflicting checksums for 'sales.csv'",
    ),
    ("two-bare-lines", f"{SHA}\n{OTHER_SHA}\n".encode(), "sales.csv", "no checksum line for 'sales.csv'"),
    (
        "bare-among-named",
        f"{SHA}\n{OTHER_SHA}  b.csv\n".encode(),
        "sales.csv",
        "no checksum line for 'sales.csv'",
    ),
    ("bare-plus-garbage", f"{SHA}\nfoo bar\n".encode(), "sales.csv", "unrecognised format in line 2"),
    ("bad-escape", f"\\{SHA}  a\\tb.csv\n".encode(), "a\\tb.csv", "unrecognised format in line 1"),
    ("non-hex", ("z" * 64 + "  sales.csv\n").encode(), "sales.csv", "unrecognised format in line 1"),
    ("no-separator", f"{SHA}sales.csv\n".encode(), "sales.csv", "unrecognised format in line 1"),
]


@pytest.mark.parametrize(
    ("content", "data_name", "expected"), [pytest.param(c, n, e, id=i) for i, c, n, e in SIDECAR_OK]
)
def test_sidecar_accepted_forms(content: bytes, data_name: str, expected: SidecarDigest) -> None:
    assert parse_sidecar(content, data_name) == expected


@pytest.mark.parametrize(
    ("content", "data_name", "message"), [pytest.param(c, n, m, id=i) for i, c, n, m in SIDECAR_BAD]
)
def test_sidecar_rejected(content: bytes, data_name: str, message: str) -> None:
    with pytest.raises(SidecarError) as info:
        parse_sidecar(content, data_name)
    assert message in str(info.value)
    assert str(info.value).startswith("sidecar: ")


def test_sidecar_error_is_a_value_error() -> None:
    assert issubclass(SidecarError, ValueError)
    digest = parse_sidecar(f"{SHA}  a\n".encode(), "a")
    with pytest.raises(AttributeError):
        digest.value = "x"  # type: ignore[misc]


SIDECAR_ALPHABET = st.sampled_from(list("0123456789abcdefABCDEF *()=-\\#\n\r\tSHAMD5.csv/\u00e9\x00"))


@settings(max_examples=400, deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(SIDECAR_ALPHABET, max_size=200).map(str.encode),
        st.builds(
            lambda prefix, hexdigest, sep, name: (prefix + hexdigest + sep + name).encode(),
            st.sampled_from(["", "\\", " ", "SHA256 (", "MD5 ("]),
            st.sampled_from([SHA, MD5, SHA[:63], "", "xyz"]),
            st.sampled_from(["  ", " *", " ", ") = ", "", "\t"]),
            st.text(max_size=30),
        ),
    ),
    data_name=st.text(max_size=20),
)
def test_sidecar_parser_only_raises_sidecar_error(content: bytes, data_name: str) -> None:
    try:
        digest = parse_sidecar(content, data_name)
    except SidecarError as exc:
        assert str(exc).startswith("sidecar: ")
        return
    assert digest.algorithm in ("sha256", "md5")
    assert len(digest.value) == {"sha256": 64, "md5": 32}[digest.algorithm]
    assert digest.value == digest.value.lower()
    int(digest.value, 16)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=64),
    name=st.text(min_size=1, max_size=30).filter(lambda n: "/" not in n and n != "-"),
    algorithm=st.sampled_from(["sha256", "md5"]),
    binary=st.booleans(),
    bsd=st.booleans(),
)
def test_sidecar_round_trips_what_coreutils_writes(
    data: bytes, name: str, algorithm: str, binary: bool, bsd: bool
) -> None:
    hexdigest = hashlib.new(algorithm, data).hexdigest()
    if bsd:
        escape = any(c in name for c in "\\\n\r")
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        prefix = "\\" if escape else ""
        line = f"{prefix}{algorithm.upper()} ({escaped}) = {hexdigest}\n"
    else:
        line = gnu_line(hexdigest, name, binary=binary)
    other = f"{hashlib.sha256(b'x').hexdigest()}  {name}.other\n"
    assert parse_sidecar((other + line + other).encode(), name) == SidecarDigest(
        "sha256" if algorithm == "sha256" else "md5", hexdigest
    )
