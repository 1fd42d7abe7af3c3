"""Integrity checks of file contents by extension, and parsing of sidecar checksum files.

Pure code, no I/O. A verifier (see ``Verifier`` in ``model.py``) is fed every chunk of a file
while the file is hashed, then ``finish`` says whether the bytes form a *complete* file of their format,
returning a short problem description (``"truncated gzip: no end of stream"``) or None.

Memory is bounded whatever the file size or compression ratio: compressed input is fed in slices of
at most ``_IN_SLICE`` bytes, each decompression call produces at most ``_OUT_MAX`` bytes, and that output
is dropped at once. zip and parquet verifiers keep only a bounded tail of the file. Chunks are never
copied on the hot path beyond those bounded tails.

Sidecars are ``sha256sum``/``md5sum`` output (GNU or BSD ``--tag`` style, or a bare digest);
``parse_sidecar`` picks the digest that applies to one data file.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from .model import Verifier

__all__ = ["SidecarDigest", "SidecarError", "parse_sidecar", "verifier_for"]

#: Compressed bytes passed to one decompression call (bounds the decompressor's pending input).
_IN_SLICE = 64 * 1024
#: Decompressed bytes produced by one decompression call; the output is discarded immediately.
_OUT_MAX = 256 * 1024
#: xz dictionaries are chosen by the writer (``xz -9`` needs 65 MiB); refuse absurd ones.
_XZ_MEMLIMIT = 256 * 1024 * 1024

_Buffer = bytes | memoryview


# --------------------------------------------------------------------------------------------------
# Compressed streams: gzip, bzip2, xz
# --------------------------------------------------------------------------------------------------


class _StreamVerifier:
    """A sequence of one or more compressed streams (members), optionally zero-padded between and after.

    Subclasses create a decompressor per stream (``_start``) and run a slice through it (``_run``),
    returning the input left over after the end of the stream, or None while the stream goes on.
    """

    __slots__ = ("_open", "_padding", "_problem", "_streams")

    _format: ClassVar[str]
    _magic: ClassVar[bytes]
    _errors: ClassVar[tuple[type[Exception], ...]]
    #: Zero padding after a stream must come in multiples of this (xz: 4; gzip/bzip2 tools accept any).
    _padding_unit: ClassVar[int] = 1

    def __init__(self) -> None:
        self._open = False
        self._streams = 0
        self._padding = 0
        self._problem: str | None = None

    def update(self, chunk: bytes) -> None:
        if self._problem is not None:
            return
        if len(chunk) <= _IN_SLICE:
            self._feed(chunk)
            return
        view = memoryview(chunk)
        for start in range(0, len(view), _IN_SLICE):
            self._feed(view[start : start + _IN_SLICE])
            if self._problem is not None:
                return

    def finish(self) -> str | None:
        if self._problem is None:
            if self._open:
                self._problem = f"truncated {self._format}: no end of stream"
            elif self._streams == 0:
                self._problem = f"truncated {self._format}: empty file"
            else:
                self._problem = self._check_padding()
        return self._problem

    def _check_padding(self) -> str | None:
        if self._padding % self._padding_unit:
            return f"{self._format}: stream padding is not a multiple of {self._padding_unit} bytes"
        return None

    def _feed(self, data: _Buffer) -> None:
        try:
            while data:
                if not self._open:
                    if self._streams and data[0] == 0:
                        # Zero padding after a stream (tape blocks; xz stream padding) is allowed.
                        stripped = bytes(data).lstrip(b"\0")
                        self._padding += len(data) - len(stripped)
                        data = stripped
                        if not data:
                            return
                    if not self._magic.startswith(bytes(data[: len(self._magic)])):
                        self._problem = (
                            f"{self._format}: trailing garbage after end of stream"
                            if self._streams
                            else f"{self._format}: not {self._format} data (bad magic bytes)"
                        )
                        return
                    self._problem = self._check_padding()
                    if self._problem is not None:
                        return
                    self._padding = 0
                    self._start()
                    self._open = True
                    self._streams += 1
                rest = self._run(data)
                if rest is None:
                    return
                self._open = False
                data = rest
        except self._errors as exc:
            self._problem = self._describe(exc)
        except MemoryError:
            self._problem = f"{self._format}: needs too much memory to decompress"

    def _describe(self, exc: Exception) -> str:
        detail = str(exc).rpartition(": ")[2] or type(exc).__name__
        where = f" in stream {self._streams}" if self._streams > 1 else ""
        return f"{self._format}: corrupt data{where} ({detail})"

    def _start(self) -> None:
        raise NotImplementedError

    def _run(self, data: _Buffer) -> bytes | None:
        raise NotImplementedError


class _GzipVerifier(_StreamVerifier):
    """gzip (RFC 1952), multi-member. Checks each member's CRC-32 and length trailer."""

    __slots__ = ("_dec",)

    _format = "gzip"
    _magic = b"\x1f\x8b\x08"
    _errors = (zlib.error,)

    def _start(self) -> None:
        # 31: gzip wrapper only (47 would also accept a zlib stream, which a .gz file must not be).
        self._dec = zlib.decompressobj(31)

    def _run(self, data: _Buffer) -> bytes | None:
        dec = self._dec
        out = dec.decompress(data, _OUT_MAX)
        # Drain: leftover input sits in unconsumed_tail; a full buffer may mean more pending output.
        while not dec.eof and (dec.unconsumed_tail or len(out) == _OUT_MAX):
            out = dec.decompress(dec.unconsumed_tail, _OUT_MAX)
        return dec.unused_data if dec.eof else None

    def _describe(self, exc: Exception) -> str:
        message = str(exc)
        where = f" in member {self._streams}" if self._streams > 1 else ""
        if "incorrect data check" in message:
            return f"gzip: CRC mismatch{where} (corrupt data)"
        if "incorrect length check" in message:
            return f"gzip: length mismatch in trailer{where} (corrupt data)"
        if "header" in message or "compression method" in message:
            return f"gzip: bad header{where}"
        detail = message.rpartition(": ")[2]
        return f"gzip: corrupt data{where} ({detail})"


