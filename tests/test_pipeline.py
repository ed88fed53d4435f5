"""A real Beam build end to end on a tiny config against the sample archive server."""
import glob
import io
import json
import os
import tarfile

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from bestiary.media.audio import read_clip
from bestiary.pipelines.build import STAGES, build, stage_done
from bestiary.pipelines.verify import verify
from bestiary.schemas.config import parse_config
from bestiary.schemas.records import CATALOG_COLUMNS, REJECT_SCHEMA
from tests.conftest import TEST_KEY, tiny_config


def test_catalog_follows_the_contract(tiny_build):
    cfg, _ = tiny_build
    for name in ("recordings", "images"):
        table = pq.read_table(os.path.join(cfg.out, "catalog", f"{name}.parquet"))
        assert table.column_names == CATALOG_COLUMNS
        rows = table.to_pylist()
        assert rows and len({r["key"] for r in rows}) == len(rows)  # overlapping pages kept once
        assert all(r["key"] == f"{r['source']}:{r['source_id']}" for r in rows)
    audio = pq.read_table(os.path.join(cfg.out, "catalog", "recordings.parquet")).to_pylist()
    assert {r["source"] for r in audio} == {"xeno-canto", "inaturalist", "macaulay"}
    assert pq.read_table(os.path.join(cfg.out, "rejects.parquet")).schema.names == REJECT_SCHEMA.names


def test_stats_add_up_and_rejects_have_reasons(tiny_build):
    cfg, stats = tiny_build
    acc = stats["accounting"]
    assert acc["balanced"] and acc["records_crawled"] == acc["recordings_in_samples"] + acc["records_rejected"]
    with open(os.path.join(cfg.out, "stats.json")) as fh:
        assert json.load(fh)["accounting"] == acc
    rejects = pq.read_table(os.path.join(cfg.out, "rejects.parquet")).to_pylist()
    assert all(r["reason"] and r["stage"] for r in rejects)
    assert any(r["reason"] == "license_not_allowed" for r in rejects)  # ND and all-rights-reserved sounds
    assert stats["crawl"]["duplicates_dropped"] > 0  # iNaturalist's sound and photo queries overlap
    assert stats["crawl"]["partitions_failed"] == []


def test_shards_have_four_parts_and_read_back_with_webdataset(tiny_build):
    cfg, stats = tiny_build
    with open(os.path.join(cfg.out, "shards", "manifest.json")) as fh:
        manifest = json.load(fh)
    splits = manifest["splits"]
    assert {"train", "test", "unseen"} <= set(splits)
    assert all(v["shards"] >= 2 for v in splits.values() if v["samples"] >= 2)
    assert set(splits["unseen"]["species"]).isdisjoint(splits["train"]["species"])
    urls = [os.path.join(cfg.out, "shards", s["file"]) for s in manifest["shards"]]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        assert {"flac", "jpg", "txt", "json"} <= set(sample)
        clip, rate = read_clip(sample["flac"])
        assert rate == 48000 and len(clip) == 480000
        assert Image.open(io.BytesIO(sample["jpg"])).mode == "RGB"
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and meta["license"] != "unknown" and meta["attribution"]
        assert meta["taxon"]["lineage"]["family"] == "Strigidae" and meta["taxon"]["lineage_ids"]["species"]
        assert sample["txt"].decode() in [c["text"] for c in meta["captions"]]
        assert len(meta["captions"]) == 5 and meta["image"]["pairing"] in ("same_observation", "same_species")
        n += 1
    assert n == stats["shard"]["samples"] == sum(s["samples"] for s in manifest["shards"])
    with open(os.path.join(cfg.out, "shards", "sizes.json")) as fh:
        assert sum(json.load(fh).values()) == n
    assert verify(cfg.out)["ok"]


def test_tars_are_deterministic_wds_tars(tiny_build):
    cfg, _ = tiny_build
    path = sorted(glob.glob(os.path.join(cfg.out, "shards", "*.tar")))[0]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    names = [m.name for m in members]
    keys = [n.split(".")[0] for n in names]
    assert keys == sorted(keys)  # each sample's members adjacent, samples in key order
    assert not glob.glob(os.path.join(cfg.out, "shards", "*.tmp*"))


def test_second_build_skips_and_a_fresh_build_is_byte_identical(tiny_build, archive_server, tmp_path):
    cfg, stats = tiny_build
    assert all(stage_done(cfg, s) for s in STAGES)
    with open(os.path.join(cfg.out, "shards", "manifest.json"), "rb") as fh:
        manifest = fh.read()
    again = build(cfg)
    assert again["accounting"] == stats["accounting"]
    with open(os.path.join(cfg.out, "shards", "manifest.json"), "rb") as fh:
        assert fh.read() == manifest
    _, url = archive_server
    fresh = parse_config(tiny_config(url, str(tmp_path / "fresh")))
    build(fresh)
    with open(os.path.join(fresh.out, "shards", "manifest.json"), "rb") as fh:
        assert fh.read() == manifest  # same inputs and config: identical manifest, hence identical tar sha256s


def test_api_key_never_reaches_outputs(tiny_build):
    cfg, _ = tiny_build
    needle = TEST_KEY.encode()
    for path in glob.glob(os.path.join(cfg.out, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                data = fh.read()
            if path.endswith(".gz"):
                import gzip
                data = gzip.decompress(data)
            assert needle not in data, path
