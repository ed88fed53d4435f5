"""The four stages as Beam pipelines over files: crawl, enrich, caption, shard.

Each stage reads the previous stage's files and writes its own; a stage whose
`work/{stage}.done.json` names the same fingerprint is skipped, so a second
run reuses finished work.  Driver-side code handles metadata only (small);
network and media work happen in the DoFns.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections import Counter

import apache_beam as beam

from bestiary.connectors.http import policy_from
from bestiary.connectors.licenses import license_allowed
from bestiary.pipelines import io
from bestiary.pipelines.caption import CaptionWithLLM, caption_row
from bestiary.pipelines.crawl import CrawlPartition, Normalize, partitions, pick_one
from bestiary.pipelines.runs import current_run, load_runs, save_runs
from bestiary.pipelines.runs import now as run_clock
from bestiary.pipelines.dedupe import PROBE_SCHEMA, ProbeMedia, dedupe_audio, dedupe_images
from bestiary.pipelines.enrich import enrich, record_taxa, unresolved_reject  # noqa: F401 (enrich: a stage)
from bestiary.pipelines.materialize import MaterializeShard
from bestiary.pipelines.plan import plan_shards
from bestiary.pipelines.runner import make_pipeline
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import (CAPTION_SCHEMA, CATALOG_SCHEMA, REJECT_SCHEMA, TAXON_RANKS,
                                      reject, to_table)

log = logging.getLogger(__name__)


def path(cfg: BuildConfig, *parts: str) -> str:
    return io.join(cfg.out, *parts)


def gone_keys(rows: list[dict], run: int) -> set[str]:
    """Records a source listed before but not in this run's complete re-listing of the same query: deleted."""
    relisted = {(r["source"], r["_partition"].split("-run")[0]) for r in rows
                if r.get("_mode") == "relist" and r["crawl_run"] == run}
    seen_now = {r["key"] for r in rows if r.get("_mode") == "relist" and r["crawl_run"] == run}
    return {r["key"] for r in rows if (r["source"], r["_partition"].split("-run")[0]) in relisted
            and r["key"] not in seen_now}


def _write_crawl(_, cfg: BuildConfig, rows: list[dict], rejects: list[dict], raw_count: int, norm_count: int) -> None:
    run = current_run(cfg)
    versions: dict[str, list[dict]] = {}
    for r in rows:
        versions.setdefault(r["key"], []).append(r)
    gone = gone_keys(rows, run) if run > 1 else set()
    rows = sorted((pick_one(vs) for k, vs in versions.items() if k not in gone), key=lambda r: r["key"])
    io.write_json(path(cfg, "work", "crawl-gone.json"), sorted(gone))
    audio = [r for r in rows if r["media_type"] == "audio"]
    images = [r for r in rows if r["media_type"] == "image"]
    io.write_table(path(cfg, "catalog", "recordings.parquet"), to_table(audio, CATALOG_SCHEMA))
    io.write_table(path(cfg, "catalog", "images.parquet"), to_table(images, CATALOG_SCHEMA))
    io.write_table(path(cfg, "work", "rejects-crawl.parquet"),
                   to_table(sorted(rejects, key=lambda r: (r["key"], r["reason"])), REJECT_SCHEMA))
    io.write_json(path(cfg, "work", "stats-crawl.json"), {
        "raw_records": raw_count, "catalog_rows": len(rows), "duplicates_dropped": norm_count - len(rows) - len(gone),
        "gone_from_listings": len(gone), "run": run,
        "audio_items": len(audio), "image_items": len(images), "rejects": len(rejects),
        "partitions_failed": sorted(r["key"].removeprefix("partition:") for r in rejects if r["key"].startswith("partition:")),
        "by_source": dict(sorted(Counter(f"{r['source']}/{r['media_type']}" for r in rows).items())),
    })


def crawl_partitions(cfg: BuildConfig) -> list[dict]:
    """Every run's partitions: a full build is run 1; incremental runs add theirs (see runs.py)."""
    runs = load_runs(cfg)
    if not runs:
        runs = [{"run": 1, "started": run_clock(), "cursors": {}, "partitions": partitions(cfg)}]
        save_runs(cfg, runs)
    return [p for r in runs for p in r["partitions"]]


def crawl(cfg: BuildConfig) -> None:
    with make_pipeline(cfg.runner) as p:
        raw = (p | "partitions" >> beam.Create(crawl_partitions(cfg)) | beam.Reshuffle()
               | "crawl" >> beam.ParDo(CrawlPartition(cfg)).with_outputs("rejects", main="records"))
        norm = raw.records | "normalize" >> beam.ParDo(Normalize(cfg)).with_outputs("rejects", main="rows")
        # every version of each key goes to the writer: it keeps the latest and sees which records left a listing
        rows = norm.rows
        rejects = (raw.rejects, norm.rejects) | "all rejects" >> beam.Flatten()
        raw_count = raw.records | "count raw" >> beam.combiners.Count.Globally()
        norm_count = norm.rows | "count rows" >> beam.combiners.Count.Globally()
        (p | "once" >> beam.Create([None])
         | "write" >> beam.Map(_write_crawl, cfg, beam.pvalue.AsList(rows), beam.pvalue.AsList(rejects),
                               beam.pvalue.AsSingleton(raw_count), beam.pvalue.AsSingleton(norm_count)))


