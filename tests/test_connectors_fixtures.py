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
    assert a["source_taxon_id"] == str(obs["taxon"]["id"])
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
    assert row["source_taxon_id"] == "brdowl"


def test_gbif_occurrence_page_with_still_images():
    page = load("gbif", "occurrence_search_recorded_by_id_limit3.json")
    results, end, count = gbif.parse_occurrence_page(page)
    assert (len(results), end, count) == (3, False, 1979)
    occ = results[0]
    rows = gbif.normalize_occurrence(occ)
    assert [r["media_type"] for r in rows] == ["image"] * len(occ["media"])
    r = rows[0]
    assert r["key"] == "gbif:4940926623-0" and r["observation_id"] == "gbif:4940926623"
    assert r["license"] == "CC-BY-NC-4.0"  # no licence on the medium: the record's (a /legalcode URL)
    assert r["media_url"] == occ["media"][0]["identifier"] and r["media_format"] == "image/jpeg"
    assert r["recordist"] == "Thomas Stjernegaard Jeppesen" and r["recorded_on"] == "2024-08-25"
    assert r["lat"] == -1.424693 and r["mirror_of"] is None
    assert gbif.mirror_of({"references": "https://xeno-canto.org/254462"}) == "xeno-canto:254462"
    assert gbif.mirror_of({"occurrenceID": "https://www.inaturalist.org/observations/57754375"}) == "inaturalist:57754375"
    assert gbif.mirror_of({"catalogNumber": "XC12"}) == "xeno-canto:12"
    single = gbif.normalize_occurrence(load("gbif", "occurrence_142316497.json"))
    assert all(r["key"].startswith("gbif:142316497-") for r in single)


def test_inaturalist_open_data_dump_photos():
    from bestiary.connectors import inat_open_data as od
    files = {n: fixture_path("inaturalist", "open_data", f"{n}.csv").read_bytes()
             for n in ("observations", "photos", "taxa", "observers")}
    rows = list(od.normalize_dump(files["observations"], files["photos"], files["taxa"], files["observers"]))
    photos = list(od.read_tsv(files["photos"]))
    assert len(rows) == len(photos) > 0
    first = rows[0]
    assert first["key"] == "inaturalist:photo-35927" and first["media_type"] == "image"
    assert first["license"] == "CC-BY-4.0"  # upper-case codes in the dump
    assert first["media_url"] == "https://inaturalist-open-data.s3.amazonaws.com/photos/35927/medium.jpg"
    assert first["observation_id"] == "inaturalist:uuid-526ababd-aff2-4ce8-b111-d8013b9d8b42"
    assert (first["lat"], first["lon"]) == (38.60974, -122.767302) and first["recorded_on"] == "2011-05-30"
    assert first["source_taxon_id"] == "53137"
    observers = {o["observer_id"]: o for o in od.read_tsv(files["observers"])}
    assert first["recordist"] in (observers["505"]["name"], observers["505"]["login"])
    assert all(r["recordist"] != "None" for r in rows)  # the string "None" is a missing name


def test_macaulay_export_rows_field_by_field():
    data = fixture_path("macaulay", "ml_export_yellow_rumped_warbler.csv").read_bytes()
    for raw in (data, b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")):  # as re-written, and as a fresh export
        rows = macaulay.read_export(raw)
        assert len(rows[0]) == 45 and "ML Catalog Number" in rows[0]
        (g,) = macaulay.normalize_export_row(rows[0], "https://cdn.download.ams.birds.cornell.edu")
        assert g["key"] == "macaulay:424554681" and g["media_type"] == "audio"
        assert g["media_url"] == "https://cdn.download.ams.birds.cornell.edu/api/v2/asset/424554681/mp3"
        assert g["scientific_name"] == "Setophaga coronata coronata" and g["source_taxon_id"] == "myrwar"  # a Group row
        assert g["license"] == "unknown" and g["recordist"] == "Jay McGowan"
        assert (g["lat"], g["lon"]) == (42.4589608, -76.5055355) and g["recorded_on"] == "2022-02-21"
        assert g["observation_id"] == "macaulay:obs-S103345966" and g["quality"] == "5.00"
        assert json.loads(g["raw"])["Accessory"] == 'Wildtronics 22" Parabola'  # embedded quotes survive
        (s,) = macaulay.normalize_export_row(rows[1], "https://x", "CC-BY-NC-4.0")
        assert s["license"] == "CC-BY-NC-4.0" and s["remarks"] == "in wax myrtle"
    crow = macaulay.read_export(fixture_path("macaulay", "ml_export_american_crow.csv").read_bytes())
    bg = [r for r in crow if r["Background Species"]]
    if bg:
        (row,) = macaulay.normalize_export_row(bg[0], "https://x")
        assert row["background_species"] and " -- " not in row["background_species"][0]
    assert macaulay.asset_url("https://x", "1", "image", 2400).endswith("/api/v1/asset/1/2400")
