"""`bestiary build`: the stages in order, skipping finished ones, then the manifest, stats and card.

Each stage is a Beam pipeline over files (crawl, enrich, caption; shard is a
plan pipeline and a materialize pipeline); a stage whose `work/{stage}.done.json`
names the same config fingerprint is skipped.  The driver builds graphs that do
not depend on the record count and reads back O(partitions + shards + species)
facts: the stages' stats, the shard summaries and the finalize summary.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from urllib.parse import urlsplit

import requests

from bestiary.connectors.http import USER_AGENT, Pacer, policy_from, rate_for
from bestiary.pipelines import io, progress, tombstones
from bestiary.pipelines.caption import OUTPUTS as CAPTION_OUTPUTS
from bestiary.pipelines.caption import Caption
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.crawl import OUTPUTS as CRAWL_OUTPUTS
from bestiary.pipelines.crawl import Crawl
from bestiary.pipelines.enrich import OUTPUTS as ENRICH_OUTPUTS
from bestiary.pipelines.enrich import Enrich
from bestiary.pipelines.errors import LeakError
from bestiary.pipelines.finalize import Finalize, accounting, image_account
from bestiary.connectors import registry
from bestiary.pipelines.killpoints import killpoint
from bestiary.pipelines.lock import OutputLock
from bestiary.pipelines.runner import configure_filesystems, pipeline
from bestiary.pipelines.runs import context, load_runs, save_runs, start_incremental
from bestiary.pipelines.shard import OUTPUTS as PLAN_OUTPUTS
from bestiary.pipelines.shard import MaterializePlan, PlanShards
from bestiary.schemas.config import BuildConfig, ConfigError

log = logging.getLogger(__name__)
STAGES = ("crawl", "enrich", "caption", "shard")
# which config sections each stage's output depends on (a stage also depends on all before it)
STAGE_SECTIONS = {"crawl": ("sources",), "enrich": ("taxonomy",), "caption": ("captions",),
                  "shard": ("media", "licenses", "splits", "shards")}
NEEDS = {"enrich": ("catalog/recordings", "crawl"), "caption": ("catalog/resolutions", "enrich"),
         "shard": ("catalog/captions", "caption")}


def check_inputs(cfg: BuildConfig, stages: tuple[str, ...] = STAGES) -> None:
    """The files `stages` read exist, before work starts (a rebuild too); else one clear ConfigError: a
    files source's tables for crawl, the taxonomy tables and trait mappings for enrich."""
    for s in cfg.sources if "crawl" in stages else []:
        for q in s.queries if not registry.get(s.name).needs_base_url else []:
            if not str(q).startswith(("http://", "https://")) and not io.exists(str(q)):
                raise ConfigError(f"{s.name}: table {q} not found")
    if "enrich" not in stages:
        return
    t = cfg.taxonomy
    named = [("taxonomy.backbone", t.backbone), ("taxonomy.ebird", t.ebird), ("taxonomy.inat_taxa", t.inat_taxa)]
    named += [(f"taxonomy.traits.{i}.path", tr.path) for i, tr in enumerate(t.traits)]
    for where, path in named:
        if path and not str(path).startswith(("http://", "https://")) and not io.exists(str(path)):
            raise ConfigError(f"{where}: {path} not found (relative paths are from the folder the command runs in)")
    from bestiary.taxonomy.traits import MappingError, load_mapping
    for i, tr in enumerate(t.traits):
        try:
            load_mapping(tr.mapping)
        except (MappingError, OSError) as err:
            raise ConfigError(f"taxonomy.traits.{i}.mapping: {err}") from None