class _DecompressorVerifier(_StreamVerifier):
    """Streams decoded with bz2/lzma decompressor objects (``needs_input`` protocol)."""

    __slots__ = ("_dec",)

    def _new(self) -> bz2.BZ2Decompressor | lzma.LZMADecompressor:
        raise NotImplementedError

    def _start(self) -> None:
        self._dec = self._new()

    def _run(self, data: _Buffer) -> bytes | None:
        dec = self._dec
        dec.decompress(data, _OUT_MAX)
        while not dec.eof and not dec.needs_input:
            dec.decompress(b"", _OUT_MAX)
        return dec.unused_data if dec.eof else None


class _Bz2Verifier(_DecompressorVerifier):
    """bzip2, multi-stream (pbzip2/lbzip2 output). Checks block and stream CRCs."""

    __slots__ = ()

    _format = "bz2"
    _magic = b"BZh"
    _errors = (OSError, EOFError)

    def _new(self) -> bz2.BZ2Decompressor:
        return bz2.BZ2Decompressor()


class _XzVerifier(_DecompressorVerifier):
    """xz, multi-stream with stream padding. Checks the integrity check, index and footer."""

    __slots__ = ()

    _format = "xz"
    _magic = b"\xfd7zXZ\x00"
    _errors = (lzma.LZMAError, EOFError)
    _padding_unit = 4

    def _new(self) -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)

    def _describe(self, exc: Exception) -> str:
        if "memory" in str(exc).lower():
            return f"xz: needs more than {_XZ_MEMLIMIT >> 20} MiB to decompress (dictionary too large)"
        return super()._describe(exc)


# --------------------------------------------------------------------------------------------------
# zip: the central directory at the end
# --------------------------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64_LOCATOR_SIZE = 20
_EOCD64 = b"PK\x06\x06"
_EOCD64_SIZE = 56
_CENTRAL_HEADER = b"PK\x01\x02"
_CENTRAL_HEADER_SIZE = 46
_MAX_COMMENT = 0xFFFF
#: End record with the longest comment, plus the zip64 end record and locator that may precede it.
_ZIP_TAIL = _EOCD_SIZE + _MAX_COMMENT + _EOCD64_LOCATOR_SIZE + _EOCD64_SIZE

