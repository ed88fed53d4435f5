"""Macaulay-style search JSON with cursor paging, and asset URLs by size."""
from __future__ import annotations

import json
from collections.abc import Iterator

from bestiary.connectors.base import Connector
from bestiary.connectors.fields import blank_to_none, lat_lon, parse_date, to_float
from bestiary.connectors.licenses import normalize_license
from bestiary.schemas.records import empty_catalog_row

SOURCE = "macaulay"
IMAGE_SIZES = (320, 480, 640, 900, 1200, 1800, 2400)


def page_request(base_url: str, query: dict, cursor: str | None, per_page: int) -> tuple[str, dict]:
    params = {**query, "count": per_page, "sort": query.get("sort", "rating_rank_desc")}
    if cursor:
        params["initialCursorMark"] = cursor
    return f"{base_url}/api/v1/search", params


def parse_page(body: dict) -> tuple[list[dict], str | None]:
    try:
        results = body["results"]
        return list(results.get("content") or []), results.get("nextCursorMark")
    except (KeyError, TypeError, AttributeError):
        raise ValueError("not a Macaulay search page") from None


def asset_url(media_base: str, asset_id: str, media_type: str, size: int = 640) -> str:
    if media_type == "audio":
        return f"{media_base}/api/v2/asset/{asset_id}/mp3"
    if size not in IMAGE_SIZES:
        raise ValueError(f"Macaulay image size must be one of {IMAGE_SIZES}")
    return f"{media_base}/api/v1/asset/{asset_id}/{size}"


def normalize(item: dict, media_base: str, license_override: str | None = None) -> list[dict]:
    """One row per asset; without a licence the media stays links-only (`unknown`)."""
    row = empty_catalog_row()
    asset = str(item.get("assetId") or item.get("catalogId") or "").removeprefix("ML")
    if not asset:
        raise ValueError("Macaulay item without assetId")
    mtype = {"audio": "audio", "photo": "image", "video": "video"}.get(str(item.get("mediaType", "")).lower())
    if mtype not in ("audio", "image"):
        raise ValueError(f"unsupported Macaulay mediaType {item.get('mediaType')!r}")
    lat, lon = lat_lon(item.get("latitude"), item.get("longitude"))
    license_ = normalize_license(license_override) if license_override else normalize_license(item.get("licenseType"))
    row.update(
        key=f"{SOURCE}:{asset}", source=SOURCE, source_id=asset,
        observation_id=f"{SOURCE}:obs-{item['eBirdChecklistId']}" if item.get("eBirdChecklistId") else f"{SOURCE}:{asset}",
        media_type=mtype, media_url=asset_url(media_base, asset, mtype),
        media_format="mp3" if mtype == "audio" else "image",
        scientific_name=blank_to_none(item.get("sciName")), common_name=blank_to_none(item.get("commonName")),
        source_taxon_id=blank_to_none(item.get("speciesCode")),
        license=license_, license_url=None,
        attribution=f"{blank_to_none(item.get('userDisplayName')) or 'unknown'} / Macaulay Library ML{asset}",
        recordist=blank_to_none(item.get("userDisplayName")), lat=lat, lon=lon,
        country=blank_to_none(item.get("countryCode")), recorded_on=parse_date(item.get("obsDttm")),
        duration_s=to_float(item.get("duration")), quality=blank_to_none(str(item.get("rating") or "")),
        sound_type=blank_to_none(", ".join(item.get("behaviors") or [])) if isinstance(item.get("behaviors"), list) else blank_to_none(item.get("behaviors")),
        remarks=blank_to_none(item.get("mediaNotes")),
        raw=json.dumps(item, sort_keys=True, ensure_ascii=False),
    )
    return [row]


# ---------------------------------------------------------------- the CSV export

EXPORT_MEDIA = {"audio": "audio", "photo": "image", "video": "video"}


def read_export(data: bytes) -> list[dict]:
    """Rows of a Macaulay Library CSV export (UTF-8 with or without BOM, CRLF or LF)."""
    import csv
    import io as _io
    return list(csv.DictReader(_io.StringIO(data.decode("utf-8-sig"), newline="")))


