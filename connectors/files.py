"""A lab's own recordings: rows of a CSV or Parquet file that name audio files (and, optionally, images).

Columns: `path` (a local path, relative to the table's folder or absolute, an
s3:// or gs:// path, or an http(s) URL) and `scientific_name`; optionally
`common_name`, `license`, `recordist`, `lat`, `lon`, `recorded_on`,
`observation_id`, `image` (a path or URL like `path`), `remarks`.  Each row
becomes an audio catalog row (and an image row with the same observation when
`image` is given) and goes through enrich, caption and shard like an archive
record: a missing file or unreadable audio is rejected at probe, an unknown
name at enrich, a row without `path` or `scientific_name` at crawl.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import posixpath
import re
from collections.abc import Iterator

from bestiary.connectors.base import Connector
from bestiary.connectors.fields import blank_to_none, lat_lon, parse_date
from bestiary.connectors.licenses import license_url, normalize_license
from bestiary.schemas.records import empty_catalog_row, media_format

SOURCE = "files"
COLUMNS = ("path", "scientific_name", "common_name", "license", "recordist", "lat", "lon", "recorded_on",
           "observation_id", "image", "remarks")
REQUIRED = ("path", "scientific_name")


class BadRow(ValueError):
    """A row the source cannot use; `reason` is its reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def read_rows(data: bytes, where: str) -> list[tuple[int, dict]]:
    """(where in the table, row) with values as strings: Parquet by its magic number (rows counted from 1),
    else CSV (UTF-8 with or without a BOM; numbered by line, the header being line 1)."""
    first = 1
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq
        table = pq.read_table(_io.BytesIO(data))
        rows = table.to_pylist()
        header = table.column_names
    else:
        first = 2
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{where}: not a UTF-8 CSV or a Parquet file") from None
        reader = csv.DictReader(_io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        rows = list(reader)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{where}: no {' or '.join(missing)} column (columns: {', '.join(header) or 'none'})")
    return [(first + i, {k: (None if v is None else str(v)) for k, v in r.items() if k in COLUMNS})
            for i, r in enumerate(rows)]


def resolve(path: str, folder: str) -> str:
    """A row's path as the build reads it: URLs and absolute paths as given, the rest under the table's folder."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", path) or path.startswith("/"):
        return path
    if "://" in folder:
        return posixpath.join(folder, path)
    return posixpath.normpath(posixpath.join(folder, path))


def folder_of(where: str) -> str:
    return where.rsplit("/", 1)[0] if "/" in where else "."


def source_id(path: str, table: str) -> str:
    """Stable and short: the file's stem (for people) and a hash of its path as the table gives it and the
    table's name (for uniqueness), so moving the whole folder keeps every key."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", posixpath.splitext(posixpath.basename(path.split("?", 1)[0]))[0])
    digest = hashlib.sha256(f"{posixpath.basename(table)}\x1f{path}".encode()).hexdigest()[:10]
    return f"{stem.strip('-')[:24] or 'file'}-{digest}"


def normalize_row(row: dict, folder: str, license_override: str | None = None, table: str = "") -> list[dict]:
    """The audio row (and its image row) of one table row; a row that cannot be used raises BadRow."""
    path, name = blank_to_none(row.get("path")), blank_to_none(row.get("scientific_name"))
    if path is None:
        raise BadRow("missing_path", "the row has no path")
    if name is None:
        raise BadRow("missing_name", f"{path}: the row has no scientific_name")
    audio_path = resolve(path, folder)
    sid = source_id(path, table)
    lat, lon = lat_lon(row.get("lat"), row.get("lon"))
    given = blank_to_none(row.get("license"))
    # the table's licence column, else the source's `license_override` (a lab licensing its own recordings)
    lic = normalize_license(given) if given else (normalize_license(license_override) if license_override else "unknown")
    obs = blank_to_none(row.get("observation_id"))
    who = blank_to_none(row.get("recordist"))
    base = empty_catalog_row()
    base.update(
        source=SOURCE, observation_id=f"{SOURCE}:{obs}" if obs else f"{SOURCE}:{sid}",
        scientific_name=name, common_name=blank_to_none(row.get("common_name")),
        license=lic, license_url=license_url(lic), recordist=who, attribution=who,
        lat=lat, lon=lon, recorded_on=parse_date(row.get("recorded_on")), remarks=blank_to_none(row.get("remarks")),
        raw=json.dumps(row, sort_keys=True, ensure_ascii=False),
    )
    out = [{**base, "key": f"{SOURCE}:{sid}", "source_id": sid, "media_type": "audio", "media_url": audio_path,
            "media_format": media_format(None, audio_path)}]
    image = blank_to_none(row.get("image"))
    if image is not None:
        image_path = resolve(image, folder)
        out.append({**base, "key": f"{SOURCE}:{sid}-image", "source_id": f"{sid}-image", "media_type": "image",
                    "media_url": image_path, "media_format": media_format(None, image_path)})
    return out


class Files(Connector):
    """`queries` are tables (paths or URLs); rows carry the table's folder so relative paths resolve there."""
    name, code, priority, bulk = SOURCE, "files", 0, True
    needs_base_url, local_media = False, True

    def pages(self, client, src, query, cursor) -> Iterator[tuple[list[dict], int | None, int]]:
        from bestiary.connectors.macaulay import bulk_pages, read_file
        where = str(query)
        folder = folder_of(where)
        rows = [{**r, "_table": where, "_folder": folder, "_row": n}
                for n, r in read_rows(read_file(client, where), where)]
        yield from bulk_pages(rows, cursor)

    def normalize(self, src, record):
        row = {k: v for k, v in record.items() if not k.startswith("_")}
        return normalize_row(row, record["_folder"], src.license_override, str(record.get("_table", "")))

    def parse_query(self, text):
        return text.strip()

    @staticmethod
    def record_id(record):
        if not isinstance(record, dict):
            return "?"
        return f"{posixpath.basename(str(record.get('_table', '?')))}:{record.get('_row', '?')}"


CONNECTORS = [Files()]
