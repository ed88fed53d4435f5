"""The connectors against a misbehaving archive: every record ends in the catalog or in
rejects with a reason, and the counts add up (faults injected by the sample server)."""
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
from tests.conftest import TEST_KEY, tiny_config

FAST_HTTP = {"read_timeout": 0.5, "connect_timeout": 2, "retries": 3, "body_retries": 3, "backoff": 0.01}


def crawl_config(url, out, **extra):
    """Three archives, several pages each: Xeno-canto birds, iNaturalist owls, Macaulay owls."""
    cfg = tiny_config(url, out, http=FAST_HTTP, **extra)
    cfg["sources"][0]["queries"] = ["grp:birds"]  # three pages of 50
    return cfg


def catalog_keys(out):
    keys = set()
    for name in ("recordings", "images"):
        keys |= {r["key"] for r in pq.read_table(os.path.join(out, "catalog", name)).to_pylist()}
    return keys


@pytest.fixture(scope="module")
def baseline(archive_server, tmp_path_factory):
    state, url = archive_server
    out = str(tmp_path_factory.mktemp("base") / "out")
    build(parse_config(crawl_config(url, out)), only=("crawl",))
    return catalog_keys(out)


def crawl_with(state, url, out, route, fault):
    state.slow_s = 1.5
    state.add_faults(route, *([fault] if isinstance(fault, str) else fault))
    try:
        build(parse_config(crawl_config(url, out)), only=("crawl",))
    finally:
        state.faults.pop(route, None)


API_CASES = [("xc_recordings", f) for f in ("429", "429date", "500", "502", "503", "slow", "drop", "truncated_json",
                                            "invalid_json", "html_200")]
API_CASES += [(r, f) for r in ("inat_observations", "ml_search") for f in ("429", "503", "drop", "html_200")]


@pytest.mark.parametrize("route,fault", API_CASES)
def test_transient_api_faults_lose_nothing(archive_server, baseline, tmp_path, route, fault):
    state, url = archive_server
    before = state.counts[route]
    crawl_with(state, url, str(tmp_path / "out"), route, fault)
    assert catalog_keys(tmp_path / "out") == baseline
    assert state.counts[route] - before >= 2  # the fault was met, and retried


@pytest.mark.parametrize("route", ["xc_recordings", "inat_observations", "ml_search"])
def test_the_same_record_on_two_pages_is_kept_once(archive_server, baseline, tmp_path, route):
    state, url = archive_server
    before = state.counts[route]
    crawl_with(state, url, str(tmp_path / "out"), route, ["none", "duplicate"])  # page 2 repeats page 1's last
    assert catalog_keys(tmp_path / "out") == baseline
    assert state.counts[route] - before >= 2


@pytest.mark.parametrize("route,archive", [("xc_recordings", "xc"), ("inat_observations", "inat"), ("ml_search", "ml")])
def test_a_record_vanishing_between_pages_shifts_nothing_out(archive_server, baseline, tmp_path, route, archive):
    state, url = archive_server
    hidden = set(state.hidden)
    try:
        crawl_with(state, url, str(tmp_path / "out"), route, ["none", "vanish"])
        gone = state.hidden - hidden
        assert len(gone) == 1
        keys = catalog_keys(tmp_path / "out")
        # at most the withdrawn record (and its media) is missing: nothing was skipped by shifted pages
        missing = baseline - keys
        (arch, rid), = gone
        assert all(str(rid) in k or _media_of(state, arch, rid, k) for k in missing), missing
        assert keys <= baseline
    finally:
        state.hidden.clear()
        state.hidden.update(hidden)


def _media_of(state, archive, rid, key):
    if archive != "inat":
        return False
    obs = next(o for o in state.archive.inat if o.id == rid)
    return any(key.endswith(f"-{m.id}") for m in obs.sounds + obs.photos)


def test_a_persistent_api_fault_stops_one_partition_with_a_reject_and_a_rerun_resumes(archive_server, baseline,
                                                                                         tmp_path):
    state, url = archive_server
    out = str(tmp_path / "out")
    state.add_faults("xc_recordings", "none", "503*")  # page 1 answers, then the API stays down
    try:
        build(parse_config(crawl_config(url, out)), only=("crawl",))
    finally:
        state.faults.pop("xc_recordings", None)
    rejects = pq.read_table(os.path.join(out, "work", "rejects-crawl")).to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects] == [("partition:xeno-canto-q000", "http_503")]
    partial = catalog_keys(out)
    assert partial < baseline and any(k.startswith("xeno-canto:") for k in partial)
    before = state.counts["xc_recordings"]
    build(parse_config(crawl_config(url, out)), only=("crawl",), force=True)  # the API is back
    assert catalog_keys(out) == baseline
    assert state.counts["xc_recordings"] - before == 2  # pages 2 and 3 only: page 1 came from the kept raw page


def test_media_faults_end_as_rejects_with_reasons(archive_server, tmp_path):
    state, url = archive_server
    owls = {"Strix", "Bubo", "Athene"}
    xc = [r for r in state.archive.xc if r.species.genus in owls and "nd" not in r.license]
    cases = {xc[0].id: ("404", "http_404"), xc[1].id: ("410", "http_410"), xc[2].id: ("wrong_type", "bad_content_type"),
             xc[3].id: ("empty", "empty_media"), xc[4].id: ("oversized", "body_too_large"),
             xc[5].id: ("corrupt_mp3", "undecodable_audio"), xc[6].id: ("drop", "http_body_incomplete")}
    state.media_faults.update({("xc", rid): fault for rid, (fault, _) in cases.items()})
    state.add_faults("inat_sound", "503", "slow")  # transient: retried, nothing lost
    try:
        cfg = parse_config(tiny_config(url, str(tmp_path / "out"), http={**FAST_HTTP, "max_body_mb": 64}))
        stats = build(cfg)
    finally:
        for rid in cases:
            state.media_faults.pop(("xc", rid), None)
        state.faults.pop("inat_sound", None)
    rejects = {r["key"]: r["reason"] for r in pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()}
    for rid, (_, reason) in cases.items():
        assert rejects[f"xeno-canto:{rid}"] == reason
    assert not any(k.startswith("inaturalist:sound") and v.startswith("http") for k, v in rejects.items())
    assert stats["accounting"]["balanced"]