def normalize_export_row(row: dict, media_base: str, license_override: str | None = None,
                         image_size: int = 640) -> list[dict]:
    """One catalog row per export row; the media URL is built from the catalog number."""
    out = empty_catalog_row()
    asset = str(row["ML Catalog Number"]).strip().removeprefix("ML")
    mtype = EXPORT_MEDIA.get(str(row.get("Format", "")).strip().lower())
    if not asset or mtype not in ("audio", "image"):
        raise ValueError(f"unsupported Macaulay export row {asset!r} ({row.get('Format')!r})")
    lat, lon = lat_lon(row.get("Latitude"), row.get("Longitude"))
    background = [b.split(" -- ")[0].strip() for b in (row.get("Background Species") or "").split(";") if b.strip()]
    out.update(
        key=f"{SOURCE}:{asset}", source=SOURCE, source_id=asset,
        observation_id=f"{SOURCE}:obs-{row['eBird Checklist ID']}" if blank_to_none(row.get("eBird Checklist ID"))
        else f"{SOURCE}:{asset}",
        media_type=mtype, media_url=asset_url(media_base, asset, mtype, image_size),
        media_format="mp3" if mtype == "audio" else "image",
        scientific_name=blank_to_none(row.get("Scientific Name")), common_name=blank_to_none(row.get("Common Name")),
        source_taxon_id=blank_to_none(row.get("eBird Species Code")),
        license=normalize_license(license_override) if license_override else "unknown",
        attribution=f"{blank_to_none(row.get('Recordist')) or 'unknown'} / Macaulay Library ML{asset}",
        recordist=blank_to_none(row.get("Recordist")), lat=lat, lon=lon, country=blank_to_none(row.get("Country")),
        recorded_on=parse_date(row.get("Date")), quality=blank_to_none(row.get("Average Community Rating")),
        sound_type=blank_to_none((row.get("Behaviors") or "").replace(";", ",")),
        remarks=blank_to_none(row.get("Media notes")), background_species=background,
        raw=json.dumps(row, sort_keys=True, ensure_ascii=False),
    )
    return [out]


BULK_PAGE = 10_000  # records per kept page of a bulk file source


def bulk_pages(records: list[dict], cursor) -> Iterator[tuple[list[dict], int | None, int]]:
    """A file read whole, kept in pages of BULK_PAGE records (the cursor is the next record's index)."""
    start = cursor or 0
    for lo in range(start, len(records), BULK_PAGE):
        hi = min(len(records), lo + BULK_PAGE)
        yield records[lo:hi], hi if hi < len(records) else None, len(records)
    if start >= len(records):
        yield [], None, len(records)


def read_file(client, where: str) -> bytes:
    """A bulk file from a URL (the HTTP policy applies) or a path (local, gs://, s3://)."""
    if where.startswith(("http://", "https://")):
        return client.get_bytes(where)
    from bestiary.pipelines import io  # FileSystems paths
    return io.read_bytes(where)


class Macaulay(Connector):
    name, code, priority = SOURCE, "ml", 2
    api_path = "/api/v1/search"

    def pages(self, client, src, query, cursor):
        while True:
            url, params = page_request(src.base_url, dict(query), cursor, src.per_page)
            body = client.get_json(url, params)
            records, nxt = parse_page(body)
            cursor = nxt if records and nxt and nxt != cursor else None   # the crawl checks longer cycles
            total = (body.get("results") or {}).get("count")
            yield records, cursor, total if isinstance(total, int) else None
            if cursor is None:
                return

    def normalize(self, src, record):
        return normalize(record, src.media_base_url or src.base_url, src.license_override)


class MacaulayExport(Connector):
    name, code, priority, bulk = "macaulay-export", "ml", 2, True

    def pages(self, client, src, query, cursor):
        yield from bulk_pages(read_export(read_file(client, str(query))), cursor)

    def normalize(self, src, record):
        return normalize_export_row(record, src.media_base_url or src.base_url, src.license_override)

    def parse_query(self, text):
        return text.strip()

    @staticmethod
    def record_id(record):
        return str(record.get("ML Catalog Number", "?")) if isinstance(record, dict) else "?"


CONNECTORS = [Macaulay(), MacaulayExport()]