_EOCD_STRUCT = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR_STRUCT = struct.Struct("<4sLQL")
_EOCD64_STRUCT = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_LENGTHS = struct.Struct("<3H")  # name, extra, comment lengths at offset 28 of a central header


class _ZipVerifier:
    """A zip archive is complete when its end record and central directory are present and consistent."""

    __slots__ = ("_size", "_tail")

    def __init__(self) -> None:
        self._size = 0
        self._tail = bytearray()

    def update(self, chunk: bytes) -> None:
        n = len(chunk)
        self._size += n
        tail = self._tail
        if n >= _ZIP_TAIL:
            tail[:] = memoryview(chunk)[n - _ZIP_TAIL :]
        else:
            tail += chunk
            if len(tail) > 2 * _ZIP_TAIL:  # trim lazily: each byte is copied O(1) times
                del tail[: len(tail) - _ZIP_TAIL]

    def finish(self) -> str | None:
        tail = bytes(self._tail[-_ZIP_TAIL:])
        base = self._size - len(tail)  # file offset of tail[0]
        pos, problem = _find_end_record(tail)
        if problem is not None:
            return problem
        _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _EOCD_STRUCT.unpack_from(tail, pos)
        records_start = pos  # the central directory ends where the end records begin
        locator = pos - _EOCD64_LOCATOR_SIZE
        if locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR:
            _, _, eocd64_offset, disks = _EOCD64_LOCATOR_STRUCT.unpack_from(tail, locator)
            record = locator - _EOCD64_SIZE
            if record < 0 or tail[record : record + 4] != _EOCD64:
                record = eocd64_offset - base  # a zip64 end record with extensible data, at its offset
                if not 0 <= record <= locator - _EOCD64_SIZE or tail[record : record + 4] != _EOCD64:
                    return "zip: zip64 end record missing"
            fields = _EOCD64_STRUCT.unpack_from(tail, record)
            disk, cd_disk, entries, cd_size, cd_offset = fields[4], fields[5], fields[7], fields[8], fields[9]
            if disks > 1:
                return None  # one part of a split archive
            records_start = record
        if disk != 0 or cd_disk != 0:
            return None  # one part of a split archive; its directory refers to other parts
        cd_start = base + records_start - cd_size  # file offset; cd_offset is smaller if data was prepended
        if cd_start < 0 or cd_offset > cd_start:
            return "zip: central directory does not fit in the file before its end record"
        if entries and not cd_size:
            return "zip: end record lists entries but the central directory is empty"
        rel = cd_start - base
        if cd_size and rel >= 0:
            return _check_central_directory(tail, rel, records_start, entries)
        return None


def _find_end_record(tail: bytes) -> tuple[int, str | None]:
    """Offset in ``tail`` of the end record whose comment ends exactly at the end of the file."""
    floor = max(0, len(tail) - _EOCD_SIZE - _MAX_COMMENT)
    pos = tail.rfind(_EOCD, floor)
    first = pos
    while pos >= 0:
        if pos + _EOCD_SIZE <= len(tail):
            (comment_length,) = struct.unpack_from("<H", tail, pos + 20)
            if pos + _EOCD_SIZE + comment_length == len(tail):
                return pos, None
        pos = tail.rfind(_EOCD, floor, pos + len(_EOCD) - 1)
    if first >= 0 and first + _EOCD_SIZE <= len(tail):
        (comment_length,) = struct.unpack_from("<H", tail, first + 20)
        extra = len(tail) - (first + _EOCD_SIZE + comment_length)
        if extra > 0:
            return -1, "zip: unexpected data after the end record"
    return -1, "zip: no central directory (end record missing)"


