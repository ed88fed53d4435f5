"""iNaturalist API v1 observations (sounds and photos): requests, page parser, normalizer."""
from __future__ import annotations

import json
import re

from bestiary.connectors.base import Connector
from bestiary.connectors.fields import blank_to_none, lat_lon, parse_date, to_float
from bestiary.connectors.licenses import normalize_license
from bestiary.schemas.records import empty_catalog_row

SOURCE = "inaturalist"
PHOTO_SIZE = "medium"  # 500 px; the API's `url` is the 75 px "square"


def page_request(base_url: str, query: dict, id_above: int, per_page: int) -> tuple[str, dict]:
    params = {**query, "per_page": min(per_page, 200), "order_by": "id", "order": "asc", "id_above": id_above}
    return f"{base_url}/v1/observations", params


def parse_page(body: dict) -> list[dict]:
    if not isinstance(body, dict) or "results" not in body:
        raise ValueError("not an iNaturalist results page")
    return list(body["results"] or [])


def _location(obs: dict) -> tuple[float | None, float | None]:
    loc = obs.get("location")
    if isinstance(loc, str) and "," in loc:
        return lat_lon(*loc.split(",", 1))
    if isinstance(loc, (list, tuple)) and len(loc) == 2:  # pyinaturalist's converted form
        return lat_lon(loc[0], loc[1])
    coords = (obs.get("geojson") or {}).get("coordinates")
    if coords and len(coords) == 2:
        return lat_lon(coords[1], coords[0])
    return None, None


def photo_url(url: str | None, size: str = PHOTO_SIZE) -> str | None:
    return re.sub(r"/square\.(jpe?g|png|gif)", rf"/{size}.\1", url) if url else None


def normalize(obs: dict) -> list[dict]:
    """One audio row per sound and one image row per photo, each with its own licence."""
    taxon = obs.get("taxon") or {}
    user = obs.get("user") or {}
    lat, lon = _location(obs)
    if not str(obs.get("id") or "").isdigit():
        raise ValueError(f"observation without a numeric id: {obs.get('id')!r}")
    oid = str(obs["id"])
    base = empty_catalog_row()
    base.update(
        source=SOURCE, observation_id=f"{SOURCE}:{oid}",
        scientific_name=blank_to_none(taxon.get("name")),
        common_name=blank_to_none(taxon.get("preferred_common_name")),
        source_taxon_id=str(taxon["id"]) if taxon.get("id") is not None else None,
        recordist=blank_to_none(user.get("name")) or blank_to_none(user.get("login")),
        lat=lat, lon=lon, country=None,
        recorded_on=parse_date(obs.get("observed_on")),
        quality=blank_to_none(obs.get("quality_grade")),
        remarks=blank_to_none(obs.get("description")),
        updated_at=blank_to_none(str(obs.get("updated_at") or "")),
        raw=json.dumps(obs, sort_keys=True, ensure_ascii=False, default=str),
    )
    if obs.get("obscured") or obs.get("geoprivacy") in ("obscured", "private"):
        # obscured coordinates are a ~20 km box: flagged so users can filter them
        base["quality"] = f"{base['quality'] or ''};coords_obscured".lstrip(";")
    rows = []
    for snd in obs.get("sounds") or []:
        if snd.get("id") is None:
            raise ValueError("sound without an id")
        row = dict(base)
        row.update(
            key=f"{SOURCE}:sound-{snd['id']}", source_id=f"sound-{snd['id']}", media_type="audio",
            media_url=blank_to_none(snd.get("file_url")), media_format=blank_to_none(snd.get("file_content_type")),
            license=normalize_license(snd.get("license_code")), license_url=None,
            attribution=blank_to_none(snd.get("attribution")), duration_s=to_float(snd.get("duration")),
        )
        rows.append(row)
    for ph in obs.get("photos") or []:
        if ph.get("id") is None:
            raise ValueError("photo without an id")
        row = dict(base)
        row.update(
            key=f"{SOURCE}:photo-{ph['id']}", source_id=f"photo-{ph['id']}", media_type="image",
            media_url=photo_url(blank_to_none(ph.get("url"))), media_format="image",
            license=normalize_license(ph.get("license_code")), license_url=None,
            attribution=blank_to_none(ph.get("attribution")),
        )
        rows.append(row)
    return rows


class INaturalist(Connector):
    name, code, priority = SOURCE, "inat", 1
    cursor_field, id_ranges = "observation_id", True   # observation ids: what `id_above` pages on
    api_path = "/v1/observations"

    def pages(self, client, src, query, cursor):
        while True:
            above = cursor or int(dict(query).get("id_above", 0))
            url, params = page_request(src.base_url, dict(query), above, src.per_page)
            body = client.get_json(url, params)
            records = parse_page(body)
            ids = [int(r["id"]) for r in records if isinstance(r, dict) and str(r.get("id", "")).isdigit()]
            cursor = max(ids) if ids else None
            if cursor is not None and cursor <= above:  # ids must grow: a page at or below the cursor ends it
                cursor = None
            total = body.get("total_results")
            yield records, cursor, int(total) if str(total).isdigit() else None
            if cursor is None:
                return

    def normalize(self, src, record):
        return normalize(record)

    def with_id_range(self, query, lo, hi):
        return {**dict(query), "id_above": lo - 1, "id_below": hi + 1}

    def delta_queries(self, query, cursor, watermark):
        q = {k: v for k, v in dict(query).items() if k not in ("id_above", "id_below")}
        return [("new", "new", {**q, "id_above": cursor or 0}), ("since", "updated", {**q, "updated_since": watermark})]


CONNECTORS = [INaturalist()]