def _catalog(cfg: BuildConfig) -> tuple[list[dict], list[dict]]:
    return (io.read_rows(path(cfg, "catalog", "recordings.parquet")),
            io.read_rows(path(cfg, "catalog", "images.parquet")))


def _write_captions(_, cfg: BuildConfig, rows: list[dict]) -> None:
    io.write_table(path(cfg, "catalog", "captions.parquet"),
                   to_table(sorted(rows, key=lambda r: r["key"]), CAPTION_SCHEMA))
    stats = {"captions": len(rows), "default_kind": cfg.captions.default}
    if cfg.captions.llm:
        llm = cfg.captions.llm
        status = Counter(r["llm_status"] for r in rows)
        prompt, completion = sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)
        stats["llm"] = {
            "model": llm.model, "requests": sum(r["llm_requests"] for r in rows),
            "llm_captions": status.pop("llm", 0), "cache_hits": status.pop("cached", 0),
            "fallbacks": dict(sorted(status.items())), "prompt_tokens": prompt, "completion_tokens": completion,
            "estimated_cost": round(prompt / 1000 * llm.price_per_1k_input + completion / 1000 * llm.price_per_1k_output, 4)}
    io.write_json(path(cfg, "work", "stats-caption.json"), stats)


def caption_cache_path(cfg: BuildConfig) -> str:
    """SQLite needs a local file: beside the output when it is local, else in the user's cache."""
    if io.is_local(cfg.out):
        return os.path.join(cfg.out, "cache", "captions.sqlite")
    return os.path.join(os.path.expanduser("~"), ".cache", "bestiary", "captions.sqlite")


def caption(cfg: BuildConfig) -> None:
    audio, _ = _catalog(cfg)
    taxa, _ = record_taxa(cfg)
    pairs = [(r, taxa[r["key"]]) for r in audio if r["key"] in taxa]
    with make_pipeline(cfg.runner) as p:
        kind = cfg.captions.default
        recs = p | beam.Create(pairs)
        if cfg.captions.llm:
            caps = (recs | beam.BatchElements(min_batch_size=8, max_batch_size=64)
                    | "llm caption" >> beam.ParDo(CaptionWithLLM(cfg, caption_cache_path(cfg), uuid.uuid4().hex)))
        else:
            caps = recs | "caption" >> beam.Map(lambda pair: caption_row(pair[0], pair[1], kind))
        p | "once" >> beam.Create([None]) | beam.Map(_write_captions, cfg, beam.pvalue.AsList(caps))


def _with_taxon(row: dict, taxon: dict) -> dict:
    out = {**{k: v for k, v in row.items() if k != "raw"}, "taxon_id": taxon["taxon_id"], "accepted_name": taxon["accepted_name"],
           "taxon_common_name": taxon.get("common_name"), "method": taxon["method"], "traits": taxon.get("traits") or {}}
    for r in TAXON_RANKS:
        out[r], out[f"{r}_id"] = taxon.get(r), taxon.get(f"{r}_id")
    return out


def _gate(row: dict, taxon: dict | None, res: dict | None, originals: set[str], allow: list[str]) -> dict | None:
    """The reject for a catalog row that may not become (part of) a sample, or None: the checks audio and
    images share."""
    if row.get("mirror_of") in originals:  # GBIF's copy of a record crawled from its archive
        return reject(row["key"], "select", "mirror_of_crawled_record", row["mirror_of"])
    if not license_allowed(row["license"], allow):
        return reject(row["key"], "select", "license_not_allowed", row["license"])
    if taxon is None:
        return unresolved_reject(row, res)
    return None


