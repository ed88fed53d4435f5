"""Tables as folders of Parquet parts, read and written by Beam transforms.

`ReadTable` lists a folder's parts on a worker at run time (so the graph holds
a path, never a file list or rows) and streams each part in record batches.
`WriteTable` sorts rows into a number of parts fixed by the rows' total size
(`part_bytes`), each part written by one worker, rows sorted inside it: the
same rows give the same bytes on any runner.  pyarrow, DuckDB, pandas and
polars read such a folder as one table.
"""
from __future__ import annotations

import io as _io
import math
import zlib
from collections.abc import Iterable, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from bestiary.pipelines import io
from bestiary.pipelines.singletons import Once, one
from bestiary.schemas.records import to_table

ROW_GROUP = 10_000
BATCH = 2_000
PART_BYTES = 16 << 20   # a part's rows as written; a worker holds about 3x that while it sorts and writes


def stable_bucket(value: object, n: int) -> int:
    """A bucket in [0, n) from a value's text: the same on every worker (Python's hash() is salted)."""
    return zlib.crc32(str(value).encode()) % n if n > 1 else 0


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def sort_rows(rows: Iterable[dict], by: Sequence[str]) -> list[dict]:
    return sorted(rows, key=lambda r: tuple((r.get(c) is None, r.get(c) if r.get(c) is not None else "") for c in by))


def write_part(path: str, rows: list[dict], schema: pa.Schema) -> None:
    buf = _io.BytesIO()
    pq.write_table(to_table(rows, schema), buf, compression="zstd", row_group_size=ROW_GROUP)
    io.write_bytes(path, buf.getvalue())


def read_part(path: str, columns: list[str] | None = None) -> Iterable[list[dict]]:
    """A part's rows in batches (a part is a few tens of MB; its rows never all become dicts at once)."""
    f = pq.ParquetFile(_io.BytesIO(io.read_bytes(path)))
    cols = [c for c in columns if c in f.schema_arrow.names] if columns else None
    for batch in f.iter_batches(batch_size=BATCH, columns=cols):
        yield batch.to_pylist()


class _ReadPart(beam.DoFn):
    def __init__(self, columns: list[str] | None):
        self.columns = columns

    def process(self, path: str):
        for batch in read_part(path, self.columns):
            yield from batch


class ReadTable(beam.PTransform):
    """Rows (dicts) of a table folder or of the Parquet files a glob matches; none when there are none."""

    def __init__(self, where: str, columns: list[str] | None = None):
        super().__init__()
        self.where, self.columns = where, columns

    def expand(self, pbegin):
        return (pbegin | "where" >> Once(self.where) | "parts" >> beam.FlatMap(io.parts)
                | "spread" >> beam.Reshuffle() | "rows" >> beam.ParDo(_ReadPart(self.columns)))


class _WritePart(beam.DoFn):
    def __init__(self, folder: str, schema: pa.Schema, sort_by: Sequence[str]):
        self.folder, self.schema, self.sort_by = folder, schema, tuple(sort_by)

    def process(self, item):
        i, rows = item
        rows = sort_rows(rows, self.sort_by)
        write_part(io.join(self.folder, part_name(i)), rows, self.schema)
        yield part_name(i), len(rows)


def row_bytes(row: dict) -> int:
    """About what a row weighs in memory once written out (strings and bytes by length)."""
    n = 0
    for v in row.values():
        n += len(v) if isinstance(v, (str, bytes)) else 16 * (len(v) + 1) if isinstance(v, (list, dict)) else 8
    return n


def _sum_pairs(pairs) -> tuple[int, int]:
    rows = size = 0
    for r, s in pairs:
        rows, size = rows + r, size + s
    return rows, size


def _assign(row: dict, total: tuple[int, int], part_bytes: int, by: str):
    return stable_bucket(row.get(by), max(1, math.ceil(total[1] / part_bytes))), row


def _write_empty(_, total: tuple[int, int], folder: str, schema: pa.Schema) -> None:
    if total[0] == 0:  # readers still see the table's columns
        write_part(io.join(folder, part_name(0)), [], schema)


class WriteTable(beam.PTransform):
    """Rows -> `folder/part-NNNNN.parquet`: as many parts as keep each near `part_bytes` (one worker holds a
    part), rows in parts by a stable hash of `sort_by[0]`, sorted by `sort_by` inside.

    The folder should be empty (the stage clears its outputs first).  Returns (part, rows) per part."""

    def __init__(self, folder: str, schema: pa.Schema, sort_by: Sequence[str] = ("key",), part_bytes: int = PART_BYTES):
        super().__init__()
        self.folder, self.schema, self.sort_by, self.part_bytes = folder, schema, tuple(sort_by), part_bytes

    def expand(self, rows):
        total = (rows | "weigh" >> beam.Map(lambda r: (1, row_bytes(r)))
                 | "total" >> beam.CombineGlobally(_sum_pairs).without_defaults())
        keyed = rows | "part of" >> beam.Map(_assign, one(total, (0, 0)), self.part_bytes, self.sort_by[0])
        _ = (rows.pipeline | "if empty" >> Once()
             | "empty table" >> beam.Map(_write_empty, one(total, (0, 0)), self.folder, self.schema))
        return (keyed | "group parts" >> beam.GroupByKey()
                | "write parts" >> beam.ParDo(_WritePart(self.folder, self.schema, self.sort_by)))

