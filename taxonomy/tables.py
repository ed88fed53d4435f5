"""Big delimited tables (GBIF's Taxon.tsv, iNaturalist's taxa.csv) read in byte ranges and blocks.

A backbone dump has millions of rows, so no worker ever holds it: a range is
read in blocks of whole lines, each block parsed by pyarrow and filtered at
once with vectorised predicates; only matching rows leave.  Ranges let Beam
spread one file over workers.  Paths go through Beam FileSystems (gs://, s3://).
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
from apache_beam.io.filesystems import FileSystems

from bestiary.pipelines.io import RAW

BLOCK_BYTES = 8 << 20


def _open(path: str):
    return FileSystems.open(path, compression_type=RAW)


def header(path: str, delimiter: str = "\t") -> list[str]:
    with _open(path) as fh:
        line = fh.readline().decode("utf-8-sig").rstrip("\r\n")
    return line.split(delimiter)


def byte_ranges(path: str, parts: int) -> list[tuple[int, int]]:
    """`parts` ranges that cover the file; a line belongs to the range it starts in."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    step = max(1, -(-size // max(1, parts)))
    return [(s, min(size, s + step)) for s in range(0, size, step)] or [(0, 0)]


def _line_blocks(fh, start: int, end: int, block: int) -> Iterator[bytes]:
    """Blocks of whole lines whose first byte lies in [start, end); the header line is never included."""
    if start == 0:
        fh.seek(0)
        fh.readline()
    else:  # from the byte before: a line starting exactly at `start` is ours, a partial one is not
        fh.seek(start - 1)
        fh.readline()
    pos = fh.tell()
    while pos < end:
        data = fh.read(min(block, end - pos))
        if not data:
            return
        if not data.endswith(b"\n"):
            data += fh.readline()  # finish the last line, even past `end`
        pos = fh.tell()
        yield data


def scan(path: str, predicate: Callable[[pa.Table], pa.Array], columns: list[str] | None = None,
         start: int = 0, end: int | None = None, delimiter: str = "\t", block: int = BLOCK_BYTES,
         counts: dict | None = None) -> Iterator[pa.Table]:
    """Filtered row blocks of a delimited file (every column a string).

    `predicate(table) -> boolean mask`.  Rows with the wrong number of fields are skipped and
    counted in `counts["bad_rows"]`; nothing is quoted (Darwin Core dumps are unquoted TSV)."""
    names = header(path, delimiter)
    wanted = columns or names
    counts = counts if counts is not None else {}
    counts.setdefault("rows", 0)
    counts.setdefault("bad_rows", 0)

    def bad(_row) -> str:
        counts["bad_rows"] += 1
        return "skip"

    read = pacsv.ReadOptions(column_names=names, block_size=block + (1 << 20))
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if delimiter == "\t" else '"',
                               invalid_row_handler=bad)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=wanted,
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    with _open(path) as fh:
        if end is None:
            fh.seek(0, io.SEEK_END)
            end = fh.tell()
        for data in _line_blocks(fh, start, end, block):
            table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                                   convert_options=convert)
            counts["rows"] += table.num_rows
            mask = predicate(table)
            hits = table.filter(mask)
            if hits.num_rows:
                yield hits
