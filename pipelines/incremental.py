"""The shard stage of an incremental run: new and changed records into new shards, old shards untouched.

Against the record index the previous run left (`state/index.parquet`: key,
status, content hash), every audio record now in the catalog is new, changed
(its raw record differs), unchanged, or gone.  Only new and changed records are
probed (earlier probes are kept), deduplicated against what is published (the
published copy always wins), planned (images already in published samples keep
their split) and materialized into shards numbered after the existing ones.
Samples of changed and gone records become tombstones in the manifest; a
changed record's new samples carry the run in their keys.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import apache_beam as beam
import pyarrow as pa

from bestiary.pipelines import io
from bestiary.pipelines.dedupe import dedupe_audio, dedupe_images
from bestiary.pipelines.materialize import MaterializeShard
from bestiary.pipelines.plan import plan_shards
from bestiary.pipelines.runner import make_pipeline
from bestiary.pipelines.runs import current_run
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import REJECT_SCHEMA, to_table

INDEX_SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("content_hash", pa.string()),
                          ("crawl_run", pa.int64())])


def content_hash(row: dict) -> str:
    return hashlib.sha256((row.get("raw") or "").encode()).hexdigest()


def index_path(cfg: BuildConfig) -> str:
    return io.join(cfg.out, "state", "index.parquet")


def read_index(cfg: BuildConfig) -> dict[str, dict]:
    return {r["key"]: r for r in io.read_rows(index_path(cfg))} if io.exists(index_path(cfg)) else {}


def write_index(cfg: BuildConfig, audio: list[dict], live_records: set[str]) -> None:
    rows = [{"key": r["key"], "status": "sample" if r["key"] in live_records else "rejected",
             "content_hash": content_hash(r), "crawl_run": r.get("crawl_run") or 1} for r in audio]
    io.write_table(index_path(cfg), to_table(sorted(rows, key=lambda r: r["key"]), INDEX_SCHEMA))


def sidecars(cfg: BuildConfig) -> list[dict]:
    return sorted((io.read_json(p) for p in io.listdir(io.join(cfg.out, "shards", "*-[0-9]*.json"))),
                  key=lambda s: s["name"])


def tombstones(old: list[dict], records: set[str]) -> list[str]:
    """'{shard file}/{sample key}' of every published sample of these records."""
    return sorted(f"{s['file']}/{k}" for s in old for m in s["members"] if m["record"] in records
                  for k in m.get("samples", []))


def shard_incremental(cfg: BuildConfig) -> list[dict]:
    from bestiary.pipelines import stages  # the shared select and probe steps

    run = current_run(cfg)
    index = read_index(cfg)
    if not index:
        raise ValueError(f"{cfg.out}: no record index from a previous run (state/index.parquet)")
    catalog_audio, _ = stages._catalog(cfg)
    hashes = {r["key"]: content_hash(r) for r in catalog_audio}
    changed = {k for k, h in hashes.items() if k in index and index[k]["content_hash"] != h}
    gone = {k for k in index if k not in hashes}
    fresh = {k for k in hashes if k not in index} | changed
    old = sidecars(cfg)
    manifest = io.read_json(io.join(cfg.out, "shards", "manifest.json"))
    dead = set(manifest.get("deleted", [])) | set(tombstones(old, changed | gone))
    published = {m["record"] for s in old for m in s["members"]
                 if m["record"] not in changed | gone and any(f"{s['file']}/{k}" not in dead for k in m.get("samples", []))}

    audio, images, rejects, excluded = stages.select(cfg)
    audio_keys = set(hashes)
    rejects = [r for r in rejects if r["key"] in fresh or r["key"] not in audio_keys]  # images: judged every run
    known = io.read_rows(io.join(cfg.out, "catalog", "probes.parquet"))
    known = {p["key"]: p for p in known if p["key"] not in fresh}
    new_audio = [r for r in audio if r["key"] in fresh]
    live_audio = [r for r in audio if r["key"] in published]
    probes = stages.probe(cfg, new_audio + live_audio, images, known)
    ok_new, ok_images, probe_rejects, broken = stages.probe_outcomes(new_audio, images, probes)
    rejects += probe_rejects
    for reason, n in broken.items():
        excluded[reason] = excluded.get(reason, 0) + n
    kept, dup_rejects = dedupe_audio(live_audio + ok_new, probes, frozenset(published))
    rejects += [r for r in dup_rejects if r["key"] in fresh]
    kept_new = [r for r in kept if r["key"] in fresh]
    for r in kept_new:
        if r["key"] in changed:  # its old samples are tombstones: the new ones need other keys
            r["sample_suffix"] = f"_r{run:04d}"
    images_kept, _ = dedupe_images(ok_images, probes)
    fixed = {m["image"]: m["split"] for s in old for m in s["members"] if m["record"] in published}
    first = {}
    for s in old:
        first[s["split"]] = max(first.get(s["split"], 0), int(s["name"].rsplit("-", 1)[1]) + 1)
    tasks, plan_rejects = plan_shards(kept_new, images_kept, cfg.splits, cfg.shards, cfg.media.clip_seconds,
                                      cfg.media.max_clips_per_recording, fixed, first)
    carried = [r for r in io.read_rows(io.join(cfg.out, "rejects.parquet"))
               if r["key"] in audio_keys and r["key"] not in fresh and r["stage"] not in ("crawl", "materialize")]
    io.write_table(io.join(cfg.out, "work", "rejects-plan.parquet"),
                   to_table(carried + rejects + plan_rejects, REJECT_SCHEMA))
    io.write_json(io.join(cfg.out, "work", "tombstones.json"), sorted(dead))
    io.write_json(io.join(cfg.out, "work", "stats-plan.json"), {
        "run": run, "audio_new": len(fresh - changed), "audio_changed": len(changed), "audio_gone": len(gone),
        "audio_selected": len(new_audio), "images_selected": len(images), "images_excluded": dict(sorted(excluded.items())),
        "shards_planned": len(tasks), "recordings_planned": sum(len(t["records"]) for t in tasks),
        "tombstones": len(dead), "rejects": len(rejects) + len(plan_rejects),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects + plan_rejects).items()))})
    with make_pipeline(cfg.runner) as p:
        _ = p | beam.Create(tasks) | beam.Reshuffle() | "materialize" >> beam.ParDo(MaterializeShard(cfg))
    return tasks