def select(cfg: BuildConfig) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Catalog rows that may become samples (licence allowed, species resolved), and rejects for the rest."""
    audio, images = _catalog(cfg)
    taxa, resolutions = record_taxa(cfg)
    caps = {c["key"]: c for c in io.read_rows(path(cfg, "catalog", "captions.parquet"))}
    ok_audio, ok_images, rejects = [], [], []
    excluded = Counter()
    originals = {r["key"] for r in audio + images} | {r["observation_id"] for r in audio + images}
    for row in audio:
        taxon = taxa.get(row["key"])
        bad = _gate(row, taxon, resolutions.get(row["key"]), originals, cfg.licenses.allow)
        if bad is None and not row["media_url"]:
            bad = reject(row["key"], "select", "no_media_url", "")
        if bad:
            rejects.append(bad)
        else:
            cap = caps[row["key"]]
            ok_audio.append({**_with_taxon(row, taxon), "caption": cap["default"], "captions": cap["captions"]})
    for row in images:
        taxon = taxa.get(row["key"])
        bad = _gate(row, taxon, resolutions.get(row["key"]), originals, cfg.licenses.allow)
        if bad:
            excluded[bad["reason"]] += 1
            rejects.append(bad)
        else:
            ok_images.append(_with_taxon(row, taxon))
    return ok_audio, ok_images, rejects, dict(excluded)


def _write_probes(_, cfg: BuildConfig, rows: list[dict], known: list[dict]) -> None:
    io.write_table(path(cfg, "catalog", "probes.parquet"),
                   to_table(sorted(rows + known, key=lambda r: (r["kind"], r["key"])), PROBE_SCHEMA))


def probe(cfg: BuildConfig, audio: list[dict], images: list[dict], known: dict[str, dict] | None = None) -> dict[str, dict]:
    """Fetch every selected medium into the cache and fingerprint it (one Beam pass).  `known` probes (an
    incremental run's earlier ones) are kept, not redone."""
    known = known or {}
    items = sorted([("audio", r["key"], r["media_url"]) for r in audio if r["key"] not in known] +
                   [("image", r["key"], r["media_url"]) for r in images if r["key"] not in known])
    with make_pipeline(cfg.runner) as p:
        durations = {r["key"]: r["duration_s"] for r in audio if r.get("duration_s")}
        rows = (p | beam.Create(items) | beam.Reshuffle()
                | "probe" >> beam.ParDo(ProbeMedia(path(cfg, "cache", "media"), cfg.media, policy_from(cfg.http, cfg.sources),
                                                      durations)))
        p | "once" >> beam.Create([None]) | beam.Map(_write_probes, cfg, beam.pvalue.AsList(rows), list(known.values()))
    return {r["key"]: r for r in io.read_rows(path(cfg, "catalog", "probes.parquet"))}


def probe_outcomes(audio: list[dict], images: list[dict], probes: dict[str, dict]) -> tuple[list, list, list, Counter]:
    """Records whose media decoded (audio with its PCM hash), rejects for the rest, broken images by reason."""
    ok_audio, ok_images, rejects, broken = [], [], [], Counter()
    for r in audio:
        pr = probes[r["key"]]
        if pr.get("reason"):
            rejects.append(reject(r["key"], "probe", pr["reason"], pr.get("detail") or ""))
        else:
            ok_audio.append({**r, "pcm_sha256": pr["pcm_sha256"], "original_sample_rate": pr["sample_rate"]})
    for r in images:
        pr = probes[r["key"]]
        if pr.get("reason"):  # a broken image is a reject too; its recordings pair with another image
            rejects.append(reject(r["key"], "probe", pr["reason"], pr.get("detail") or ""))
            broken[pr["reason"]] += 1
        else:
            ok_images.append(r)
    return ok_audio, ok_images, rejects, broken


def deduplicated(cfg: BuildConfig) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Selected, probed and deduplicated records; rejects; counts of images left out by reason."""
    audio, images, rejects, excluded = select(cfg)
    probes = probe(cfg, audio, images)
    ok_audio, ok_images, probe_rejects, broken = probe_outcomes(audio, images, probes)
    for reason, n in broken.items():
        excluded[reason] = excluded.get(reason, 0) + n
    audio, dup_rejects = dedupe_audio(ok_audio, probes)
    images, dropped = dedupe_images(ok_images, probes)
    if dropped:
        excluded["duplicate_image"] = dropped
    return audio, images, rejects + probe_rejects + dup_rejects, excluded


def shard(cfg: BuildConfig) -> list[dict]:
    """Probe and deduplicate, plan, then materialize every shard; returns the shard tasks.  In an incremental
    run only what is new or changed is planned, into new shards."""
    if current_run(cfg) > 1:
        from bestiary.pipelines.incremental import shard_incremental
        return shard_incremental(cfg)
    audio, images, rejects, excluded = deduplicated(cfg)
    tasks, plan_rejects = plan_shards(audio, images, cfg.splits, cfg.shards, cfg.media.clip_seconds,
                                      cfg.media.max_clips_per_recording)
    io.write_table(path(cfg, "work", "rejects-plan.parquet"), to_table(rejects + plan_rejects, REJECT_SCHEMA))
    io.write_json(path(cfg, "work", "stats-plan.json"), {
        "audio_selected": len(audio), "images_selected": len(images), "images_excluded": dict(sorted(excluded.items())),
        "shards_planned": len(tasks), "recordings_planned": sum(len(t["records"]) for t in tasks),
        "rejects": len(rejects) + len(plan_rejects),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects + plan_rejects).items()))})
    with make_pipeline(cfg.runner) as p:
        _ = p | beam.Create(tasks) | beam.Reshuffle() | "materialize" >> beam.ParDo(MaterializeShard(cfg))
    return tasks
