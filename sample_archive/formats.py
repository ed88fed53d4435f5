"""The sample archive's records in each archive's real JSON shape (see archives.md)."""
from __future__ import annotations

from bestiary.sample_archive.generate import Observation, Photo, Recording
import re
import zlib

from bestiary.sample_archive.species import INAT_UPPER, Species, lineage

XC_LENGTH = lambda s: f"{int(s // 60)}:{int(round(s % 60)):02d}" if s < 3600 else f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(round(s % 60)):02d}"  # noqa: E731
XC_TAG = re.compile(r'(\w+):("[^"]*"|\S+)')
INAT_SIZES = {"square": 75, "small": 240, "medium": 500, "large": 1024, "original": 2048}


def xc_recording(r: Recording, base: str) -> dict:
    sp, given = r.species, r.given or {}
    gen, epithet = given.get("name", sp.name).split()
    return {
        "id": str(r.id), "gen": gen, "sp": epithet, "ssp": given.get("ssp", ""), "grp": sp.group, "en": sp.common,
        "rec": r.recordist, "cnt": r.country, "loc": f"Site {r.id % 97}, {r.country}",
        "lat": f"{r.lat:.4f}", "lon": f"{r.lon:.4f}", "alt": str(100 + r.id % 900), "type": r.sound_type,
        "sex": "", "stage": "adult" if r.id % 3 else "", "method": "field recording",
        "url": f"{base}/{r.id}", "file": f"{base}/{r.id}/download",
        "file-name": f"XC{r.id}-{r.recordist.replace(' ', '')}-{sp.common.replace(' ', '_')}.{r.fmt}",
        "sono": {"small": f"{base}/sounds/spectrograms/{r.id}/grey-small.png",
                 "med": f"{base}/sounds/spectrograms/{r.id}/grey-medium.png",
                 "large": f"{base}/sounds/spectrograms/{r.id}/colour.png", "full": None},
        "osci": {"small": None, "med": None, "large": None},
        "lic": r.license, "q": r.quality, "length": XC_LENGTH(r.seconds), "time": f"{5 + r.id % 12:02d}:{r.id % 60:02d}",
        "date": r.date, "uploaded": r.uploaded, "also": r.also, "rmk": r.remarks,
        "animal-seen": "yes" if r.id % 2 else "no", "playback-used": "no", "temp": None, "regnr": "", "auto": "no",
        "dvc": "", "mic": "", "smp": str(r.rate), "annotation-set": [],
    }


def inat_taxon(sp: Species, with_ancestors: bool = False) -> dict:
    ranks = lineage(sp)
    ids = [INAT_UPPER["Life"]] + list(sp.inat_higher) + [sp.inat_id]
    taxon = {
        "id": sp.inat_id, "name": sp.name, "rank": "species", "rank_level": 10, "is_active": True,
        "ancestor_ids": ids, "ancestry": "/".join(str(i) for i in ids[:-1]),
        "min_species_ancestry": ",".join(str(i) for i in ids), "parent_id": ids[-2],
        "preferred_common_name": sp.common, "iconic_taxon_name": sp.klass, "extinct": False,
    }
    if with_ancestors:
        taxon["ancestors"] = [
            {"id": i, "name": name, "rank": rank, "rank_level": {"kingdom": 70, "phylum": 60, "class": 50, "order": 40,
                                                                   "family": 30, "genus": 20}[rank], "is_active": True}
            for i, (rank, name) in zip(ids[1:-1], ranks[:-1])
        ]
    return taxon


def inat_sound(r: Recording, base: str) -> dict:
    ext, ctype = ("wav", "audio/x-wav") if r.fmt == "wav" else ("mp3", "audio/mpeg")
    return {"id": r.id, "license_code": r.license, "attribution": _attribution(r.recordist, r.license),
            "native_sound_id": None, "secret_token": None, "file_url": f"{base}/sounds/{r.id}.{ext}?1624793769",
            "file_content_type": ctype, "play_local": True, "subtype": None, "flags": []}


def inat_photo(p: Photo, base: str, user: str) -> dict:
    return {"id": p.id, "license_code": p.license, "attribution": _attribution(user, p.license),
            "url": f"{base}/photos/{p.id}/square.jpg?1598551272",
            "original_dimensions": {"width": p.width, "height": p.height}, "flags": []}


