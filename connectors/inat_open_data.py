"""iNaturalist's open-data dump (s3://inaturalist-open-data/): photos for full rebuilds.

Four tab-separated files despite the `.csv` names (optionally gzipped): observations,
photos, taxa, observers.  Rows are streamed, never loaded whole; only the
observations and taxa the photos point at are kept in memory.
"""
from __future__ import annotations

import csv
import gzip
import io as _io
import json
from collections.abc import Iterator

from bestiary.connectors.base import Connector
from bestiary.connectors.fields import blank_to_none, lat_lon, parse_date
from bestiary.connectors.licenses import normalize_license
from bestiary.schemas.records import empty_catalog_row

SOURCE = "inaturalist"
PHOTO_BASE = "https://inaturalist-open-data.s3.amazonaws.com/photos"


def read_tsv(data: bytes) -> Iterator[dict]:
    """Rows of one dump file (bytes as fetched; gzip detected by its magic number)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = _io.StringIO(data.decode("utf-8-sig"))
    yield from csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE)


def photo_url(photo_id: str, extension: str, size: str = "medium", base: str = PHOTO_BASE) -> str:
    return f"{base}/{photo_id}/{size}.{extension}"


def normalize_photo(photo: dict, obs: dict | None, taxon: dict | None, observer: dict | None,
                    base: str = PHOTO_BASE) -> list[dict]:
    """One image row, keyed like the API's photos (`inaturalist:photo-{id}`) so both dedupe."""
    row = empty_catalog_row()
    obs = obs or {}
    lat, lon = lat_lon(obs.get("latitude"), obs.get("longitude"))
    name = blank_to_none((observer or {}).get("name"))
    who = name if name and name != "None" else blank_to_none((observer or {}).get("login"))
    row.update(
        key=f"{SOURCE}:photo-{photo['photo_id']}", source=SOURCE, source_id=f"photo-{photo['photo_id']}",
        observation_id=f"{SOURCE}:uuid-{photo['observation_uuid']}", media_type="image",
        media_url=photo_url(photo["photo_id"], photo["extension"], base=base), media_format=photo["extension"],
        scientific_name=blank_to_none((taxon or {}).get("name")),
        source_taxon_id=blank_to_none(obs.get("taxon_id")), license=normalize_license(photo.get("license")),
        attribution=f"(c) {who or 'unknown'}, iNaturalist", recordist=who, lat=lat, lon=lon,
        recorded_on=parse_date(obs.get("observed_on")), quality=blank_to_none(obs.get("quality_grade")),
        raw=json.dumps({"photo": photo, "observation": obs, "taxon": taxon}, sort_keys=True),
    )
    return [row]


def joined_photos(observations: bytes, photos: bytes, taxa: bytes, observers: bytes) -> Iterator[dict]:
    """Each photo row with its observation, taxon and observer rows (the raw record kept per photo)."""
    photo_rows = list(read_tsv(photos))
    wanted_obs = {p["observation_uuid"] for p in photo_rows}
    obs = {o["observation_uuid"]: o for o in read_tsv(observations) if o["observation_uuid"] in wanted_obs}
    wanted_taxa = {o["taxon_id"] for o in obs.values()}
    taxa_by_id = {t["taxon_id"]: t for t in read_tsv(taxa) if t["taxon_id"] in wanted_taxa}
    wanted_people = {p["observer_id"] for p in photo_rows}
    people = {p["observer_id"]: p for p in read_tsv(observers) if p["observer_id"] in wanted_people}
    for p in photo_rows:
        o = obs.get(p["observation_uuid"])
        yield {"photo": p, "observation": o, "taxon": taxa_by_id.get((o or {}).get("taxon_id")),
               "observer": people.get(p["observer_id"])}


def normalize_dump(observations: bytes, photos: bytes, taxa: bytes, observers: bytes,
                   base: str = PHOTO_BASE) -> Iterator[dict]:
    """Image rows for every photo in the dump, joined to its observation, taxon and observer."""
    for j in joined_photos(observations, photos, taxa, observers):
        yield from normalize_photo(j["photo"], j["observation"], j["taxon"], j["observer"], base)


DUMP_FILES = ("observations", "photos", "taxa", "observers")


class INaturalistOpenData(Connector):
    """The bulk dump; its query names the four files (paths or URLs), its base_url is the photo bucket."""
    name, code, priority, bulk = "inaturalist-open-data", "inat", 1, True

    def pages(self, client, src, query, cursor):
        from bestiary.connectors.macaulay import bulk_pages, read_file
        query = dict(query)
        missing = [k for k in DUMP_FILES if k not in query]
        if missing:
            raise ValueError(f"inaturalist-open-data query lacks {', '.join(missing)}")
        files = {k: read_file(client, str(query[k])) for k in DUMP_FILES}
        yield from bulk_pages(list(joined_photos(**files)), cursor)

    def normalize(self, src, record):
        return normalize_photo(record["photo"], record["observation"], record["taxon"], record["observer"],
                               src.base_url)

    @staticmethod
    def record_id(record):
        photo = record.get("photo") if isinstance(record, dict) else None
        return str((photo or {}).get("photo_id", "?"))


CONNECTORS = [INaturalistOpenData()]
