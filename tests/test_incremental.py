"""Incremental ingestion: only what is new is fetched, shards are appended, and the union equals a full build."""
from __future__ import annotations

import hashlib
import os

import pytest
import webdataset as wds

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.schemas.config import ConfigError, parse_config
from bestiary.training.data import deleted_keys
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
def test_incremental_run_fetches_only_new_records_and_appends_shards(archive_server, tiny_build, tmp_path):
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

    # a full build of the same config on today's archive: the session's tiny build (the same config and
    # server; builds are deterministic, tests/test_pipeline.py checks it)
    fresh_cfg, full = tiny_build
    fresh = fresh_cfg.out
    assert fresh_cfg.model_dump(exclude={"out"}) == cfg.model_dump(exclude={"out"})
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
