"""Catalog, reject and taxon records: column names and their Arrow schemas.

The catalog is one row per media item (an audio recording or an image).  Rows
are plain dicts so the pure functions that make them stay easy to test; the
schemas here fix column order and types when they are written to Parquet.
"""
from __future__ import annotations

import datetime as _dt

import pyarrow as pa

CAPTION_STRUCT = pa.struct([("kind", pa.string()), ("text", pa.string()), ("source", pa.string()),
                            ("reason", pa.string())])

CATALOG_FIELDS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),            # "{source}:{source_id}"
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("observation_id", pa.string()),
    ("media_type", pa.string()),     # "audio" | "image"
    ("media_url", pa.string()),
    ("media_format", pa.string()),   # one vocabulary (MEDIA_FORMATS): mp3, wav, flac, ..., jpeg, png, ..., unknown
    ("scientific_name", pa.string()),
    ("common_name", pa.string()),
    ("source_taxon_id", pa.string()),  # the archive's own taxon id or code (the accepted one: resolutions.taxon_id)
    ("license", pa.string()),        # SPDX-style id or "unknown"
    ("license_url", pa.string()),
    ("attribution", pa.string()),
    ("recordist", pa.string()),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("country", pa.string()),
    ("recorded_on", pa.date32()),    # the first day of what is known (null: no date)
    ("recorded_on_precision", pa.string()),  # day | month | year
    ("duration_s", pa.float64()),
    ("quality", pa.string()),
    ("sound_type", pa.string()),
    ("remarks", pa.string()),
    ("background_species", pa.list_(pa.string())),
    ("updated_at", pa.timestamp("s", tz="UTC")),   # when the archive last changed the record
    ("mirror_of", pa.string()),      # GBIF: the original it mirrors ('xeno-canto:{id}', 'inaturalist:{obs}')
    ("crawl_run", pa.int64()),       # the run whose crawl gave this version of the record
    ("content_hash", pa.string()),   # sha256 of `raw`: an incremental run's test for an edited record
    ("raw", pa.string()),            # the original record as JSON text
]
CATALOG_SCHEMA = pa.schema(CATALOG_FIELDS)
CATALOG_COLUMNS = [name for name, _ in CATALOG_FIELDS]

