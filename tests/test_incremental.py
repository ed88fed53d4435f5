"""Incremental ingestion: only what is new is fetched, shards are appended, and the union equals a full build."""
from __future__ import annotations

import hashlib
import os

import pytest
import webdataset as wds

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.schemas.config import ConfigError, parse_config
from bestiary.training.data import deleted_keys, split_samples
from tests.conftest import tiny_config


def live_samples(out: str) -> dict[str, str]:
    """sample key -> sha256 of its FLAC, over every shard the manifest lists, tombstones skipped."""
    manifest = io.read_json(os.path.join(out, "shards", "manifest.json"))
    dead = deleted_keys(os.path.join(out, "shards"))
    found = {}
    for s in manifest["shards"]:
        for sample in wds.WebDataset(os.path.join(out, "shards", s["file"]), shardshuffle=False):
            if f"{s['file']}/{sample['__key__']}" not in dead:
                found[sample["__key__"]] = hashlib.sha256(sample["flac"]).hexdigest()
    return found


def tar_hashes(out: str) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in io.read_json(os.path.join(out, "shards", "manifest.json"))["shards"]}


@pytest.mark.timeout(900)
def test_incremental_run_fetches_only_new_records_and_appends_shards(archive_server, tmp_path):
    state, url = archive_server
    owls = [r for r in state.archive.xc if r.species.family == "Strigidae"]
    newest = sorted(owls, key=lambda r: r.id)[-2:]          # the archive publishes these after the first build
    hidden = {("xc", r.id) for r in newest}
    out = str(tmp_path / "grown")
    cfg = parse_config(tiny_config(url, out))
    state.hidden |= hidden
    try:
        first = build(cfg)
    finally:
        state.hidden -= hidden
    v1 = io.read_json(os.path.join(out, "shards", "manifest.json"))
    assert v1["version"] == 1 and first["accounting"]["balanced"]

    before = dict(state.counts)
    second = build(cfg, incremental=True)
    asked = {k: state.counts[k] - before.get(k, 0) for k in state.counts if state.counts[k] != before.get(k, 0)}
    rejects = {r["key"]: r for r in io.read_rows(os.path.join(out, "rejects"))}
    usable = [r for r in newest if rejects.get(f"xeno-canto:{r.id}", {}).get("stage") not in ("select", "enrich")]
    assert usable and asked.get("xc_download") == len(usable)      # media: only the new recordings it may use
    assert not {"inat_sound", "inat_photo", "ml_audio", "ml_image", "gbif_media"} & set(asked)
    v2 = io.read_json(os.path.join(out, "shards", "manifest.json"))
    assert v2["version"] == 2 and io.exists(os.path.join(out, "shards", "manifest-v1.json"))
    old_shards = {s["file"]: s["sha256"] for s in v1["shards"]}
    assert {f: h for f, h in tar_hashes(out).items() if f in old_shards} == old_shards  # never rewritten
    assert set(tar_hashes(out)) > set(old_shards)                                        # appended
    assert second["accounting"]["balanced"]
    plan = io.read_json(os.path.join(out, "work", "stats-plan.json"))
    assert (plan["run"], plan["audio_changed"], plan["audio_gone"]) == (2, 0, 0)
    assert plan["audio_new"] == len(newest) + 1        # and the GBIF mirror of one of them

    fresh = str(tmp_path / "fresh")
    full = build(parse_config(tiny_config(url, fresh)))
    assert live_samples(out) == live_samples(fresh)
    # the same records, accounted the same way (the new recordings' GBIF mirrors came with them, and were
    # rejected as mirrors in both)
    assert {k: second["accounting"][k] for k in ("records_crawled", "recordings_in_samples", "records_rejected")} == \
        {k: full["accounting"][k] for k in ("records_crawled", "recordings_in_samples", "records_rejected")}
    assert second["accounting"]["records_crawled"] > first["accounting"]["records_crawled"]

    # nothing new: a third run fetches no media and adds no shard
    before = dict(state.counts)
    build(cfg, incremental=True)
    assert not {k for k in state.counts if state.counts[k] != before.get(k, 0) and k.endswith(("download", "sound", "audio", "media", "image", "photo"))}
    assert len(tar_hashes(out)) == len(v2["shards"])
    assert io.read_json(os.path.join(out, "shards", "manifest.json"))["version"] == 3