def preflight(cfg: BuildConfig, stages: tuple[str, ...] = STAGES, timeout: float = 5.0) -> None:
    """Every base URL that `stages` talk to answers (any HTTP status) before work starts; else one clear
    ConfigError.  Crawl and shard (which fetches the media) talk to the archives, enrich to GBIF and
    iNaturalist's taxa, caption to none of them: `bestiary caption` runs with the archives down.  The look
    keeps to each host's rate like every other request."""
    archives = bool({"crawl", "shard"} & set(stages))
    sources = cfg.sources if archives else []
    for s in sources:
        if s.api_key_env and not os.environ.get(s.api_key_env):
            raise ConfigError(f"{s.name} needs an API key in the environment variable {s.api_key_env}, which is not set")
    urls = [(s.name, s.base_url) for s in sources if s.base_url]
    if "enrich" in stages:
        urls += [(s.name, s.base_url) for s in cfg.sources if s.name == "inaturalist" and s.base_url and not archives]
        if cfg.taxonomy.gbif_base_url:
            urls.append(("gbif", cfg.taxonomy.gbif_base_url))
    policy, pacers = policy_from(cfg.http, cfg.sources), {}
    roots = {s.base_url: registry.get(s.name).api_path for s in cfg.sources}
    for name, url in urls:
        host = urlsplit(url).netloc
        rate = rate_for(host, policy)
        if rate:
            pacers.setdefault(host, Pacer(rate)).acquire()
        path = roots.get(url) or "/"
        try:
            got = requests.head(url + path, timeout=timeout, allow_redirects=False, headers={"User-Agent": USER_AGENT})
        except requests.RequestException as err:
            raise ConfigError(f"cannot reach {name} at {url} ({type(err).__name__})") from None
        if got.status_code == 404 and path != "/":
            raise ConfigError(f"{url} is not a {name} API: {path} answers 404 (base_url is the host, "
                              f"e.g. https://xeno-canto.org, not a path under it)")


def check_out(out: str) -> None:
    """The output folder can be one: not a file, not under a file, writable."""
    if not io.is_local(out):
        return
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"out {out} is a file, not a folder")
    parent = path
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ConfigError(f"out {out} is under a file ({parent})")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "wb") as fh:
            fh.write(b"")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"cannot write to out {out} ({err.strerror or type(err).__name__})") from None


SHAPING = ("media", "licenses", "splits", "shards")   # the sections that shape the shards


def check_shaping(cfg: BuildConfig, force: bool, incremental: bool) -> None:
    """An output holds the shards of one config: one whose shard-shaping sections differ is refused (a full
    build with --force replaces its shards; an incremental run never mixes two)."""
    path = io.join(cfg.out, "work", "shaping.json")
    if not io.exists(path) or not io.exists(io.join(cfg.out, "shards", "manifest.json")):
        return
    before, now = io.read_json(path), {s: cfg.fingerprint(s) for s in SHAPING}
    differ = sorted(k for k in SHAPING if before.get(k) != now[k])
    if not differ:
        return
    if incremental:
        raise ConfigError(f"{cfg.out} holds shards of another config ({', '.join(differ)} differ): an incremental "
                          "run adds to the same config only; build into a new folder")
    if not force:
        raise ConfigError(f"{cfg.out} holds shards of another config ({', '.join(differ)} differ): build into a "
                          "new folder, or add --force to replace them")


def clean_leftovers(cfg: BuildConfig) -> None:
    """Files a killed run left half-written (`*.tmp-PID`): never published, removed on the next run."""
    for pattern in ("shards/*.tmp-*", "work/shards/*.tmp-*", "work/*.tmp-*", "state/*.tmp-*"):
        io.delete(io.listdir(io.join(cfg.out, *pattern.split("/"))))


def stage_fingerprint(cfg: BuildConfig, stage: str) -> str:
    upto = STAGES[: STAGES.index(stage) + 1]
    return cfg.fingerprint(*[s for st in upto for s in STAGE_SECTIONS[st]])


def _done_path(cfg: BuildConfig, stage: str) -> str:
    return io.join(cfg.out, "work", f"{stage}.done.json")


def stage_done(cfg: BuildConfig, stage: str) -> bool:
    p = _done_path(cfg, stage)
    return io.exists(p) and io.read_json(p).get("fingerprint") == stage_fingerprint(cfg, stage)


def _clear(ctx: RunContext, outputs: tuple[str, ...]) -> None:
    for rel in outputs:
        io.clear(ctx.path(*rel.split("/")))


def _needs(ctx: RunContext, stage: str) -> None:
    if stage in NEEDS:
        table, before = NEEDS[stage]
        if not io.parts(ctx.path(*table.split("/"))):
            raise ConfigError(f"{ctx.out} has no {table} yet: run `bestiary {before}` (or `bestiary build`) first")


def run_crawl(ctx: RunContext) -> None:
    _clear(ctx, CRAWL_OUTPUTS)
    with pipeline(ctx.cfg.runner, "crawl", ctx.out) as p:
        _ = p | "crawl" >> Crawl(ctx)


def run_enrich(ctx: RunContext) -> None:
    _clear(ctx, ENRICH_OUTPUTS)
    with pipeline(ctx.cfg.runner, "enrich", ctx.out) as p:
        _ = p | "enrich" >> Enrich(ctx)


