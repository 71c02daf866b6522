"""Stray carriage returns in text imports.

DuckDB's CSV reader ends a line at a lone ``\\r`` as well as at ``\\n``: one stray CR inside
a row splits it in two, which makes the dialect sniffer give up on the whole file (or, with
the CR in a row's first or last field, silently stores a truncated row). Before a CSV /
JSON Lines file with such a CR is read, a cleaned copy is written:

* CSV: the physical line holding a CR outside quotes is blanked (DuckDB skips blank lines
  but still counts them, so the line numbers of later rejects stay right) and reported as
  a reject of its own, quarantined as ``malformed_row``. CRs inside quoted values are data.
* JSON Lines: a CR between JSON tokens is whitespace (it becomes a space); a raw CR inside a
  JSON string makes the line invalid JSON, so it becomes another control character, which
  keeps the line invalid: it is quarantined as ``malformed_json`` like any other.

DuckDB also refuses a file that mixes CRLF and LF line ends (e.g. files concatenated from
two systems): the copy made for either reason ends every line in LF (line breaks inside
quoted CSV values are data and stay as they are).

Files without a stray CR (the usual case: one C-speed scan finds none) are read as they
are, as are files whose lines all end in a lone CR (old Mac style; DuckDB reads those) and
UTF-16 or zstd-compressed files (not scanned).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from microseg.errors import ImportFileError, display_path

STRAY_CR = re.compile(rb"\r(?!\n)")
LONE_LF = re.compile(rb"(?<!\r)\n")
REJECT_TYPE = "STRAY CARRIAGE RETURN"
CHUNK = 1 << 22


@dataclass
class TextSource:
    """The file to read (the original or a cleaned copy) and the lines blanked in the copy
    as ``(line, error_type, text)``, like the reader's own rejects."""

    path: Path
    rejects: list[tuple[int, str, str]] = field(default_factory=list)


@contextlib.contextmanager
def cleaned(path: Path, fmt: str, encoding: str, header: bool) -> Iterator[TextSource]:
    """The file to import instead of ``path`` (a temporary copy while the context is open)."""
    if fmt not in {"csv", "jsonl"} or encoding == "utf-16" or not _needs_cleaning(path):
        yield TextSource(path)
        return
    with tempfile.TemporaryDirectory(prefix="microseg-cr-") as tmp:
        out = Path(tmp) / ("cleaned." + fmt)
        with _open(path) as src, out.open("wb") as dst:
            if fmt == "csv":
                rejects = _clean_csv(src, dst, header, display_path(path))
            else:
                _clean_jsonl(src, dst)
                rejects = []
        yield TextSource(out, rejects)


def _compressed(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix[1:] if suffix in {".gz", ".zst"} else None


def _open(path: Path) -> IO[bytes]:
    if _compressed(path) == "gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _needs_cleaning(path: Path) -> bool:
    """Whether the file has LF line ends and a stray CR (followed neither by LF nor by the
    end of the file), or mixes CRLF and LF line ends (DuckDB's reader refuses both)."""
    if _compressed(path) == "zst":
        return False
    found_lf = found_crlf = found_lone_lf = stray = False
    prev = b""  # the last byte of the previous chunk, judged with the next one
    with _open(path) as fh:
        while chunk := fh.read(CHUNK):
            data = prev + chunk
            found_lf = found_lf or b"\n" in chunk
            if not stray:
                match = STRAY_CR.search(data)
                stray = match is not None and match.start() < len(data) - 1
            if not (found_crlf and found_lone_lf):
                found_crlf = found_crlf or b"\r\n" in data
                found_lone_lf = found_lone_lf or LONE_LF.search(data, len(prev)) is not None
            if found_lf and (stray or (found_crlf and found_lone_lf)):
                return True
            prev = data[-1:]
    return False


def _split(line: bytes) -> tuple[bytes, bytes]:
    """(content, line end) of a physical line; a CR at the very end of the file ends it too."""
    for end in (b"\r\n", b"\n", b"\r"):
        if line.endswith(end):
            return line[: -len(end)], end
    return line, b""


def _clean_csv(
    src: IO[bytes], dst: IO[bytes], header: bool, shown: str
) -> list[tuple[int, str, str]]:
    """Blank the lines with a CR outside quotes; line ends outside quotes become LF."""
    rejects: list[tuple[int, str, str]] = []
    quoted = False  # inside a quoted value
    for number, line in enumerate(src, start=1):
        content, end = _split(line)
        stray = False
        if b"\r" not in content:
            quoted ^= content.count(b'"') % 2 == 1
        else:
            for byte in content:
                if byte == 0x22:
                    quoted = not quoted
                elif byte == 0x0D and not quoted:
                    stray = True
        if not stray:
            dst.write(content + (end if quoted or not end else b"\n"))
            continue
        if number == 1 and header:
            raise ImportFileError(
                f"{shown}: line 1 (the header) holds a carriage return (\\r) outside quotes;"
                " remove it and import again"
            )
        dst.write(b"\n")  # blank, but still a line
        text = content.decode("utf-8", errors="replace").replace("\r", "\\r")
        rejects.append((number, REJECT_TYPE, text))
    return rejects


def _clean_jsonl(src: IO[bytes], dst: IO[bytes]) -> None:
    """CRs inside lines: whitespace between tokens, an invalid character inside strings;
    every line end becomes LF (JSON strings hold no raw line break)."""
    for line in src:
        content, end = _split(line)
        if b"\r" in content:
            out = bytearray()
            in_string = escaped = False
            for byte in content:
                if byte == 0x0D:
                    out.append(0x01 if in_string else 0x20)  # invalid in a string / whitespace
                    escaped = False
                    continue
                out.append(byte)
                if escaped:
                    escaped = False
                elif byte == 0x5C and in_string:
                    escaped = True
                elif byte == 0x22:
                    in_string = not in_string
            content = bytes(out)
        dst.write(content + (b"\n" if end else b""))