@pytest.mark.timeout(900)
def test_a_changed_record_becomes_a_tombstone_and_new_samples(archive_server, tmp_path):
    """An observation edited on iNaturalist (a new licence, a new `updated_at`) comes back through the
    updated-since pass: its old samples are tombstoned and the loader skips them; its new ones are appended."""
    state, url = archive_server
    out = str(tmp_path / "out")
    cfg = parse_config(tiny_config(url, out))
    build(cfg)
    members = io.read_rows(os.path.join(out, "work", "shards", "*.members.parquet"))
    inat_members = [m for m in members if m["record"].startswith("inaturalist:")]
    assert inat_members
    edit_and_grow(state, cfg, inat_members[0]["record"], "2099-01-01T00:00:00+00:00", "Re-identified after review.")
    manifest = io.read_json(os.path.join(out, "shards", "manifest.json"))
    dead = deleted_keys(os.path.join(out, "shards"))
    assert dead and {d.split("/", 1)[1] for d in dead} >= set(inat_members[0]["samples"])
    keys = live_samples(out)
    assert any(k.endswith("_r0002") for k in keys)                      # its new samples, with new keys
    assert not any(d.split("/", 1)[1] in keys for d in dead)
    total = sum(s["samples"] for s in manifest["shards"])
    assert split_samples(os.path.join(out, "shards"), tuple(manifest["splits"])) == total - len(dead)
    stats = io.read_json(os.path.join(out, "stats.json"))
    assert stats["accounting"]["balanced"] and stats["shard"]["tombstones"] == len(dead)
    assert loader_keys(out, manifest) == set(keys)                       # the training loader skips them too

    # the tombstones are one sidecar per shard, named by its entry with their count: no list of them all
    shard_file = inat_members[0]["file"]
    assert not manifest.get("deleted")
    entries = {s["file"]: s for s in manifest["shards"]}
    assert entries[shard_file]["tombstones"] == f"tombstones/{shard_file[:-4]}.v2.json"
    for f, e in entries.items():
        mine = {d.split("/", 1)[1] for d in dead if d.split("/", 1)[0] == f}
        assert e["deleted"] == len(mine) and (e["tombstones"] is None) == (not mine)
        if mine:
            assert io.read_json(os.path.join(out, "shards", e["tombstones"])) == sorted(mine)
    v2_sidecar = open(os.path.join(out, "shards", entries[shard_file]["tombstones"]), "rb").read()

    # a manifest from before sidecars (one `deleted` list) still reads the same, and the next run moves its
    # list into the sidecars, merged per shard with that run's own tombstones
    legacy = {**manifest, "deleted": sorted(dead),
              "shards": [{k: v for k, v in e.items() if k not in ("deleted", "tombstones")} for e in manifest["shards"]]}
    io.write_json(os.path.join(out, "shards", "manifest.json"), legacy)
    assert deleted_keys(os.path.join(out, "shards")) == dead
    assert split_samples(os.path.join(out, "shards"), tuple(manifest["splits"])) == total - len(dead)
    other = next(m for m in members if m["file"] == shard_file and m["record"].startswith("inaturalist:")
                 and m["record"] != inat_members[0]["record"])
    edit_and_grow(state, cfg, other["record"], "2099-02-01T00:00:00+00:00", "Re-identified again.")
    v3 = io.read_json(os.path.join(out, "shards", "manifest.json"))
    assert v3["version"] == 3 and not v3.get("deleted")
    now = deleted_keys(os.path.join(out, "shards"))
    assert now >= dead | {f"{shard_file}/{k}" for k in other["samples"]}
    entry = next(e for e in v3["shards"] if e["file"] == shard_file)
    assert entry["tombstones"] == f"tombstones/{shard_file[:-4]}.v3.json"
    assert set(io.read_json(os.path.join(out, "shards", entry["tombstones"]))) >= \
        set(inat_members[0]["samples"]) | set(other["samples"])
    # manifest-v2's readers keep run 2's tombstones: its sidecar is never rewritten
    assert io.read_json(os.path.join(out, "shards", "manifest-v2.json"))["shards"] == manifest["shards"]
    assert open(os.path.join(out, "shards", f"tombstones/{shard_file[:-4]}.v2.json"), "rb").read() == v2_sidecar
    keys = live_samples(out)
    assert not any(d.split("/", 1)[1] in keys for d in now) and loader_keys(out, v3) == set(keys)
    assert io.read_json(os.path.join(out, "stats.json"))["accounting"]["balanced"]


def edit_and_grow(state, cfg, record: str, updated: str, description: str) -> None:
    """The iNaturalist observation of a sample's record edited (a new `updated_at`), an incremental run over
    it, and the observation as it was again."""
    sound_id = int(record.rsplit("-", 1)[1])
    obs = next(o for o in state.archive.inat if any(s.id == sound_id for s in o.sounds))
    old = (obs.updated, obs.description)
    obs.updated, obs.description = updated, description
    try:
        build(cfg, incremental=True)
    finally:
        obs.updated, obs.description = old


def loader_keys(out: str, manifest: dict) -> set[str]:
    """The sample keys bestiary's training loader yields over every split, once."""
    from bestiary.training.data import DataConfig, make_pipeline
    cfg = DataConfig(os.path.join(out, "shards"), tuple(manifest["splits"]), batch_size=8, train=False, augment=False)
    return {k for batch in make_pipeline(cfg) for k in batch["key"]}


def test_incremental_needs_a_finished_build(archive_server, tmp_path):
    _, url = archive_server
    with pytest.raises(ConfigError, match="full `bestiary build` first"):
        build(parse_config(tiny_config(url, str(tmp_path / "none"))), incremental=True)


def test_incremental_on_an_output_without_a_record_index_says_what_to_run(tiny_build, tmp_path):
    """An output from before runs and the index were kept: a clear error, not a crash half-way."""
    import shutil
    cfg, _ = tiny_build
    out = tmp_path / "old"
    shutil.copytree(cfg.out, out)
    shutil.rmtree(out / "state" / "index")
    with pytest.raises(ConfigError, match="run `bestiary build CONFIG` once"):
        build(cfg.model_copy(update={"out": str(out)}), incremental=True)