def _attribution(who: str, code: str | None) -> str:
    if not code:
        return f"(c) {who}, all rights reserved"
    if code == "cc0":
        return f"{who}, no rights reserved (CC0)"
    return f"(c) {who}, some rights reserved ({code.upper().replace('-', ' ', 1).replace('CC ', 'CC ')})"


def inat_observation(o: Observation, base: str) -> dict:
    return {
        "id": o.id, "uuid": f"00000000-0000-4000-8000-{o.id:012d}", "observed_on": o.date,
        "time_observed_at": f"{o.date}T07:30:00+00:00", "created_at": f"{o.date}T18:00:51+00:00",
        "updated_at": o.updated, "quality_grade": "research", "license_code": "cc-by-nc",
        "location": f"{o.lat},{o.lon}", "geojson": {"type": "Point", "coordinates": [o.lon, o.lat]},
        "place_guess": f"Near site {o.id % 89}", "positional_accuracy": 25, "obscured": o.obscured,
        "geoprivacy": "obscured" if o.obscured else None, "description": o.description,
        "user": {"id": zlib.crc32(o.user.encode()) % 10**7, "login": o.user, "name": None},
        "taxon": inat_taxon(o.species), "species_guess": o.species.common,
        "sounds": [inat_sound(s, base) for s in o.sounds],
        "photos": [inat_photo(p, base, o.user) for p in o.photos],
        "observation_photos": [{"id": p.id + 1, "position": i, "uuid": f"p-{p.id}", "photo": inat_photo(p, base, o.user)}
                               for i, p in enumerate(o.photos)],
    }


def ml_item(item: Recording | Photo) -> dict:
    sp = item.species
    is_audio = isinstance(item, Recording)
    out = {
        "catalogId": f"ML{item.id}", "assetId": item.id, "mediaType": "audio" if is_audio else "photo",
        "licenseType": None, "rating": 4.0 + (item.id % 10) / 10, "ratingCount": 1 + item.id % 7,
        "sciName": sp.name, "commonName": sp.common, "speciesCode": sp.code,
        **{k: (getattr(item, "given", None) or {})[g] for k, g in (("sciName", "name"), ("commonName", "common"),
                                                                   ("speciesCode", "code"))
           if g in (getattr(item, "given", None) or {})},
        "userDisplayName": getattr(item, "recordist", "Macaulay Contributor"),
        "location": "Sapsucker Woods, Ithaca, New York, US", "latitude": 42.4794, "longitude": -76.4510,
        "obsDttm": getattr(item, "date", "2019-05-12"), "eBirdChecklistId": f"S{item.id // 7}",
    }
    if is_audio:
        out.update(duration=item.seconds, behaviors=["Song"], sounds=item.sound_type, mediaNotes=item.remarks or "")
    else:
        out.update(width=item.width, height=item.height, ageSex="Adult", behaviors=[], mediaNotes="")
    return out


def gbif_match(sp: Species | None, of_genus: Species | None) -> dict:
    """species/match: EXACT on a species, HIGHERRANK on a known genus (`of_genus`: a species of it), else NONE."""
    if sp is None and of_genus is None:
        return {"confidence": 100, "matchType": "NONE", "synonym": False, "note": "No match because of too little confidence"}
    keys = (sp or of_genus).gbif_keys()
    names = dict(lineage(sp)) if sp else dict(lineage(of_genus)[:-1])
    genus = None if sp else of_genus.genus
    out = {"usageKey": sp.gbif_key if sp else keys[genus],
           "scientificName": f"{sp.name} (Linnaeus, 1758)" if sp else genus,
           "canonicalName": sp.name if sp else genus, "rank": "SPECIES" if sp else "GENUS", "status": "ACCEPTED",
           "confidence": 98 if sp else 94, "matchType": "EXACT" if sp else "HIGHERRANK", "synonym": False}
    for rank, name in names.items():
        out[rank] = name
        out[f"{rank}Key"] = keys[name]
    return out


XC_DATASET = "b1047888-ae52-4179-9dd5-5448ea342a24"
INAT_DATASET = "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
SOUND_ARCHIVE_DATASET = "de8934f4-a136-481c-a87a-b0b202b80a31"  # a museum sound archive, published only via GBIF


