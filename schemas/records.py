"""Catalog, reject and taxon records: column names and their Arrow schemas.

The catalog is one row per media item (an audio recording or an image).  Rows
are plain dicts so the pure functions that make them stay easy to test; the
schemas here fix column order and types when they are written to Parquet.
"""
from __future__ import annotations

import pyarrow as pa

CATALOG_FIELDS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),            # "{source}:{source_id}"
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("observation_id", pa.string()),
    ("media_type", pa.string()),     # "audio" | "image"
    ("media_url", pa.string()),
    ("media_format", pa.string()),   # content type or extension as the archive said
    ("scientific_name", pa.string()),
    ("common_name", pa.string()),
    ("taxon_id", pa.string()),       # the archive's own taxon id or code
    ("license", pa.string()),        # SPDX-style id or "unknown"
    ("license_url", pa.string()),
    ("attribution", pa.string()),
    ("recordist", pa.string()),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("country", pa.string()),
    ("recorded_on", pa.string()),    # ISO date or null
    ("duration_s", pa.float64()),
    ("quality", pa.string()),
    ("sound_type", pa.string()),
    ("remarks", pa.string()),
    ("background_species", pa.list_(pa.string())),
    ("updated_at", pa.string()),
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
    ("captions", pa.string()),       # JSON list of {"kind", "text"} (+ "source", "reason" for llm)
    ("llm_status", pa.string()),     # llm | cached | the fallback reason; null without an LLM
    ("llm_requests", pa.int64()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
]
CAPTION_SCHEMA = pa.schema(CAPTION_FIELDS)


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
