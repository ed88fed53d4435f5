"""GBIF species match (v1): the lineage of a name."""
from __future__ import annotations

from bestiary.schemas.records import TAXON_RANKS


def match_request(base_url: str, name: str) -> tuple[str, dict]:
    return f"{base_url}/v1/species/match", {"name": name, "kingdom": "Animalia", "strict": "false", "verbose": "true"}


def parse_match(body: dict) -> dict | None:
    """Lineage names and keys of the accepted usage, or None when nothing matched.

    For a synonym GBIF gives the accepted name's lineage with `acceptedUsageKey`;
    `confidence` 100 on a NONE match means nothing.
    """
    if not isinstance(body, dict) or body.get("matchType") in (None, "NONE") or "usageKey" not in body:
        return None
    out = {
        "taxon_id": str(body.get("acceptedUsageKey") or body["usageKey"]),
        "rank": str(body.get("rank", "")).lower(),
        "status": body.get("status"),
        "match_type": body.get("matchType"),
        "confidence": body.get("confidence"),
        "accepted_name": body.get("species") if body.get("synonym") else body.get("canonicalName"),
    }
    for r in TAXON_RANKS:
        out[r] = body.get(r)
        key = body.get(f"{r}Key")
        out[f"{r}_id"] = str(key) if key is not None else None
    return out


# ---------------------------------------------------------------- occurrences with media

import json as _json  # noqa: E402
import re as _re  # noqa: E402

from bestiary.connectors.base import Connector, PagingChanged  # noqa: E402
from bestiary.connectors.fields import blank_to_none, lat_lon, parse_date  # noqa: E402
from bestiary.connectors.licenses import normalize_license  # noqa: E402
from bestiary.schemas.records import empty_catalog_row  # noqa: E402

SOURCE = "gbif"
XENO_CANTO_DATASET = "b1047888-ae52-4179-9dd5-5448ea342a24"
INATURALIST_DATASET = "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
MAX_LIMIT = 300          # GBIF's page size cap
MAX_OFFSET = 100_000     # offset + limit beyond this needs a download instead
_XC = _re.compile(r"xeno-canto\.org/(\d+)")
_INAT = _re.compile(r"inaturalist\.org/observations/(\d+)")


def occurrence_request(base_url: str, query: dict, offset: int, limit: int) -> tuple[str, dict]:
    return f"{base_url}/v1/occurrence/search", {**query, "limit": min(limit, MAX_LIMIT), "offset": offset}


def parse_occurrence_page(body: dict) -> tuple[list[dict], bool, int]:
    """(results, endOfRecords, count)."""
    if not isinstance(body, dict) or "results" not in body:
        raise ValueError("not a GBIF occurrence page")
    return list(body["results"] or []), bool(body.get("endOfRecords", True)), int(body.get("count") or 0)


def mirror_of(occ: dict) -> str | None:
    """The original record a GBIF occurrence mirrors: 'xeno-canto:{id}' or 'inaturalist:{observation id}'."""
    for field in ("references", "occurrenceID", "identifier"):
        value = str(occ.get(field) or "")
        if m := _XC.search(value):
            return f"xeno-canto:{m.group(1)}"
        if m := _INAT.search(value):
            return f"inaturalist:{m.group(1)}"
    if m := _re.fullmatch(r"XC(\d+)", str(occ.get("catalogNumber") or "")):
        return f"xeno-canto:{m.group(1)}"
    return None


def normalize_occurrence(occ: dict) -> list[dict]:
    """One row per Sound or StillImage medium; media without a licence take the record's."""
    key = str(occ.get("key") or occ["gbifID"])
    lat, lon = lat_lon(occ.get("decimalLatitude"), occ.get("decimalLongitude"))
    base = empty_catalog_row()
    base.update(
        source=SOURCE, observation_id=f"{SOURCE}:{key}",
        scientific_name=blank_to_none(occ.get("species")) or blank_to_none(occ.get("scientificName")),
        common_name=blank_to_none(occ.get("vernacularName")),
        source_taxon_id=str(occ.get("speciesKey") or occ.get("taxonKey") or "") or None,
        recordist=blank_to_none(occ.get("recordedBy")), lat=lat, lon=lon, country=blank_to_none(occ.get("countryCode")),
        recorded_on=parse_date(occ.get("eventDate")), remarks=blank_to_none(occ.get("occurrenceRemarks")),
        updated_at=blank_to_none(occ.get("lastInterpreted")), mirror_of=mirror_of(occ),
        raw=_json.dumps(occ, sort_keys=True, ensure_ascii=False),
    )
    rows = []
    for i, medium in enumerate(occ.get("media") or []):
        kind = {"Sound": "audio", "StillImage": "image"}.get(medium.get("type"))
        if kind is None or not medium.get("identifier"):
            continue
        lic = medium.get("license") or occ.get("license")
        row = dict(base)
        row.update(key=f"{SOURCE}:{key}-{i}", source_id=f"{key}-{i}", media_type=kind,
                   media_url=medium["identifier"], media_format=blank_to_none(medium.get("format")),
                   license=normalize_license(lic), license_url=blank_to_none(lic),
                   attribution=blank_to_none(medium.get("rightsHolder")) or blank_to_none(medium.get("creator"))
                   or blank_to_none(occ.get("recordedBy")))
        rows.append(row)
    return rows


class GbifOccurrences(Connector):
    name, code, priority = SOURCE, "gbif", 3
    api_path = "/v1/occurrence/search"

    def pages(self, client, src, query, cursor):
        from bestiary.connectors.http import FetchError
        total = None
        while True:
            offset = cursor or 0
            url, params = occurrence_request(src.base_url, dict(query), offset, src.per_page)
            records, end, count = parse_occurrence_page(client.get_json(url, params))
            if total is not None and count != total:  # offset paging shifts too
                raise PagingChanged(f"count {total} -> {count} at offset {offset}")
            total = count
            nxt = offset + len(records)
            if not end and records and nxt + min(src.per_page, MAX_LIMIT) > MAX_OFFSET:
                raise FetchError("gbif_offset_limit", "over 100,000 results: split the query or use a GBIF download")
            cursor = nxt if records and not end else None
            yield records, cursor, count
            if cursor is None:
                return

    def normalize(self, src, record):
        return normalize_occurrence(record)

    @staticmethod
    def record_id(record):
        return str(record.get("key") or record.get("gbifID") or "?") if isinstance(record, dict) else "?"


CONNECTORS = [GbifOccurrences()]
