"""`bestiary build`: the stages in order, skipping finished ones, then manifest, rejects and stats."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable

import requests

from bestiary.pipelines import io, stages
from bestiary.pipelines.dedupe import leak_check
from bestiary.pipelines.killpoints import killpoint
from bestiary.pipelines.runner import configure_filesystems
from bestiary.pipelines.crawl import partitions
from bestiary.pipelines.runs import current_run, load_runs, save_runs, start_incremental
from bestiary.pipelines.runs import now as runs_now
from bestiary.schemas.config import BuildConfig, ConfigError
from bestiary.schemas.records import REJECT_SCHEMA, to_table

log = logging.getLogger(__name__)
STAGES = ("crawl", "enrich", "caption", "shard")
# which config sections each stage's output depends on (a stage also depends on all before it)
STAGE_SECTIONS = {"crawl": ("sources",), "enrich": ("taxonomy",), "caption": ("captions",),
                  "shard": ("media", "licenses", "splits", "shards")}


def preflight(cfg: BuildConfig, timeout: float = 5.0) -> None:
    """Every base URL answers (any HTTP status) before work starts; else one clear ConfigError."""
    for s in cfg.sources:
        if s.api_key_env and not os.environ.get(s.api_key_env):
            raise ConfigError(f"{s.name} needs an API key in the environment variable {s.api_key_env}, which is not set")
    urls = [(s.name, s.base_url) for s in cfg.sources]
    if cfg.taxonomy.gbif_base_url:
        urls.append(("gbif", cfg.taxonomy.gbif_base_url))
    for name, url in urls:
        try:
            requests.head(url + "/", timeout=timeout, allow_redirects=False)
        except requests.RequestException as err:
            raise ConfigError(f"cannot reach {name} at {url} ({type(err).__name__})") from None


def stage_fingerprint(cfg: BuildConfig, stage: str) -> str:
    upto = STAGES[: STAGES.index(stage) + 1]
    return cfg.fingerprint(*[s for st in upto for s in STAGE_SECTIONS[st]])


def _done_path(cfg: BuildConfig, stage: str) -> str:
    return io.join(cfg.out, "work", f"{stage}.done.json")


def stage_done(cfg: BuildConfig, stage: str) -> bool:
    p = _done_path(cfg, stage)
    return io.exists(p) and io.read_json(p).get("fingerprint") == stage_fingerprint(cfg, stage)


def run_stage(cfg: BuildConfig, stage: str, fn: Callable[[BuildConfig], object], force: bool = False) -> bool:
    """Run one stage unless its outputs are already there for this config; True if it ran."""
    if not force and stage_done(cfg, stage):
        log.info("stage %s: up to date, skipped", stage)
        return False
    t0 = time.time()
    log.info("stage %s: running", stage)
    fn(cfg)
    io.write_json(_done_path(cfg, stage), {"fingerprint": stage_fingerprint(cfg, stage)})
    log.info("stage %s: done in %.1f s", stage, time.time() - t0)
    return True


def build(cfg: BuildConfig, only: tuple[str, ...] = STAGES, force: bool = False, rebuild: bool = False,
          incremental: bool = False) -> dict:
    """Run the stages (finished ones skipped unless `force`).  `rebuild`: every stage again from the kept raw
    pages and caches, with the network refused, so the output must come out byte-identical.  `incremental`:
    a new run that crawls what the archives published or changed since the last one and appends shards."""
    configure_filesystems(cfg.runner)
    if rebuild and incremental:
        raise ConfigError("--rebuild and --incremental do not go together")
    if rebuild:
        if len(load_runs(cfg)) > 1:
            raise ConfigError(f"{cfg.out} grew by incremental runs; --rebuild reproduces a single-run build. "
                              "Build the same config into a new folder for a full, reproducible copy.")
        cfg = cfg.model_copy(update={"http": cfg.http.model_copy(update={"offline": True})})
        force = True
        io.delete(io.listdir(io.join(cfg.out, "shards", "*-[0-9]*.json")))  # every shard is written again
    else:
        preflight(cfg)
    if incremental:
        if not io.exists(io.join(cfg.out, "shards", "manifest.json")) or not stage_done(cfg, "shard"):
            raise ConfigError(f"{cfg.out} has no finished build to add to: run a full `bestiary build` first")
        runs = load_runs(cfg)
        if not runs or not io.exists(io.join(cfg.out, "state", "index.parquet")):
            raise ConfigError(f"{cfg.out} was built before runs and the record index were kept: run "
                              "`bestiary build CONFIG` once (it records both), then --incremental")
        if runs[-1].get("finished"):  # else the last incremental run was cut short: finish it
            start_incremental(cfg, io.read_rows(io.join(cfg.out, "catalog", "recordings.parquet")) +
                              io.read_rows(io.join(cfg.out, "catalog", "images.parquet")))
        force = True
    elif not rebuild and not stage_done(cfg, "crawl"):
        save_runs(cfg, [])  # a full crawl is run 1 again, of this config's partitions
    ran = False
    for stage in STAGES:
        if stage in only:
            # a stage reruns when one before it ran: its inputs changed
            ran = run_stage(cfg, stage, getattr(stages, stage), force=force or ran) or ran
    if "shard" in only:
        stats = finalize(cfg)
        runs = load_runs(cfg) or [{"run": 1, "started": runs_now(), "cursors": {}, "partitions": partitions(cfg)}]
        runs[-1]["finished"] = True  # (an output from before runs were recorded gets its run 1 here)
        save_runs(cfg, runs)
        return stats
    return {}


def finalize(cfg: BuildConfig) -> dict:
    """manifest.json (and manifest-vN.json), sizes.json, rejects.parquet, stats.json, the record index and the
    dataset card, from the shard sidecars."""
    from bestiary.pipelines.incremental import sidecars as read_sidecars
    from bestiary.pipelines.incremental import write_index
    run = current_run(cfg)
    sidecars = read_sidecars(cfg)
    deleted = io.read_json(io.join(cfg.out, "work", "tombstones.json")) if run > 1 else []
    live = live_records(sidecars, set(deleted))
    leak_check([m for s in sidecars for m in s["members"]])  # before anything is published
    manifest = manifest_from(cfg, sidecars, deleted, run)
    io.write_json(io.join(cfg.out, "shards", "sizes.json"), {s["file"]: s["samples"] for s in sidecars})
    rejects = []
    for part in ("rejects-crawl.parquet", "rejects-plan.parquet"):  # select, probe, dedupe and plan rejects
        rejects += io.read_rows(io.join(cfg.out, "work", part))
    audio = io.read_rows(io.join(cfg.out, "catalog", "recordings.parquet"))
    present = {r["key"] for r in audio}
    for s in sidecars:  # materialize rejects; an earlier run's, only for records still there without a sample
        rejects += [r for r in s["rejects"] if run == 1 or (r["key"] in present and r["key"] not in live)]
    rejects = list({(r["stage"], r["key"], r["reason"]): r for r in rejects}.values())
    rejects.sort(key=lambda r: (r["stage"], r["key"], r["reason"]))
    io.write_table(io.join(cfg.out, "rejects.parquet"), to_table(rejects, REJECT_SCHEMA))
    stats = build_stats(cfg, sidecars, rejects, live, present)
    io.write_json(io.join(cfg.out, "stats.json"), stats)
    # the versioned manifest first, then the latest: a reader of manifest.json never sees a half-written run
    io.write_json(io.join(cfg.out, "shards", f"manifest-v{run}.json"), manifest)
    killpoint("finalize:manifest")
    io.write_json(io.join(cfg.out, "shards", "manifest.json"), manifest)
    write_index(cfg, audio, live)
    from bestiary.pipelines.card import write_card
    write_card(cfg, manifest, {**stats, "recordings_in_samples_keys": sorted(live)})
    return stats


def live_records(sidecars: list[dict], deleted: set[str]) -> set[str]:
    """Records with at least one sample that is not a tombstone."""
    return {m["record"] for s in sidecars for m in s["members"]
            if any(f"{s['file']}/{k}" not in deleted for k in m.get("samples", [None]))}


def manifest_from(cfg: BuildConfig, sidecars: list[dict], deleted: list[str] | None = None, version: int = 1) -> dict:
    splits: dict[str, dict] = {}
    for s in sidecars:
        d = splits.setdefault(s["split"], {"shards": 0, "samples": 0, "bytes": 0, "species": set()})
        d["shards"] += 1
        d["samples"] += s["samples"]
        d["bytes"] += s["bytes"]
        d["species"] |= set(s["species"])
    return {
        "format": "bestiary-webdataset/1", "version": version,
        "config_fingerprint": cfg.fingerprint(),
        "members": ["flac", "jpg", "json", "txt"],
        "sample_rate": cfg.media.sample_rate, "clip_seconds": cfg.media.clip_seconds,
        "splits": {k: {**{kk: vv for kk, vv in v.items() if kk != "species"}, "species": sorted(v["species"])}
                   for k, v in sorted(splits.items())},
        "shards": [{k: s[k] for k in ("name", "file", "split", "samples", "bytes", "sha256")} for s in sidecars],
        "deleted": sorted(deleted or []),   # tombstones '{shard file}/{sample key}': readers skip them
    }


def build_stats(cfg: BuildConfig, sidecars: list[dict], rejects: list[dict], in_samples: set[str],
                audio_keys: set[str]) -> dict:
    """Per-stage counts and the balance: every audio record is in a sample or in rejects."""
    rejected_audio = {r["key"] for r in rejects if r["key"] in audio_keys}
    unparseable = [r for r in rejects if r["stage"] == "crawl" and r["key"] not in audio_keys]
    stats = {name: io.read_json(io.join(cfg.out, "work", f"stats-{name}.json"))
             for name in ("crawl", "enrich", "caption", "plan")}
    stats["shard"] = {
        "shards": len(sidecars), "samples": sum(s["samples"] for s in sidecars),
        "samples_by_split": dict(sorted(Counter({s["split"]: 0 for s in sidecars}).items())),
        "audio_hours": round(sum(s["seconds"] for s in sidecars) / 3600, 3),
    }
    for s in sidecars:
        stats["shard"]["samples_by_split"][s["split"]] += s["samples"]
    stats["rejects_by_reason"] = dict(sorted(Counter(f"{r['stage']}/{r['reason']}" for r in rejects).items()))
    image_keys = {r["key"] for r in io.read_rows(io.join(cfg.out, "catalog", "images.parquet"))}
    paired = {m["image"] for s in sidecars for m in s["members"]}
    image_rejects = {r["key"] for r in rejects if r["key"] in image_keys}
    stats["images"] = {"crawled": len(image_keys), "paired_in_samples": len(paired), "rejected": len(image_rejects),
                       "unused": len(image_keys - paired - image_rejects)}
    crawled = len(audio_keys) + len(unparseable)
    stats["accounting"] = {
        "records_crawled": crawled, "recordings_in_samples": len(in_samples),
        "records_rejected": len(rejected_audio) + len(unparseable),
        "overlap": len(in_samples & rejected_audio),
        "balanced": crawled == len(in_samples) + len(rejected_audio) + len(unparseable) and not (in_samples & rejected_audio),
    }
    return stats