def run_caption(ctx: RunContext) -> None:
    _clear(ctx, CAPTION_OUTPUTS)
    with pipeline(ctx.cfg.runner, "caption", ctx.out) as p:
        _ = p | "caption" >> Caption(ctx)


def _stage_previous_probes(ctx: RunContext) -> None:
    """Earlier probes become `work/probes-previous` (reused where URL and media settings match); a rebuild
    probes everything again."""
    prev = ctx.path("work", "probes-previous")
    io.clear(prev)
    if ctx.mode != "rebuild":
        for part in io.parts(ctx.path("catalog", "probes")):
            io.rename(part, io.join(prev, io.basename(part)))
    io.clear(ctx.path("catalog", "probes"))


def _drop_unplanned_shards(ctx: RunContext) -> None:
    """A full build's shards are the plan's: a shard of an earlier plan of this output goes, its tar and its
    records (summary, members, rejects) alike."""
    planned = set(io.read_json(ctx.path("work", "shards-planned.json")))
    stale = [p for p in io.listdir(ctx.path("work", "shards", "*")) + io.listdir(ctx.path("shards", "*.tar"))
             if io.basename(p).split(".", 1)[0] not in planned]
    io.delete(stale + io.listdir(ctx.path("shards", tombstones.DIR, "*.json")))   # a full build has none


def run_shard(ctx: RunContext) -> None:
    _stage_previous_probes(ctx)
    _clear(ctx, PLAN_OUTPUTS)
    with pipeline(ctx.cfg.runner, "plan", ctx.out) as p:
        _ = p | "plan" >> PlanShards(ctx)
    if not ctx.incremental:
        _drop_unplanned_shards(ctx)
    with pipeline(ctx.cfg.runner, "materialize", ctx.out) as p:
        _ = p | "materialize" >> MaterializePlan(ctx)


RUNNERS: dict[str, Callable[[RunContext], None]] = {"crawl": run_crawl, "enrich": run_enrich,
                                                    "caption": run_caption, "shard": run_shard}


def run_stage(ctx: RunContext, stage: str, force: bool = False) -> bool:
    """Run one stage unless its outputs are already there for this config; True if it ran."""
    if not force and stage_done(ctx.cfg, stage):
        log.info("stage %s: up to date, skipped", stage)
        return False
    _needs(ctx, stage)
    t0 = time.time()
    log.info("stage %s: running", stage)
    with progress.stage(stage) as line:
        RUNNERS[stage](ctx)
        line["summary"] = stage_summary(ctx, stage, time.time() - t0)
    io.write_json(_done_path(ctx.cfg, stage), {"fingerprint": stage_fingerprint(ctx.cfg, stage)})
    log.info("stage %s: done in %.1f s", stage, time.time() - t0)
    return True


def stage_summary(ctx: RunContext, stage: str, seconds: float) -> str:
    """One line of counts for a finished stage, from the stats it wrote."""
    def stats(name: str) -> dict:
        path = ctx.path("work", f"stats-{name}.json")
        return io.read_json(path) if io.exists(path) else {}
    if stage == "crawl":
        c = stats("crawl")
        return (f"{progress.rate(c.get('catalog_rows', 0), seconds, 'catalog rows')} from {c.get('pages', 0)} pages: "
                f"{c.get('audio_items', 0)} audio, {c.get('image_items', 0)} images, {c.get('rejects', 0)} rejects"
                + (f", {len(c['partitions_failed'])} partitions failed" if c.get("partitions_failed") else ""))
    if stage == "enrich":
        e = stats("enrich")
        return f"{progress.rate(e.get('records', 0), seconds, 'records')} -> {e.get('species', 0)} species"
    if stage == "caption":
        return progress.rate(stats("caption").get("captions", 0), seconds, "captions")
    p = stats("plan")
    samples = sum(sm.get("samples", 0) for sm in shard_summaries(ctx))
    return (f"{progress.rate(p.get('recordings_planned', 0), seconds, 'recordings')} -> {samples:,} samples; "
            f"{p.get('rejects', 0)} rejects")


def run_one(cfg: BuildConfig, stage: str) -> None:
    """One stage now, on what the output holds (no preflight, no skipping): for tools and tests."""
    configure_filesystems(cfg.runner)
    with OutputLock(cfg.out):
        run_stage(context(cfg, "full"), stage, force=True)