def _check_central_directory(tail: bytes, start: int, end: int, entries: int) -> str | None:
    """Walk the central directory headers in ``tail[start:end]``."""
    count = 0
    pos = start
    while pos < end:
        if pos + _CENTRAL_HEADER_SIZE > end or tail[pos : pos + 4] != _CENTRAL_HEADER:
            return "zip: central directory is corrupt (an entry has no header signature)"
        name, extra, comment = _CENTRAL_LENGTHS.unpack_from(tail, pos + 28)
        pos += _CENTRAL_HEADER_SIZE + name + extra + comment
        count += 1
    if pos != end:
        return "zip: central directory is corrupt (entries overrun its size)"
    if count != entries:
        return "zip: central directory and end record disagree on the number of entries"
    return None


# --------------------------------------------------------------------------------------------------
# parquet: magic at both ends, footer length before the final magic
# --------------------------------------------------------------------------------------------------

_PARQUET_MAGICS = (b"PAR1", b"PARE")  # PARE: encrypted footer


class _ParquetVerifier:
    """``PAR1`` <row groups> <footer> <4-byte LE footer length> ``PAR1``."""

    __slots__ = ("_head", "_size", "_tail")

    def __init__(self) -> None:
        self._size = 0
        self._head = b""
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        n = len(chunk)
        self._size += n
        if len(self._head) < 4:
            self._head += chunk[: 4 - len(self._head)]
        self._tail = chunk[-8:] if n >= 8 else (self._tail + chunk)[-8:]

    def finish(self) -> str | None:
        if self._size < 12:
            return f"truncated parquet: {self._size} bytes is too short for a parquet file"
        if self._head not in _PARQUET_MAGICS:
            return "parquet: missing PAR1 magic at the start"
        if self._tail[4:] != self._head:
            return "truncated parquet: missing PAR1 magic at the end (footer not written)"
        (footer_length,) = struct.unpack_from("<L", self._tail)
        if footer_length == 0:
            return "parquet: empty footer"
        if 4 + footer_length + 8 > self._size:
            return f"parquet: footer length does not fit in the file ({self._size} bytes)"
        return None


_VERIFIERS: dict[str, Callable[[], Verifier]] = {
    ".gz": _GzipVerifier,
    ".tgz": _GzipVerifier,
    ".bz2": _Bz2Verifier,
    ".tbz": _Bz2Verifier,
    ".tbz2": _Bz2Verifier,
    ".xz": _XzVerifier,
    ".txz": _XzVerifier,
    ".zip": _ZipVerifier,
    ".parquet": _ParquetVerifier,
}


