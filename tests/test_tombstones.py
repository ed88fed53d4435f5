"""Tombstones: an edited record's old samples superseded by an incremental run, one sidecar per shard, and
every reader (the loader, the accounting, an old manifest's list) agreeing on what is live."""
from __future__ import annotations

import os

import pytest

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
from bestiary.training.data import deleted_keys, split_samples
from tests.conftest import tiny_config
from tests.test_incremental import live_samples


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
