"""Each parser on the real responses in ../shared/fixtures, field by field."""
import json

from bestiary.connectors import gbif, inaturalist, macaulay, xenocanto
from bestiary.schemas.records import CATALOG_COLUMNS
from tests.conftest import fixture_path


def load(*parts):
    return json.loads(fixture_path(*parts).read_text())


def test_xenocanto_v3_recording():
    records, pages = xenocanto.parse_page(load("xenocanto", "api3_recordings_passerina_amoena.json"))
    assert pages == 1 and len(records) == 1
    (row,) = xenocanto.normalize(records[0])
    assert set(row) == set(CATALOG_COLUMNS)
    assert row["key"] == "xeno-canto:254462" and row["source_id"] == "254462"
    assert row["media_type"] == "audio"
    assert row["media_url"] == "https://xeno-canto.org/254462/download"
    assert row["media_format"] == "mp3"
    assert row["scientific_name"] == "Passerina amoena" and row["common_name"] == "Lazuli Bunting"
    assert row["license"] == "CC-BY-SA-4.0"
    assert row["recordist"] == "Jonathon Jongsma" and row["country"] == "United States"
    assert (row["lat"], row["lon"]) == (43.6571, -103.4143)
    assert row["recorded_on"] == "2015-06-23" and row["duration_s"] == 253.0
    assert row["quality"] == "A" and row["sound_type"] == "song"
    assert row["background_species"] == ["Pipilo maculatus"]
    assert "\r\n" in row["remarks"]  # kept as given; it is data
    assert json.loads(row["raw"])["id"] == "254462"


def test_xenocanto_v2_fields_and_protocol_relative_urls():
    rec = dict(load("xenocanto", "api3_recordings_passerina_amoena.json")["recordings"][0])
    rec["lng"] = rec.pop("lon")
    rec["group"] = rec.pop("grp")
    rec["file"] = "//xeno-canto.org/254462/download"
    rec["lic"] = "//creativecommons.org/licenses/by-nc-sa/4.0/"
    rec["ssp"] = "caerulea"
    (row,) = xenocanto.normalize(rec)
    assert row["lon"] == -103.4143
    assert row["media_url"].startswith("https://")
    assert row["license"] == "CC-BY-NC-SA-4.0"
    assert row["scientific_name"] == "Passerina amoena caerulea"


def test_xenocanto_error_body_is_not_a_page():
    body = load("xenocanto", "api3_error_missing_key.json")
    assert body["error"] == "client_error"
    try:
        xenocanto.parse_page(body)
    except ValueError:
        pass
    else:
        raise AssertionError("an error body parsed as a page")


def test_inaturalist_observation_with_sound_and_photos():
    obs = inaturalist.parse_page(load("inaturalist", "get_observation_with_sounds.json"))[0]
    rows = inaturalist.normalize(obs)
    audio = [r for r in rows if r["media_type"] == "audio"]
    images = [r for r in rows if r["media_type"] == "image"]
    assert len(audio) == 1 and len(images) == len(obs["photos"]) == 2
    a = audio[0]
    assert a["key"] == "inaturalist:sound-263113"
    assert a["license"] == "CC0-1.0"  # the sound's own licence, not the observation's
    assert a["media_url"] == "https://static.inaturalist.org/sounds/263113.wav?1624793769"
    assert a["media_format"] == "audio/x-wav"
    assert a["scientific_name"] == "Pipistrellus pipistrellus" and a["common_name"] == "Common Pipistrelle"
    assert a["taxon_id"] == str(obs["taxon"]["id"])
    assert (a["lat"], a["lon"]) == (51.601234, -1.122952)  # pyinaturalist's [lat, lon] array form
    assert a["recorded_on"] == "2021-06-25"
    assert a["observation_id"] == images[0]["observation_id"] == f"inaturalist:{obs['id']}"
    assert all("/medium." in r["media_url"] for r in images)
    assert {r["license"] for r in images} == {inaturalist_license(p) for p in obs["photos"]}


def inaturalist_license(photo):
    from bestiary.connectors.licenses import normalize_license
    return normalize_license(photo["license_code"])


def test_inaturalist_search_page_string_location_and_photo_licence():
    page = load("inaturalist", "get_observations_page1.json")
    obs = inaturalist.parse_page(page)
    assert page["total_results"] == 2 and len(obs) == 1
    rows = inaturalist.normalize(obs[0])
    assert [r["media_type"] for r in rows] == ["image"]
    assert (rows[0]["lat"], rows[0]["lon"]) == (50.0949055, -104.71929167)
    assert rows[0]["license"] == "CC-BY-NC-4.0"
    assert rows[0]["media_url"] == "https://static.inaturalist.org/photos/92152429/medium.jpg?1598551272"
    assert rows[0]["recordist"] == "samroom"  # no name: the login


def test_inaturalist_nonexistent_observation_is_an_empty_page():
    assert inaturalist.parse_page(load("inaturalist", "get_nonexistent_observation.json")) == []


def test_gbif_match_synonym_gives_accepted_lineage():
    hit = gbif.parse_match(load("gbif", "species_match_bufo_americanus_synonym.json"))
    assert hit["taxon_id"] == "2422872" and hit["accepted_name"] == "Anaxyrus americanus"
    assert hit["species_id"] == "2422872" and hit["family"] == "Bufonidae" and hit["class"] == "Amphibia"
    assert hit["rank"] == "species" and hit["status"] == "SYNONYM"


def test_gbif_match_higherrank_and_none():
    hit = gbif.parse_match(load("gbif", "species_match_animalia_higherrank.json"))
    assert hit["rank"] == "kingdom" and hit["species"] is None and hit["genus"] is None
    assert gbif.parse_match(load("gbif", "species_match_none_aso.json")) is None


def test_macaulay_item_licence_gated_and_asset_urls():
    item = {"catalogId": "ML123", "assetId": 123, "mediaType": "photo", "sciName": "Strix varia",
            "commonName": "Barred Owl", "speciesCode": "brdowl", "latitude": "42.1", "longitude": "-76.2",
            "obsDttm": "2019-05-12", "userDisplayName": "A. Person"}
    (row,) = macaulay.normalize(item, "https://cdn.example")
    assert row["license"] == "unknown"  # no licence: links only, rejected by the default filter
    assert row["media_url"] == "https://cdn.example/api/v1/asset/123/640"
    (row,) = macaulay.normalize({**item, "mediaType": "audio"}, "https://cdn.example", "CC-BY-NC-4.0")
    assert row["license"] == "CC-BY-NC-4.0" and row["media_url"].endswith("/api/v2/asset/123/mp3")
    assert row["taxon_id"] == "brdowl"