def build(cfg: BuildConfig, only: tuple[str, ...] = STAGES, force: bool = False, rebuild: bool = False,
          incremental: bool = False) -> dict:
    """Run the stages (finished ones skipped unless `force`).  `rebuild`: every stage again from the kept raw
    pages and caches, with the network refused, so the output must come out byte-identical.  `incremental`:
    a new run that crawls what the archives published or changed since the last one and appends shards."""
    configure_filesystems(cfg.runner)
    if rebuild and incremental:
        raise ConfigError("--rebuild and --incremental do not go together")
    if not rebuild:
        preflight(cfg, only)  # before anything is written
    check_inputs(cfg, only)
    check_out(cfg.out)
    if rebuild and not stage_done(cfg, "crawl"):
        raise ConfigError(f"{cfg.out} has no build of this config to redo: --rebuild makes a build again from "
                          "its kept raw pages and caches; run `bestiary build CONFIG` first")
    with OutputLock(cfg.out):
        clean_leftovers(cfg)
        return _build(cfg, only, force, rebuild, incremental)


def _build(cfg: BuildConfig, only: tuple[str, ...], force: bool, rebuild: bool, incremental: bool) -> dict:
    check_shaping(cfg, force, incremental)
    if rebuild:
        if len(load_runs(cfg)) > 1:
            raise ConfigError(f"{cfg.out} grew by incremental runs; --rebuild reproduces a single-run build. "
                              "Build the same config into a new folder for a full, reproducible copy.")
        cfg = cfg.model_copy(update={"http": cfg.http.model_copy(update={"offline": True})})
        force = True
        io.delete(io.listdir(io.join(cfg.out, "work", "shards", "*.json")))  # every shard is written again
    if incremental:
        if not io.exists(io.join(cfg.out, "shards", "manifest.json")) or not stage_done(cfg, "shard"):
            raise ConfigError(f"{cfg.out} has no finished build to add to: run a full `bestiary build` first")
        runs = load_runs(cfg)
        if not runs or not io.parts(io.join(cfg.out, "state", "index")):
            raise ConfigError(f"{cfg.out} was built before runs and the record index were kept: run "
                              "`bestiary build CONFIG` once (it records both), then --incremental")
        if runs[-1].get("finished"):  # else the last incremental run was cut short: finish it
            start_incremental(cfg)
        force = True
    elif not rebuild and not stage_done(cfg, "crawl"):
        save_runs(cfg, [])  # a full crawl is run 1 again, of this config's partitions
    ctx = context(cfg, "rebuild" if rebuild else "incremental" if incremental else "full")
    ran = False
    for stage in STAGES:
        if stage in only:
            # a stage reruns when one before it ran: its inputs changed
            ran = run_stage(ctx, stage, force=force or ran) or ran
    if "shard" in only:
        stats = finalize(ctx)
        runs = load_runs(cfg)
        runs[-1]["finished"] = True
        save_runs(cfg, runs)
        return stats
    return {}


def shard_summaries(ctx: RunContext) -> list[dict]:
    """The shards' summaries (O(shards)): the manifest's rows."""
    return sorted((io.read_json(p) for p in io.listdir(ctx.path("work", "shards", "*.json"))), key=lambda s: s["name"])


def finalize(ctx: RunContext) -> dict:
    """The Beam summary, then (nothing is published if it shows a leak) manifest-vN.json and manifest.json,
    sizes.json, stats.json, the record index and the dataset card."""
    dead = tombstones.current(ctx)   # shard file -> its tombstone count and sidecar (O(shards))
    io.clear(ctx.path("work", "attribution"))
    with progress.stage("finalize") as line:
        with pipeline(ctx.cfg.runner, "finalize", ctx.out) as p:
            _ = p | "finalize" >> Finalize(ctx, {f: t["tombstones"] for f, t in dead.items()})
        summary = io.read_json(ctx.path("work", "finalize.json"))
        acc = accounting(summary["audio"])
        line["summary"] = (f"{acc['records_crawled']:,} audio records: {acc['recordings_in_samples']:,} in samples, "
                           f"{acc['records_rejected']:,} rejected; balanced: {acc['balanced']}")
    if summary["leak_count"]:
        raise LeakError(f"{summary['leak_count']} leak(s) across splits, e.g. {'; '.join(summary['leaks'][:3])}")
    shards = shard_summaries(ctx)
    tokenizer = write_tokenizer(ctx)
    manifest = manifest_from(ctx.cfg, shards, dead, ctx.run, tokenizer)
    io.write_json(ctx.path("shards", "sizes.json"), {s["file"]: s["samples"] for s in shards})
    stats = build_stats(ctx, shards, summary, sum(t["deleted"] for t in dead.values()))
    io.write_json(ctx.path("stats.json"), stats)
    # the versioned manifest first, then the latest: a reader of manifest.json never sees a half-written run
    io.write_json(ctx.path("shards", f"manifest-v{ctx.run}.json"), manifest)
    killpoint("finalize:manifest")
    io.write_json(ctx.path("shards", "manifest.json"), manifest)
    io.clear(ctx.path("state", "index"))
    for part in io.parts(ctx.path("work", "index")):
        io.rename(part, ctx.path("state", "index", io.basename(part)))
    io.clear(ctx.path("attribution"))   # who made every published work, and its licence
    for part in io.parts(ctx.path("work", "attribution")):
        io.rename(part, ctx.path("attribution", io.basename(part)))
    io.write_json(ctx.path("work", "shaping.json"), {s: ctx.cfg.fingerprint(s) for s in SHAPING})
    from bestiary.pipelines.card import write_card
    from bestiary.pipelines.croissant import write_croissant
    write_card(ctx.cfg, manifest, stats, summary["card"])
    write_croissant(ctx.cfg, manifest, sorted(k.split("|", 1)[1] for k in summary["card"] if k.startswith("licence|")))
    return stats


