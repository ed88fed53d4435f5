"""The sample archive answers in the archives' real formats (checked against ../shared/fixtures)."""
import io
import json

import requests
import soundfile as sf
from PIL import Image

from bestiary.connectors import gbif, inaturalist, macaulay, xenocanto
from bestiary.sample_archive.generate import build_archive, describe
from tests.conftest import fixture_path


def get(url, path, **params):
    r = requests.get(url + path, params=params, timeout=30)
    return r


def test_archive_is_deterministic_and_big_enough():
    a, b = build_archive(7), build_archive(7)
    assert [r.id for r in a.xc] == [r.id for r in b.xc]
    d = describe(a)
    assert d["species"] >= 24 and d["families"] >= 3 and d["genera"] >= 8
    assert d["xeno_canto_recordings"] + d["inaturalist_sounds"] + d["macaulay_audio"] >= 200
    assert 3 <= d["seconds_range"][0] and d["seconds_range"][1] <= 90
    assert build_archive(8).xc[0].seconds != a.xc[0].seconds or build_archive(8).xc[0].id != a.xc[0].id


def test_xenocanto_page_matches_the_real_shape(archive_server):
    _, url = archive_server
    real = json.loads(fixture_path("xenocanto", "api3_recordings_passerina_amoena.json").read_text())
    body = get(url, "/api/3/recordings", query="grp:birds", key="k", per_page=50).json()
    assert set(body) == set(real)
    assert isinstance(body["numRecordings"], str) and isinstance(body["numSpecies"], str)
    rec = body["recordings"][0]
    assert set(rec) == set(real["recordings"][0])
    for field, value in real["recordings"][0].items():
        assert type(rec[field]) is type(value) or value is None or rec[field] is None, field
    records, pages = xenocanto.parse_page(body)
    assert pages == -(-int(body["numRecordings"]) // 50)
    assert xenocanto.normalize(records[0])[0]["duration_s"] > 0


def test_xenocanto_key_tags_and_paging(archive_server):
    _, url = archive_server
    missing = get(url, "/api/3/recordings", query="grp:birds")
    real_error = json.loads(fixture_path("xenocanto", "api3_error_missing_key.json").read_text())
    assert missing.status_code == 401 and missing.json() == real_error
    assert get(url, "/api/3/recordings", query="birds", key="k").status_code == 400  # v3 needs a tag
    p1 = get(url, "/api/3/recordings", query="gen:Parus", key="k", per_page=50, page=1).json()
    assert {r["gen"] for r in p1["recordings"]} == {"Parus"}
    all_ids = [int(r["id"]) for r in get(url, "/api/3/recordings", query="grp:birds", key="k", per_page=500).json()["recordings"]]
    lo, hi = sorted(all_ids)[10], sorted(all_ids)[20]
    ranged = get(url, "/api/3/recordings", query=f"grp:birds nr:{lo}-{hi}", key="k").json()["recordings"]
    assert sorted(int(r["id"]) for r in ranged) == sorted(all_ids)[10:21]
    since = get(url, "/api/3/recordings", query="grp:birds since:2020-01-01", key="k", per_page=500).json()
    assert since["recordings"] and all(r["uploaded"] >= "2020-01-01" for r in since["recordings"])


def test_xenocanto_audio_download_decodes(archive_server):
    _, url = archive_server
    rec = get(url, "/api/3/recordings", query="gen:Strix", key="k").json()["recordings"][0]
    audio = requests.get(rec["file"], timeout=30)
    assert audio.status_code == 200 and audio.headers["Content-Type"] in ("audio/mpeg", "audio/x-wav")
    data, rate = sf.read(io.BytesIO(audio.content))
    assert rate == int(rec["smp"]) and abs(len(data) / rate - xenocanto.normalize(rec)[0]["duration_s"]) < 1.0


def test_inaturalist_observations_real_shape_and_id_above(archive_server):
    _, url = archive_server
    real = json.loads(fixture_path("inaturalist", "get_observations_page1.json").read_text())
    body = get(url, "/v1/observations", sounds="true", per_page=5, order_by="id", order="asc", id_above=0).json()
    assert set(body) == set(real)
    obs = body["results"][0]
    used = ["id", "uuid", "observed_on", "time_observed_at", "created_at", "updated_at", "quality_grade",
            "license_code", "location", "geojson", "place_guess", "obscured", "geoprivacy", "description",
            "user", "taxon", "photos", "sounds"]
    assert set(used) <= set(obs) and set(used) <= set(real["results"][0]) | {"sounds"}
    assert isinstance(obs["location"], str) and "," in obs["location"]
    assert obs["taxon"]["ancestor_ids"][-1] == obs["taxon"]["id"]  # self last, as in real observations
    real_sound = json.loads(fixture_path("inaturalist", "get_observation_with_sounds.json").read_text())["results"][0]["sounds"][0]
    assert set(obs["sounds"][0]) == set(real_sound)
    ids = [o["id"] for o in body["results"]]
    nxt = get(url, "/v1/observations", sounds="true", per_page=5, order_by="id", order="asc", id_above=max(ids)).json()
    assert min(o["id"] for o in nxt["results"]) > max(ids)
    assert nxt["total_results"] == body["total_results"] - 5
    late = get(url, "/v1/observations", updated_since="2024-01-01", per_page=200).json()["results"]
    assert late and all(o["updated_at"] >= "2024-01-01" for o in late)
    rows = inaturalist.normalize(obs)
    assert any(r["media_type"] == "audio" for r in rows)
    photo = requests.get(rows[-1]["media_url"], timeout=30)
    assert photo.headers["Content-Type"] == "image/jpeg" and Image.open(io.BytesIO(photo.content)).size[0] <= 500


def test_inaturalist_taxon_with_ancestors(archive_server):
    _, url = archive_server
    real = json.loads(fixture_path("inaturalist", "get_taxa_by_id.json").read_text())["results"][0]
    body = get(url, "/v1/taxa/940000").json()
    taxon = body["results"][0]
    assert {"id", "name", "rank", "ancestors", "ancestor_ids"} <= set(taxon) & set(real)
    assert [a["rank"] for a in taxon["ancestors"]] == ["kingdom", "phylum", "class", "order", "family", "genus"]


def test_macaulay_cursor_paging_and_assets(archive_server):
    _, url = archive_server
    seen, cursor = [], None
    for _ in range(50):
        page_url, params = macaulay.page_request(url, {"mediaType": "photo"}, cursor, 10)
        items, nxt = macaulay.parse_page(requests.get(page_url, params=params, timeout=30).json())
        if not items:
            break
        seen += [i["assetId"] for i in items]
        cursor = nxt
    total = requests.get(url + "/api/v1/search", params={"mediaType": "photo", "count": 1}, timeout=30).json()
    assert len(seen) == len(set(seen)) == total["results"]["count"]
    (row,) = macaulay.normalize({"assetId": seen[0], "mediaType": "photo", "sciName": "x"}, url)
    img = requests.get(row["media_url"], timeout=30)
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size[0] == 640


def test_gbif_match_answers_like_gbif(archive_server):
    _, url = archive_server
    real = json.loads(fixture_path("gbif", "species_match_helianthus_annuus.json").read_text())
    body = get(url, "/v1/species/match", name="Parus major", kingdom="Animalia").json()
    shared = {"usageKey", "scientificName", "canonicalName", "rank", "status", "confidence", "matchType",
              "kingdom", "genus", "species", "kingdomKey", "genusKey", "speciesKey", "synonym"}
    assert shared <= set(body) and shared <= set(real)
    assert gbif.parse_match(body)["family"] == "Paridae"
    assert gbif.parse_match(get(url, "/v1/species/match", name="Parus").json())["rank"] == "genus"
    assert gbif.parse_match(get(url, "/v1/species/match", name="Nonexistus fakeus").json()) is None
