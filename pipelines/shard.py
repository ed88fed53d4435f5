"""The shard stage: two pipelines.  `PlanShards` gates, probes, deduplicates and plans every record into a
shard (`work/plan/`); `materialize` then writes one tar per shard from those plan parts.

In an incremental run each selected recording meets the record index by key:
new and changed ones are probed and planned into new shards (a changed one's
samples get the run in their keys), published ones take part in dedupe as the
copies that win, and the rest keep the rejects they had.  Images are judged
every run; those already in samples keep their split.  Samples of changed and
deleted records become tombstones (pipelines/tombstones.py: one sidecar per shard).
"""
from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa

from bestiary.pipelines import io
from bestiary.pipelines.caption import taxa_with_traits
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.dedupe import DedupeAudio, DedupeImages
from bestiary.pipelines.materialize import Materialize
from bestiary.pipelines.plan import Plan
from bestiary.pipelines.probe import PROBE_SCHEMA, Probe, probe_item
from bestiary.pipelines.select import AUDIO_COLUMNS, IMAGE_COLUMNS, SelectRows, dress
from bestiary.pipelines.singletons import Nothing, Once, one
from bestiary.pipelines.tables import ReadTable, WriteTable
from bestiary.pipelines.tombstones import WriteTombstones
from bestiary.schemas.records import REJECT_SCHEMA, reject

PLAN_SCHEMA = pa.schema([("shard", pa.string()), ("key", pa.string()), ("row", pa.string())])
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("content_hash", pa.string()),
                          ("crawl_run", pa.int64()), ("split", pa.string()), ("image", pa.string())])
KEY_SCHEMA = pa.schema([("key", pa.string())])
OUTPUTS = ("work/plan", "catalog/probes", "work/rejects-plan", "work/images-dropped", "work/tombstones")
CARRIED_STAGES = ("probe", "dedupe", "plan")
PROBE_FIELDS = ("pcm_sha256", "codes", "blob", "derived")


def classify(item, run: int):
    """A selected recording against the index: 'fresh' (new or changed: probe and plan it), 'published' (in
    live samples: it wins its duplicates), or 'kept' (judged before: it keeps its rejects)."""
    key, got = item
    idx = next(iter(got["idx"]), None)
    for rec in got["rec"]:
        if idx is None:
            yield beam.pvalue.TaggedOutput("fresh", rec)
        elif idx["content_hash"] != rec["content_hash"]:
            yield beam.pvalue.TaggedOutput("fresh", {**rec, "sample_suffix": f"_r{run:04d}"})
        elif idx["status"] == "sample":
            yield beam.pvalue.TaggedOutput("published", {**rec, "published": True})
        else:
            yield beam.pvalue.TaggedOutput("kept", key)


def _index_changes(item):
    """Index rows against the catalog: changed and gone records (their samples become tombstones)."""
    key, got = item
    idx = next(iter(got["idx"]), None)
    now = next(iter(got["now"]), None)
    if idx is None:
        if now is not None:
            yield beam.pvalue.TaggedOutput("new", key)
        return
    if now is None:
        yield beam.pvalue.TaggedOutput("gone", key)
    elif now != idx["content_hash"]:
        yield key
    elif idx["status"] == "sample" and idx.get("image"):
        yield beam.pvalue.TaggedOutput("fixed", (idx["image"], idx["split"]))


def _reuse_probe(item):
    """A medium probed before at the same URL with the same media settings is not probed again (a rebuild
    stages no earlier probes: it probes everything)."""
    key, got = item
    prev = next((p for p in got["prev"] if not p.get("reason")), None)
    for it in got["item"]:
        if prev and prev["url"] == it["url"] and prev["media_fp"] == it["media_fp"]:
            yield prev
        else:
            yield beam.pvalue.TaggedOutput("probe", it)


