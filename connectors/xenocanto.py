"""Xeno-canto API v3 (v2 records parse too): request builder, page parser, normalizer."""
from __future__ import annotations

import json
import os

from bestiary.connectors.base import Connector, PagingChanged
from bestiary.connectors.fields import absolute_url, blank_to_none, lat_lon, parse_date, parse_length
from bestiary.connectors.licenses import normalize_license
from bestiary.schemas.records import empty_catalog_row

SOURCE = "xeno-canto"


def page_request(base_url: str, query: str, page: int, per_page: int, api_key: str | None) -> tuple[str, dict]:
    params = {"query": query, "per_page": per_page, "page": page}
    if api_key:
        params["key"] = api_key
    return f"{base_url}/api/3/recordings", params


def parse_page(body: dict) -> tuple[list[dict], int]:
    """Records and the page count; the counts arrive as strings."""
    if not isinstance(body, dict) or "recordings" not in body:
        raise ValueError("not a Xeno-canto recordings page")
    return list(body["recordings"] or []), int(body.get("numPages") or 0)


def normalize(rec: dict) -> list[dict]:
    """One catalog row (audio) from one v3 or v2 recording."""
    row = empty_catalog_row()
    sid = str(rec["id"]).strip()
    gen, sp = blank_to_none(rec.get("gen")), blank_to_none(rec.get("sp"))
    lat, lon = lat_lon(rec.get("lat"), rec.get("lon", rec.get("lng")))
    ssp = blank_to_none(rec.get("ssp"))
    row.update(
        key=f"{SOURCE}:{sid}", source=SOURCE, source_id=sid, observation_id=f"{SOURCE}:{sid}",
        media_type="audio", media_url=absolute_url(rec.get("file")),
        media_format=(blank_to_none(rec.get("file-name")) or "").rsplit(".", 1)[-1].lower() or None,
        scientific_name=" ".join(p for p in (gen, sp, ssp) if p) or None,
        common_name=blank_to_none(rec.get("en")),
        source_taxon_id=None,
        license=normalize_license(rec.get("lic")), license_url=absolute_url(rec.get("lic")),
        attribution=f"{blank_to_none(rec.get('rec')) or 'unknown'}, xeno-canto.org/{sid}",
        recordist=blank_to_none(rec.get("rec")), lat=lat, lon=lon,
        country=blank_to_none(rec.get("cnt")), recorded_on=parse_date(rec.get("date")),
        duration_s=parse_length(rec.get("length")), quality=blank_to_none(rec.get("q")),
        sound_type=blank_to_none(rec.get("type")), remarks=blank_to_none(rec.get("rmk")),
        background_species=[a.strip() for a in (rec.get("also") or []) if a and a.strip()],
        updated_at=parse_date(rec.get("uploaded")),
        raw=json.dumps(rec, sort_keys=True, ensure_ascii=False),
    )
    return [row]


def api_key(env_name: str | None) -> str | None:
    """The key is read from the environment at request time and never stored."""
    return os.environ.get(env_name) if env_name else None


class XenoCanto(Connector):
    name, code, priority = SOURCE, "xc", 0
    cursor_field, id_ranges = "source_id", True
    needs_key, key_env, api_path = True, "XC_API_KEY", "/api/3/recordings"

    def pages(self, client, src, query, cursor):
        total = None
        while True:
            page = cursor or 1
            url, params = page_request(src.base_url, str(query), page, src.per_page, api_key(src.api_key_env))
            body = client.get_json(url, params)
            records, pages = parse_page(body)
            count = int(body.get("numRecordings") or 0)
            if total is not None and count != total:  # a record came or went: later pages shifted
                raise PagingChanged(f"numRecordings {total} -> {count} at page {page}")
            total = count
            cursor = page + 1 if page < pages and records else None
            yield records, cursor, count
            if cursor is None:
                return

    def normalize(self, src, record):
        return normalize(record)

    def with_id_range(self, query, lo, hi):
        return f"{query} nr:{lo}-{hi}"

    def delta_queries(self, query, cursor, watermark):
        return [("new", "new", f"{query} nr:{(cursor or 0) + 1}-999999999"),
                ("since", "updated", f"{query} since:{watermark[:10]}")]

    def parse_query(self, text):
        if not text.strip():
            raise ValueError("--query for xeno-canto is a tag query such as 'grp:birds gen:Parus'")
        return text


CONNECTORS = [XenoCanto()]