REJECT_FIELDS = [
    ("key", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
]
REJECT_SCHEMA = pa.schema(REJECT_FIELDS)

TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

TAXON_FIELDS = [                     # one row per accepted species the catalog holds
    ("taxon_id", pa.string()),       # accepted taxon id (GBIF usage key, or the archive's id without a backbone)
    ("accepted_name", pa.string()),
    ("rank", pa.string()),
    ("common_name", pa.string()),
] + [(r, pa.string()) for r in TAXON_RANKS] + [(f"{r}_id", pa.string()) for r in TAXON_RANKS] + [
    ("ebird_codes", pa.list_(pa.string())),   # each archive's own ids for it
    ("inat_ids", pa.list_(pa.string())),
    ("names_seen", pa.list_(pa.string())),    # what the archives called it
]
TAXON_SCHEMA = pa.schema(TAXON_FIELDS)

RESOLUTION_FIELDS = [                # one row per catalog record: how its name met a taxon
    ("key", pa.string()),
    ("source", pa.string()),
    ("given_name", pa.string()),     # the scientific name as the archive gave it
    ("given_id", pa.string()),       # the archive's taxon id or code
    ("via", pa.string()),            # name | ebird_code | inat_id | common_name
    ("lookup_name", pa.string()),    # what was looked up
    ("method", pa.string()),         # exact | synonym | fuzzy | fuzzy_synonym | gbif_match | inat_taxa | unresolved
    ("score", pa.float64()),         # fuzzy score (0-100)
    ("matched_name", pa.string()),
    ("taxon_id", pa.string()),
    ("subspecies", pa.string()),
    ("reason", pa.string()),         # why not, when unresolved
]
RESOLUTION_SCHEMA = pa.schema(RESOLUTION_FIELDS)

CAPTION_FIELDS = [
    ("key", pa.string()),
    ("default", pa.string()),
    ("captions", pa.list_(CAPTION_STRUCT)),   # every text type's caption (source and reason for the LLM's)
    ("llm_status", pa.string()),     # llm | cached | the fallback reason; null without an LLM
    ("llm_requests", pa.int64()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
]
CAPTION_SCHEMA = pa.schema(CAPTION_FIELDS)


MEDIA_FORMATS = {
    "mp3": "mp3", "mpeg": "mp3", "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3",
    "wav": "wav", "wave": "wav", "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "flac": "flac", "audio/flac": "flac", "audio/x-flac": "flac",
    "ogg": "ogg", "oga": "ogg", "opus": "ogg", "audio/ogg": "ogg", "audio/opus": "ogg",
    "m4a": "m4a", "mp4": "m4a", "audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a",
    "aac": "aac", "audio/aac": "aac", "aif": "aiff", "aiff": "aiff", "audio/aiff": "aiff", "audio/x-aiff": "aiff",
    "jpg": "jpeg", "jpeg": "jpeg", "image/jpeg": "jpeg", "image/jpg": "jpeg", "png": "png", "image/png": "png",
    "gif": "gif", "image/gif": "gif", "webp": "webp", "image/webp": "webp", "tif": "tiff", "tiff": "tiff",
    "image/tiff": "tiff",
}


def media_format(value: str | None, url: str | None = None) -> str:
    """The archive's content type or extension in one vocabulary; else the URL's extension; else unknown."""
    for v in (value, (url or "").split("?", 1)[0].rsplit("/", 1)[-1].rsplit(".", 1)[-1] if url and "." in
              url.rsplit("/", 1)[-1] else None):
        if v:
            got = MEDIA_FORMATS.get(str(v).strip().lower().split(";", 1)[0].strip())
            if got:
                return got
    return "unknown"


def date_and_precision(value) -> tuple[_dt.date | None, str | None]:
    """'2015' -> (2015-01-01, year), '2015-06' -> (2015-06-01, month), '2015-06-03' -> (that day, day)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, _dt.date):
        return value, "day"
    parts = str(value)[:10].split("-")
    try:
        nums = [int(p) for p in parts[:3]]
        return _dt.date(nums[0], nums[1] if len(nums) > 1 else 1, nums[2] if len(nums) > 2 else 1), \
            ("year", "month", "day")[len(nums) - 1]
    except (ValueError, IndexError):
        return None, None


def timestamp(value) -> _dt.datetime | None:
    """An ISO date or datetime (any offset, or none: UTC) as an aware UTC datetime; None if it is not one."""
    if value is None or value == "" or isinstance(value, _dt.datetime):
        return value or None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        t = _dt.datetime.fromisoformat(text if "T" in text or " " in text else text[:10])
    except ValueError:
        d, _ = date_and_precision(text)
        return _dt.datetime(d.year, d.month, d.day, tzinfo=_dt.timezone.utc) if d else None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).astimezone(_dt.timezone.utc)


def typed_catalog_row(row: dict) -> dict:
    """A connector's row (dates as partial ISO strings, formats as the archive said) in the catalog's types."""
    out = dict(row)
    if not isinstance(row.get("recorded_on"), _dt.date) or row.get("recorded_on_precision") is None:
        out["recorded_on"], out["recorded_on_precision"] = date_and_precision(row.get("recorded_on"))
    out["updated_at"] = timestamp(row.get("updated_at"))
    out["media_format"] = media_format(row.get("media_format"), row.get("media_url"))
    return out


def iso_date(day: _dt.date | str | None, precision: str | None) -> str | None:
    """A catalog date back to the ISO text of its precision: '2015', '2015-06' or '2015-06-03'."""
    if day is None:
        return None
    if isinstance(day, str):
        return day
    text = day.isoformat()
    return {"year": text[:4], "month": text[:7]}.get(precision or "day", text)


def empty_catalog_row() -> dict:
    """A row with every catalog column present and null."""
    row = {name: None for name in CATALOG_COLUMNS}
    row["background_species"] = []
    return row


def reject(key: str, stage: str, reason: str, detail: str = "") -> dict:
    """A reject row: every dropped record ends as one of these."""
    return {"key": key, "stage": stage, "reason": reason, "detail": detail[:500]}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows to a table with exactly the schema's columns, in its order."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)