def _outcome(item):
    """A medium with its probe: usable (with what the probe found), or a probe reject."""
    key, got = item
    probe = next(iter(got["probe"]), None)
    for row in list(got["audio"]) + list(got["image"]):
        kind = row["media_type"]
        if probe is None:
            bad = reject(key, "probe", "not_probed", "")
        elif probe.get("reason"):
            bad = reject(key, "probe", probe["reason"], probe.get("detail") or "")
        else:
            bad = None
        if bad is not None:
            if not row.get("published"):
                yield beam.pvalue.TaggedOutput("rejects", {**bad, "_media_type": kind})
            continue
        found = {k: probe.get(k) for k in PROBE_FIELDS}
        if kind == "audio":
            yield {**row, **found, "original_sample_rate": probe["sample_rate"]}
        else:
            yield beam.pvalue.TaggedOutput("images", {**row, **found, "dhash": probe["dhash"],
                                                      "width": probe.get("width"), "height": probe.get("height")})


def _not_in(item):
    _, got = item
    if not got["drop"]:
        yield from got["row"]


def _dup_split(item):
    """A fresh recording kept, or its duplicate reject (published ones are not in `row`: they always win)."""
    _, got = item
    for row in got["row"]:
        bad = next(iter(got["drop"]), None)
        if bad is None:
            yield row
        else:
            yield beam.pvalue.TaggedOutput("rejects", bad)


def _tombstones(item):
    key, got = item
    if got["dead"]:
        for m in got["member"]:
            for s in m["samples"]:
                yield f"{m['file']}/{s}"


def _carried(item):
    _, got = item
    if got["kept"]:
        yield from got["old"]


def _tally(name: str, pcoll, fn=lambda _: 1):
    return pcoll | f"n {name}" >> beam.Map(lambda x: (name, fn(x)))


def _write_plan_stats(_, ctx: RunContext, counts: dict, reasons: dict, planned_shards: list[str]) -> None:
    io.write_json(ctx.path("work", "shards-planned.json"), sorted(planned_shards))
    def part(prefix):
        return {k.split("|", 1)[1]: v for k, v in counts.items() if k.startswith(prefix + "|")}
    io.write_json(ctx.path("work", "stats-plan.json"), {
        "run": ctx.run, "audio_new": counts.get("new", 0),
        "audio_changed": counts.get("changed", 0), "audio_gone": counts.get("gone", 0),
        "audio_selected": counts.get("fresh", 0), "images_selected": counts.get("images", 0),
        "images_excluded": dict(sorted(part("excluded").items())),
        "shards_planned": counts.get("shards", 0), "recordings_planned": counts.get("planned", 0),
        "tombstones": counts.get("tombstones", 0), "rejects": sum(reasons.values()),
        "rejects_by_reason": dict(sorted(reasons.items()))})