KILL_SCRIPT = """
import sys
from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
import json
build(parse_config(json.loads(sys.argv[1])), only=("crawl",))
"""


def test_a_crawl_killed_mid_way_resumes_to_the_same_catalog(archive_server, baseline, tmp_path):
    import json
    state, url = archive_server
    out = str(tmp_path / "out")
    cfg = crawl_config(url, out)
    for s in cfg["sources"]:
        s["requests_per_second"] = 8  # slow enough to be killed part way
    env = {**os.environ, "XC_API_KEY": TEST_KEY}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_dir = os.path.join(out, "state", "crawl")
    deadline = time.time() + 60
    while time.time() < deadline:
        done = [json.load(open(os.path.join(state_dir, f))) for f in os.listdir(state_dir)] if os.path.isdir(state_dir) else []
        if sum(d["pages"] for d in done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not os.path.exists(os.path.join(out, "catalog", "recordings"))  # killed before the end
    build(parse_config(cfg), only=("crawl",))
    keys = catalog_keys(out)
    assert keys == baseline
    rows = pq.read_table(os.path.join(out, "catalog", "recordings")).to_pylist()
    assert len(rows) == len({r["key"] for r in rows})


def test_the_api_key_reaches_no_log_line_even_at_debug(archive_server, tmp_path, caplog):
    import logging
    state, url = archive_server
    state.add_faults("xc_recordings", "503")  # a retry logs the URL again
    with caplog.at_level(logging.DEBUG):
        build(parse_config(crawl_config(url, str(tmp_path / "out"))), only=("crawl",))
    assert "api/3/recordings" in caplog.text  # the requests were logged ...
    assert TEST_KEY not in caplog.text         # ... without the key


def test_cache_paths_are_hashes_never_archive_strings(tiny_build):
    import re
    cfg, _ = tiny_build
    root = os.path.join(cfg.out, "cache", "media")
    names = [n for _, _, files in os.walk(root) for n in files]
    assert names and all(re.fullmatch(r"[0-9a-f]{64}", n) for n in names)
    raw = pq.read_table(os.path.join(cfg.out, "catalog", "recordings")).to_pylist()
    file_names = [__import__("json").loads(r["raw"]).get("file-name") for r in raw if r["source"] == "xeno-canto"]
    assert file_names and not any(f in p for f in file_names if f for p, _, _ in os.walk(cfg.out))


def test_id_range_partitions_give_the_same_catalog(archive_server, baseline, tmp_path):
    from bestiary.pipelines.runs import id_ranges, partitions
    assert id_ranges(1, 10, 3) == [(1, 4), (5, 8), (9, 10)]
    state, url = archive_server
    cfg = crawl_config(url, str(tmp_path / "out"))
    cfg["sources"][0]["id_ranges"] = {"start": 600000, "stop": 601999, "parts": 4}
    cfg["sources"][1]["id_ranges"] = {"start": 90000000, "stop": 90000999, "parts": 3}
    parsed = parse_config(cfg)
    parts = partitions(parsed)
    assert sum(p["source"] == "xeno-canto" for p in parts) == 4 and sum(p["source"] == "inaturalist" for p in parts) == 6
    build(parsed, only=("crawl",))
    assert catalog_keys(tmp_path / "out") == baseline


def test_bulk_file_sources_crawl_like_the_apis(tmp_path):
    """iNaturalist's open-data dump and a Macaulay export, read from files through the same stage."""
    from tests.conftest import fixture_path
    od = {n: str(fixture_path("inaturalist", "open_data", f"{n}.csv")) for n in ("observations", "photos", "taxa",
                                                                                 "observers")}
    cfg = {"out": str(tmp_path / "out"), "sources": [
        {"name": "inaturalist-open-data", "base_url": "https://inaturalist-open-data.s3.amazonaws.com/photos",
         "queries": [od]},
        {"name": "macaulay-export", "base_url": "https://cdn.download.ams.birds.cornell.edu",
         "queries": [str(fixture_path("macaulay", "ml_export_barred_owl.csv")),
                     str(fixture_path("macaulay", "ml_export_blue_jay.csv"))]}]}
    from bestiary.pipelines.build import run_one
    run_one(parse_config(cfg), "crawl")  # no preflight: these media hosts are not reachable here
    images = pq.read_table(tmp_path / "out" / "catalog" / "images").to_pylist()
    audio = pq.read_table(tmp_path / "out" / "catalog" / "recordings").to_pylist()
    photos = sum(1 for _ in open(od["photos"])) - 1
    assert len(images) == photos and all(r["source"] == "inaturalist" for r in images)
    exports = [fixture_path("macaulay", f) for f in ("ml_export_barred_owl.csv", "ml_export_blue_jay.csv")]
    assert len(audio) == sum(len(open(p, encoding="utf-8").read().splitlines()) - 1 for p in exports)
    assert {r["scientific_name"] for r in audio} >= {"Strix varia", "Cyanocitta cristata"}