def _occurrence(key: int, sp: Species, dataset: str, ref: str, media: list[dict], date: str, who: str,
                lat: float, lon: float, lic: str) -> dict:
    names, keys = dict(lineage(sp)), sp.gbif_keys()
    out = {"key": key, "gbifID": str(key), "datasetKey": dataset, "basisOfRecord": "HUMAN_OBSERVATION",
           "occurrenceStatus": "PRESENT", "scientificName": f"{sp.name} (Linnaeus, 1758)",
           "acceptedScientificName": f"{sp.name} (Linnaeus, 1758)", "taxonKey": sp.gbif_key,
           "acceptedTaxonKey": sp.gbif_key, "speciesKey": sp.gbif_key, "taxonRank": "SPECIES",
           "taxonomicStatus": "ACCEPTED", "decimalLatitude": lat, "decimalLongitude": lon, "eventDate": date,
           "recordedBy": who, "license": lic, "occurrenceID": ref, "references": ref,
           "vernacularName": sp.common, "media": media, "issues": [], "lastInterpreted": "2025-01-01T00:00:00.000+00:00"}
    for rank, name in names.items():
        out[rank] = name
        out[f"{rank}Key"] = keys[name]
    return out


def gbif_occurrences(archive, base: str) -> list[dict]:
    """GBIF's view: mirrors of some Xeno-canto recordings and iNaturalist observations, plus
    recordings from a sound archive that only GBIF publishes.  Sorted by key."""
    out = []
    for r in archive.xc:
        if r.species.index % 3 == 0:
            lic = "http:" + r.license + "legalcode" if r.license.startswith("//") else r.license
            out.append(_occurrence(4000000000 + r.id, r.species, XC_DATASET, f"https://xeno-canto.org/{r.id}",
                                   [{"type": "Sound", "format": "audio/mpeg", "identifier": f"{base}/{r.id}/download",
                                     "creator": r.recordist, "rightsHolder": r.recordist, "license": lic}],
                                   r.date.replace("-00", "-01"), r.recordist, r.lat, r.lon, lic))
    for o in archive.inat:
        if o.species.index % 3 == 1 and o.sounds:
            lic = "http://creativecommons.org/licenses/by-nc/4.0/legalcode"
            media = [{"type": "Sound", "format": "audio/mpeg", "identifier": inat_sound(s, base)["file_url"],
                      "rightsHolder": o.user} for s in o.sounds]
            media += [{"type": "StillImage", "format": "image/jpeg", "rightsHolder": o.user,
                       "identifier": f"{base}/photos/{p.id}/medium.jpg"} for p in o.photos]
            out.append(_occurrence(4500000000 + o.id, o.species, INAT_DATASET,
                                   f"https://www.inaturalist.org/observations/{o.id}", media, o.date, o.user, o.lat,
                                   o.lon, lic))
    for r in archive.gbif_audio:
        out.append(_occurrence(4900000000 + r.id, r.species, SOUND_ARCHIVE_DATASET, f"urn:catalog:TSA:{r.id}",
                               [{"type": "Sound", "format": "audio/x-wav", "identifier": f"{base}/gbif-media/{r.id}.wav",
                                 "creator": r.recordist}], r.date.replace("-00", "-01"), r.recordist, r.lat, r.lon,
                               "http://creativecommons.org/licenses/by/4.0/legalcode"))
    return sorted(out, key=lambda o: o["key"])


def xc_filter(query: str, rec) -> bool:
    """Xeno-canto v3 tag query against one recording; unknown tags match nothing."""
    sp = rec.species
    for tag, value in XC_TAG.findall(query):
        value = value.strip('"').lower()
        if tag == "gen" and sp.genus.lower() != value:
            return False
        if tag == "sp" and sp.epithet.lower() != value:
            return False
        if tag == "grp" and sp.group != value:
            return False
        if tag == "en" and value not in sp.common.lower():
            return False
        if tag == "q" and rec.quality > value.strip(">").upper()[:1] and not value.startswith(">"):
            return False
        if tag == "nr":
            lo, _, hi = value.partition("-")
            if not (int(lo) <= rec.id <= int(hi or lo)):
                return False
        if tag == "since" and rec.uploaded < value:
            return False
        if tag not in {"gen", "sp", "grp", "en", "q", "nr", "since", "cnt", "lic", "len", "box"}:
            return False
    return True