TOKENIZER = "tokenizer.json"


def write_tokenizer(ctx: RunContext) -> str | None:
    """The text encoder's subword tokenizer, trained on the seen species' caption word counts, beside the
    manifest (so no training rank ever reads the shards to build one)."""
    from bestiary.captioning.vocabulary import train_subword
    words = ctx.path("work", "caption-words.json")
    if not io.exists(words):
        return None
    io.write_bytes(ctx.path("shards", TOKENIZER), train_subword(io.read_json(words)).encode())
    return TOKENIZER


def with_image(shard: dict) -> int:
    """A shard summary's samples with an image (summaries written before audio-text samples had all)."""
    return shard.get("samples_with_image", shard["samples"])


def manifest_from(cfg: BuildConfig, shards: list[dict], deleted: dict[str, dict] | None = None, version: int = 1,
                  tokenizer: str | None = None) -> dict:
    """The typed manifest (schemas/manifest.py) of these shard summaries; `deleted`: shard file -> its
    tombstones ({"deleted": count, "tombstones": sidecar}), the shards that have any."""
    from bestiary.schemas.manifest import Manifest
    splits: dict[str, dict] = {}
    for s in shards:
        d = splits.setdefault(s["split"], {"shards": 0, "samples": 0, "samples_with_image": 0, "bytes": 0,
                                           "species": set()})
        d["shards"] += 1
        d["samples"] += s["samples"]
        d["samples_with_image"] += with_image(s)
        d["bytes"] += s["bytes"]
        d["species"] |= set(s["species"])
    return Manifest(
        version=version, config_fingerprint=cfg.fingerprint(), members=["flac", "jpg", "json", "txt"],
        optional_members=["jpg"],
        sample_rate=cfg.media.sample_rate, clip_seconds=cfg.media.clip_seconds,
        splits={k: {**{kk: vv for kk, vv in v.items() if kk != "species"}, "species": sorted(v["species"])}
                for k, v in sorted(splits.items())},
        shards=[{**{k: s[k] for k in ("name", "file", "split", "samples", "bytes", "sha256")},
                 "samples_with_image": with_image(s), **(deleted or {}).get(s["file"], {})} for s in shards],
        tokenizer=tokenizer).model_dump(mode="json")


def build_stats(ctx: RunContext, shards: list[dict], summary: dict, tombstoned: int) -> dict:
    """Per-stage counts and the balance: every audio record is in a sample or in rejects."""
    stats = {name: io.read_json(ctx.path("work", f"stats-{name}.json")) for name in ("crawl", "enrich", "caption", "plan")}
    by_split: dict[str, int] = {}
    for s in shards:
        by_split[s["split"]] = by_split.get(s["split"], 0) + s["samples"]
    stats["shard"] = {"shards": len(shards), "samples": sum(s["samples"] for s in shards),
                      "samples_with_image": sum(with_image(s) for s in shards),
                      "audio_text_samples": sum(s["samples"] - with_image(s) for s in shards),
                      "samples_by_split": dict(sorted(by_split.items())), "tombstones": tombstoned,
                      "audio_hours": round(sum(s["seconds"] for s in shards) / 3600, 3)}
    stats["rejects_by_reason"] = summary["rejects_by_reason"]
    stats["images"] = image_account(summary["images"])
    stats["accounting"] = accounting(summary["audio"])
    return stats

