"""File I/O through Beam's FileSystems, so local paths, gs:// and s3:// all work.

Local writes go to a temporary name and are renamed (atomic on POSIX); object
stores make an object visible only when its upload completes.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RAW = CompressionTypes.UNCOMPRESSED


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else os.path.join(*parts)


def is_local(path: str) -> bool:
    return "://" not in path


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def write_bytes(path: str, data: bytes) -> None:
    if is_local(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return
    with FileSystems.create(path, compression_type=RAW) as fh:
        fh.write(data)


def read_bytes(path: str) -> bytes:
    # RAW: Beam would otherwise gunzip '.gz' files on read (and gzip them on write) by their name
    with FileSystems.open(path, compression_type=RAW) as fh:
        return fh.read()


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def write_table(path: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(path, buf.getvalue())


def read_table(path: str) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(path)))


def parts(folder: str) -> list[str]:
    """The Parquet parts of a table folder, sorted; or the files a glob matches; or one Parquet file."""
    if any(c in folder for c in "*?["):
        return listdir(folder)
    if folder.endswith(".parquet"):
        return [folder] if exists(folder) else []
    return listdir(join(folder, "part-*.parquet"))


def read_rows(path: str, columns: list[str] | None = None) -> list[dict]:
    """Every row of a table folder (or file).  For small tables and tests: the stages stream parts."""
    rows: list[dict] = []
    for part in parts(path):
        rows += pq.read_table(io.BytesIO(read_bytes(part)), columns=columns).to_pylist()
    return rows


def clear(folder: str) -> None:
    """Remove a folder and everything under it (a stage's output before it is written again)."""
    if is_local(folder):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        delete(listdir(join(folder, "**")))


def listdir(pattern: str) -> list[str]:
    """Paths matching a glob, sorted."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def rename(src: str, dst: str) -> None:
    if is_local(src):
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        os.replace(src, dst)
    else:
        FileSystems.rename([src], [dst])


def basename(path: str) -> str:
    return posixpath.basename(path)


class AtomicWriter:
    """A file written under a temporary name and renamed on success (local), or an object
    uploaded as it is written and visible only once complete (object stores).  On an
    exception nothing appears under the final name."""

    def __init__(self, path: str):
        self.path = path
        self.tmp = f"{path}.tmp-{os.getpid()}" if is_local(path) else None

    def __enter__(self):
        if self.tmp:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.fh = open(self.tmp, "wb")
        else:
            self.fh = FileSystems.create(self.path, compression_type=RAW)
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:
        self.fh.close()
        if self.tmp:
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                os.remove(self.tmp)
        elif exc_type is not None and FileSystems.exists(self.path):
            FileSystems.delete([self.path])