class PlanShards(beam.PTransform):
    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx, cfg = self.ctx, self.ctx.cfg
        catalog = ctx.path("catalog")
        audio = pbegin | "recordings" >> ReadTable(io.join(catalog, "recordings"), AUDIO_COLUMNS)
        images = pbegin | "images" >> ReadTable(io.join(catalog, "images"), IMAGE_COLUMNS)
        res = pbegin | "resolutions" >> ReadTable(io.join(catalog, "resolutions"), ["key", "taxon_id", "method", "reason"])
        caps = pbegin | "caption keys" >> ReadTable(io.join(catalog, "captions"), ["key"])
        taxa = beam.pvalue.AsDict(taxa_with_traits(pbegin, ctx))
        sel = (audio, images, res, caps) | "select" >> SelectRows(cfg.licenses.allow, taxa,
                                                                 cfg.licenses.allow_no_derivatives)

        # ---- the record index: what earlier runs published (empty in run 1)
        incremental = ctx.run > 1
        index = (pbegin | "index" >> ReadTable(ctx.path("state", "index")) if incremental
                 else pbegin | "no index" >> Nothing())
        state = ({"rec": sel.audio | "sel by key" >> beam.Map(lambda r: (r["key"], r)),
                  "idx": index | "idx by key" >> beam.Map(lambda r: (r["key"], r))}
                 | "index join" >> beam.CoGroupByKey()
                 | "classify" >> beam.FlatMap(classify, ctx.run).with_outputs("fresh", "published", "kept"))
        changes = ({"idx": index | "idx by key 2" >> beam.Map(lambda r: (r["key"], r)),
                    "now": audio | "now by key" >> beam.Map(lambda r: (r["key"], r["content_hash"]))}
                   | "change join" >> beam.CoGroupByKey()
                   | "changes" >> beam.FlatMap(_index_changes).with_outputs("new", "gone", "fixed", main="changed"))

        # ---- probes: earlier ones reused, the rest fetched and analysed once
        media = (state.fresh | "audio items" >> beam.Map(probe_item, "audio", cfg.media),
                 state.published | "published items" >> beam.Map(probe_item, "audio", cfg.media),
                 sel.images | "image items" >> beam.Map(probe_item, "image", cfg.media)) | "items" >> beam.Flatten()
        prev = pbegin | "previous probes" >> ReadTable(ctx.path("work", "probes-previous"))
        reuse = ({"item": media | "item by key" >> beam.Map(lambda i: (i["key"], i)),
                  "prev": prev | "prev by key" >> beam.Map(lambda p: (p["key"], p))}
                 | "probe join" >> beam.CoGroupByKey()
                 | "reuse" >> beam.FlatMap(_reuse_probe).with_outputs("probe", main="reused"))
        probes = (reuse.reused, reuse.probe | "probe" >> Probe(ctx)) | "all probes" >> beam.Flatten()
        probes | "write probes" >> WriteTable(ctx.path("catalog", "probes"), PROBE_SCHEMA, sort_by=("key", "kind"))

        # ---- outcomes, duplicates
        out = ({"audio": (state.fresh, state.published) | "to probe" >> beam.Flatten()
                | "audio by key" >> beam.Map(lambda r: (r["key"], r)),
                "image": sel.images | "images by key" >> beam.Map(lambda r: (r["key"], r)),
                "probe": probes | "probes by key" >> beam.Map(lambda p: (p["key"], p))}
               | "outcome join" >> beam.CoGroupByKey()
               | "outcomes" >> beam.FlatMap(_outcome).with_outputs("images", "rejects", main="audio"))
        dup_verdicts = (out.audio | "slim audio" >> beam.Map(lambda r: {k: r.get(k) for k in (
            "key", "source", "taxon_id", "pcm_sha256", "codes", "published")}) | "dedupe audio" >> DedupeAudio())
        deduped = ({"row": out.audio | "ok by key" >> beam.FlatMap(
                        lambda r: [] if r.get("published") else [(r["key"], {k: v for k, v in r.items() if k != "codes"})]),
                    "drop": dup_verdicts | "dup by key" >> beam.Map(lambda r: (r["key"], r))}
                   | "dup join" >> beam.CoGroupByKey()
                   | "kept audio" >> beam.FlatMap(_dup_split).with_outputs("rejects", main="kept"))
        fresh_ok, dup_rejects = deduped.kept, deduped.rejects
        dropped_images = out.images | "dedupe images" >> DedupeImages()
        (dropped_images | "dropped rows" >> beam.Map(lambda k: {"key": k})
         | "write dropped" >> WriteTable(ctx.path("work", "images-dropped"), KEY_SCHEMA))
        images_ok = ({"row": out.images | "img ok by key" >> beam.Map(lambda r: (r["key"], r)),
                      "drop": dropped_images | "dropped by key" >> beam.Map(lambda k: (k, 1))}
                     | "image dup join" >> beam.CoGroupByKey() | "kept images" >> beam.FlatMap(_not_in))

        # ---- the plan
        m = cfg.media
        planned, plan_rejects = (fresh_ok, images_ok, changes.fixed) | "plan" >> Plan(
            cfg.splits, cfg.shards, m.clip_seconds, m.max_clips_per_recording, m.sample_rate, ctx.first_shard)
        captions = pbegin | "captions" >> ReadTable(io.join(catalog, "captions"), ["key", "default", "captions"])
        dressed = ({"rec": planned | "planned by key" >> beam.Map(lambda r: (r["key"], r)),
                    "cap": captions | "captions by key" >> beam.Map(lambda c: (c["key"], c))}
                   | "caption join" >> beam.CoGroupByKey() | "dress" >> beam.FlatMap(dress, taxa))
        (dressed | "plan rows" >> beam.Map(lambda r: {"shard": r["shard"], "key": r["key"],
                                                      "row": json.dumps(r, sort_keys=True, default=str)})
         | "write plan" >> WriteTable(ctx.path("work", "plan"), PLAN_SCHEMA, sort_by=("shard", "key")))

        # ---- tombstones, carried rejects
        dead = (changes.changed, changes.gone) | "dead" >> beam.Flatten()
        members = (pbegin | "old members" >> ReadTable(ctx.path("work", "shards", "*.members.parquet")) if incremental
                   else pbegin | "no members" >> Nothing())
        tombs = ({"dead": dead | "dead by key" >> beam.Map(lambda k: (k, 1)),
                  "member": members | "member by record" >> beam.Map(lambda m: (m["record"], m))}
                 | "tomb join" >> beam.CoGroupByKey() | "tombstones" >> beam.FlatMap(_tombstones))
        tombs | "write tombstones" >> WriteTombstones(ctx)
        old_rejects = (pbegin | "old rejects" >> ReadTable(ctx.path("rejects")) if incremental
                       else pbegin | "no old rejects" >> Nothing())
        carried = ({"kept": state.kept | "kept by key" >> beam.Map(lambda k: (k, 1)),
                    "old": old_rejects | "old by key" >> beam.FlatMap(
                        lambda r: [(r["key"], r)] if r["stage"] in CARRIED_STAGES else [])}
                   | "carry join" >> beam.CoGroupByKey() | "carried" >> beam.FlatMap(_carried))
        rejects = ((sel.rejects, out.rejects, dup_rejects, plan_rejects, carried) | "rejects" >> beam.Flatten())
        (rejects | "strip" >> beam.Map(lambda r: {k: r[k] for k in ("key", "stage", "reason", "detail")})
         | "write rejects" >> WriteTable(ctx.path("work", "rejects-plan"), REJECT_SCHEMA, sort_by=("key", "stage", "reason")))

        shards = planned | "planned shards" >> beam.Map(lambda r: r["shard"]) | "distinct planned" >> beam.Distinct()
        planned_shards = shards | "planned list" >> beam.combiners.ToList().without_defaults()

        # ---- stats
        counts = ((_tally("fresh", state.fresh), _tally("changed", changes.changed), _tally("gone", changes.gone),
                   _tally("new", changes.new),
                   _tally("images", sel.images), _tally("planned", planned), _tally("tombstones", tombs),
                   shards | "n shards" >> beam.Map(lambda _: ("shards", 1)),
                   (sel.rejects, out.rejects) | "image rejects" >> beam.Flatten()
                   | "excluded" >> beam.FlatMap(lambda r: [(f"excluded|{r['reason']}", 1)]
                                                if r.get("_media_type") == "image" else []),
                   dropped_images | "n dup images" >> beam.Map(lambda _: ("excluded|duplicate_image", 1)))
                  | "counts" >> beam.Flatten() | "sum" >> beam.CombinePerKey(sum)
                  | "as dict" >> beam.combiners.ToDict().without_defaults())
        reasons = (rejects | "reasons" >> beam.Map(lambda r: (r["reason"], 1)) | "sum reasons" >> beam.CombinePerKey(sum)
                   | "reasons dict" >> beam.combiners.ToDict().without_defaults())
        (pbegin | "once" >> Once()
         | "stats" >> beam.Map(_write_plan_stats, ctx, one(counts, {}), one(reasons, {}), one(planned_shards, [])))
        return planned


class MaterializePlan(beam.PTransform):
    """The plan parts -> shards."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        return (pbegin | "plan" >> ReadTable(self.ctx.path("work", "plan"))
                | "rows" >> beam.Map(lambda r: json.loads(r["row"])) | "materialize" >> Materialize(self.ctx.cfg))