def verifier_for(path: str) -> Verifier | None:
    """A fresh verifier for the file's format, chosen by extension (case-insensitive), or None."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    if dot <= 0:
        return None
    factory = _VERIFIERS.get(name[dot:].lower())
    return factory() if factory is not None else None


# --------------------------------------------------------------------------------------------------
# Sidecar checksum files
# --------------------------------------------------------------------------------------------------

Algorithm = Literal["sha256", "md5"]
_ALGORITHM_BY_LENGTH: dict[int, Algorithm] = {64: "sha256", 32: "md5"}
_BSD_NAMES: dict[str, Algorithm] = {"sha256": "sha256", "sha2-256": "sha256", "md5": "md5"}

# coreutils: <hex><space><' ' text | '*' binary><name>; a single space (BSD ``-r``) is accepted too.
_GNU_LINE = re.compile(r"([0-9A-Fa-f]+)(?:[ \t]([ *]?)(.*))?", re.DOTALL)
_KNOWN_ALGORITHMS = frozenset(
    {"sha1", "sha224", "sha384", "sha512", "sha512-224", "sha512-256", "sha3-256", "sha3-512", "blake2b", "sm3"}
)
_BSD_START = re.compile(r"([A-Za-z0-9-]+) ?\(")
_BSD_END = re.compile(r" ?= ?([0-9A-Fa-f]+)")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {"\\": "\\", "n": "\n", "r": "\r"}


@dataclass(frozen=True, slots=True)
class SidecarDigest:
    """The digest a sidecar gives for one data file. ``value`` is lowercase hex."""

    algorithm: Algorithm
    value: str


class SidecarError(ValueError):
    """The sidecar is not a checksum file or has no usable digest for the data file."""


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    hex: str
    name: str | None  # None: a bare digest (or ``-``, stdin)
    tag: str | None  # BSD algorithm tag, lowercased


def parse_sidecar(content: bytes, data_name: str) -> SidecarDigest:
    """The digest for ``data_name`` in a ``sha256sum``/``md5sum`` file; raises ``SidecarError``.

    Lines are ``<hex>  <name>``, ``<hex> *<name>``, ``SHA256 (<name>) = <hex>`` (``--tag``) or a bare
    ``<hex>`` when it is the only line. Names are compared by basename; blank and ``#`` lines are skipped.
    The algorithm follows from the digest length: 64 hex digits are sha256, 32 are md5.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SidecarError("sidecar: not UTF-8 text") from None
    target = _basename(data_name)
    lines: list[_Line] = []
    bad_line = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r").lstrip(" \t")
        if not line.strip() or line.startswith("#"):
            continue
        parsed = _parse_line(number, line)
        if parsed is None:
            bad_line = bad_line or number
        else:
            lines.append(parsed)

    matches = [line for line in lines if line.name is not None and _basename(line.name) == target]
    if matches:
        digests = {_digest(line, target) for line in matches}
        if len(digests) > 1:
            raise SidecarError(f"sidecar: conflicting checksums for {target!r}")
        return digests.pop()
    if bad_line:
        if not lines:
            raise SidecarError(f"sidecar: unrecognised format in line {bad_line}")
        raise SidecarError(f"sidecar: no checksum line for {target!r} (unrecognised format in line {bad_line})")
    if len(lines) == 1 and lines[0].name is None:
        return _digest(lines[0], target)
    if not lines:
        raise SidecarError("sidecar: empty (no checksum line)")
    raise SidecarError(f"sidecar: no checksum line for {target!r}")


def _parse_line(number: int, line: str) -> _Line | None:
    escaped = line.startswith("\\")  # coreutils escapes names holding '\\' or newlines this way
    if escaped:
        line = line[1:]
    bsd = _BSD_START.match(line)
    if bsd is not None:
        rest = line[bsd.end() :]
        close = rest.rfind(")")
        end = _BSD_END.fullmatch(rest, close + 1) if close >= 0 else None
        if end is not None:
            name = _unescape(rest[:close]) if escaped else rest[:close]
            if name is None:
                return None
            return _Line(number, end.group(1), name or None, bsd.group(1).lower())
    gnu = _GNU_LINE.fullmatch(line)
    if gnu is None:
        return None
    name = gnu.group(3) or ""
    if escaped:
        unescaped = _unescape(name)
        if unescaped is None:
            return None
        name = unescaped
    return _Line(number, gnu.group(1), None if name in ("", "-") else name, None)


def _unescape(name: str) -> str | None:
    if any(m.group(1) not in _UNESCAPED for m in _ESCAPE.finditer(name)):
        return None
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], name)


def _digest(line: _Line, target: str) -> SidecarDigest:
    algorithm = _ALGORITHM_BY_LENGTH.get(len(line.hex))
    if line.tag is not None:
        tagged = _BSD_NAMES.get(line.tag)
        if tagged is None:
            # Named only when it is a known algorithm: the tag is text read from the watched file.
            named = f" {line.tag.upper()}" if line.tag.lower() in _KNOWN_ALGORITHMS else ""
            raise SidecarError(
                f"sidecar: unsupported algorithm{named} for {target!r} in line {line.number} (expected sha256 or md5)"
            )
        if algorithm != tagged:
            raise SidecarError(
                f"sidecar: {line.tag.upper()} digest for {target!r} has {len(line.hex)} hex digits "
                f"in line {line.number}"
            )
    if algorithm is None:
        raise SidecarError(
            f"sidecar: unsupported digest length {len(line.hex)} for {target!r} in line {line.number} "
            "(expected 64 hex digits for sha256 or 32 for md5)"
        )
    return SidecarDigest(algorithm, line.hex.lower())


def _basename(name: str) -> str:
    return name.rpartition("/")[2]
