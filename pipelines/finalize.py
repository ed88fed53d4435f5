"""Finalize: what the driver publishes, from per-shard records and keyed accounting.

A Beam job reads every shard's members and rejects, the stages' rejects and
the catalog keys, and computes, by key: the leak check, which records are
live, the rejects table, the accounting (every audio record in a sample or
rejected; every image paired, unused or rejected), the record index for the
next incremental run, and the card's aggregates (bounded by species, bins and
licences).  The driver reads back only that small summary and the shard
summaries (O(shards)), then writes the manifest, stats and card.
"""
from __future__ import annotations

import math

import apache_beam as beam
import pyarrow as pa

from bestiary.connectors.licenses import license_url
from bestiary.pipelines import io
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.dedupe import FindLeaks
from bestiary.pipelines.shard import INDEX_SCHEMA
from bestiary.pipelines.singletons import Once, one
from bestiary.pipelines.tables import ReadTable, WriteTable
from bestiary.pipelines.tombstones import ReadTombstones
from bestiary.schemas.records import REJECT_SCHEMA

DURATION_BIN_S = 5.0
LEAKS_KEPT = 20
GRID_DEG = 2.0


def _live(item):
    """One shard's members and its tombstones: the members with a sample not tombstoned, by record."""
    _, got = item
    dead = {k for keys in got["dead"] for k in keys}
    for member in got["member"]:
        if any(k not in dead for k in member["samples"] or [None]):
            yield member["record"], member


def _audio_verdict(item, run: int):
    """One audio key: its index row, its account, its published materialize rejects."""
    key, got = item
    rec = next(iter(got["rec"]), None)
    live = next(iter(got["live"]), None)
    rejects = {(r["stage"], r["reason"]): r for r in got["rej"]}
    shard_rej = [r for r in got["shard_rej"] if run == 1 or (rec is not None and live is None)]
    for r in shard_rej:
        rejects.setdefault((r["stage"], r["reason"]), r)
    for r in rejects.values():
        yield beam.pvalue.TaggedOutput("rejects", r)
    if rec is None:  # a reject of no catalog record: a partition, an unreadable or a conflicting record
        if key.startswith("partition:"):
            yield beam.pvalue.TaggedOutput("count", ("partitions_failed", 1))
        elif any(r["stage"] == "crawl" for r in rejects.values()):
            yield beam.pvalue.TaggedOutput("count", ("unparseable", 1))
        return
    yield beam.pvalue.TaggedOutput("count", ("audio", 1))
    if live is not None:
        yield beam.pvalue.TaggedOutput("count", ("in_samples", 1))
        yield beam.pvalue.TaggedOutput("card", live)
    if rejects:
        yield beam.pvalue.TaggedOutput("count", ("rejected", 1))
    if live is not None and rejects:
        yield beam.pvalue.TaggedOutput("count", ("overlap", 1))
    yield {"key": key, "status": "sample" if live is not None else "rejected", "content_hash": rec["content_hash"],
           "crawl_run": rec.get("crawl_run") or 1, "split": live["split"] if live else None,
           "image": live["image"] if live else None}


def _image_verdict(item):
    """An image is paired in a sample, rejected (with its reasons), or unused: a near copy of a better one,
    or no recording of its species in its split needed it."""
    key, got = item
    if not got["img"]:
        return
    reasons = sorted({r["reason"] for r in got["rej"]})
    if got["paired"]:
        yield "paired", 1
    elif reasons:
        yield "rejected", 1
        for r in reasons:
            yield f"rejected|{r}", 1
    else:
        yield "unused", 1
        yield f"unused|{'duplicate_image' if got['dropped'] else 'not_paired'}", 1
    yield "crawled", 1


ATTRIBUTION_SCHEMA = pa.schema([
    ("person", pa.string()), ("role", pa.string()), ("work", pa.string()), ("source", pa.string()),
    ("license", pa.string()), ("license_url", pa.string()), ("attribution", pa.string())])


def _credits(item):
    """The people behind a published recording and its image, one row per (person, role, work)."""
    _, m = item
    works = [("recordist", m["record"], m.get("recordist"), m.get("attribution"), m.get("audio_license"))]
    if m.get("image"):
        works.append(("photographer", m["image"], m.get("image_recordist"), m.get("image_attribution"),
                      m.get("image_license")))
    for role, work, person, text, lic in works:
        who = (person or text or "unknown").strip()
        yield (who, role, work), {"person": who, "role": role, "work": work, "source": work.split(":", 1)[0],
                                  "license": lic, "license_url": license_url(lic or "unknown"), "attribution": text}


def _card_facts(member: dict):
    yield f"species|{member['accepted_name']}", 1
    yield f"licence|{member['license']}", 1
    yield f"pairing|{member.get('pairing') or 'unknown'}", 1
    if member.get("duration_s"):
        yield f"duration|{int(member['duration_s'] // DURATION_BIN_S)}", 1
    if member.get("lat") is not None and member.get("lon") is not None:
        yield f"grid|{math.floor(member['lat'] / GRID_DEG)},{math.floor(member['lon'] / GRID_DEG)}", 1


def _catalog_facts(row: dict):
    yield f"source|{row['source']}", 1
    yield f"crawled_licence|{row['license']}", 1


def _write_summary(_, ctx: RunContext, leaks: list, leak_count: int, audio: dict, images: dict, card: dict,
                   reasons: dict) -> None:
    io.write_json(ctx.path("work", "finalize.json"), {
        "leaks": sorted(leaks), "leak_count": leak_count, "audio": audio, "images": images, "card": card,
        "rejects_by_reason": dict(sorted(reasons.items()))})


def _dict(pcoll, label: str):
    return one(pcoll | f"{label} sum" >> beam.CombinePerKey(sum)
               | f"{label} dict" >> beam.combiners.ToDict().without_defaults(), {})


class Finalize(beam.PTransform):
    """`sidecars`: shard file -> its tombstones' sidecar (pipelines/tombstones.py), the shards that have any;
    members meet them by shard, so no worker holds more than one shard's."""

    def __init__(self, ctx: RunContext, sidecars: dict[str, str]):
        super().__init__()
        self.ctx, self.sidecars = ctx, sidecars

    def expand(self, pbegin):
        ctx = self.ctx
        members = pbegin | "members" >> ReadTable(ctx.path("work", "shards", "*.members.parquet"))
        shard_rejects = pbegin | "shard rejects" >> ReadTable(ctx.path("work", "shards", "*.rejects.parquet"))
        stage_rejects = ((pbegin | "crawl rejects" >> ReadTable(ctx.path("work", "rejects-crawl")),
                          pbegin | "plan rejects" >> ReadTable(ctx.path("work", "rejects-plan"))) | "stage rejects" >> beam.Flatten())
        audio = pbegin | "recordings" >> ReadTable(ctx.path("catalog", "recordings"),
                                                   ["key", "source", "license", "content_hash", "crawl_run"])
        images = pbegin | "images" >> ReadTable(ctx.path("catalog", "images"), ["key", "source", "license"])
        leaks = members | "leaks" >> FindLeaks()
        # a broken build could leak every record: the summary keeps 20 of them and counts them all
        leak_top = leaks | "first leaks" >> beam.combiners.Top.Of(LEAKS_KEPT, reverse=True).without_defaults()
        leak_count = leaks | "leak count" >> beam.combiners.Count.Globally().without_defaults()
        live = ({"member": members | "member by shard" >> beam.Map(lambda m: (m["file"], m)),
                 "dead": pbegin | "tombstones" >> ReadTombstones(ctx, self.sidecars)}
                | "shard join" >> beam.CoGroupByKey() | "live" >> beam.FlatMap(_live))
        credits = (live | "credits" >> beam.FlatMap(_credits)
                   | "one per work" >> beam.CombinePerKey(lambda rows: next(iter(rows))) | "credit rows" >> beam.Values())
        credits | "write attribution" >> WriteTable(ctx.path("work", "attribution"), ATTRIBUTION_SCHEMA,
                                                    sort_by=("person", "role", "work"))
        people = (credits | "people" >> beam.Map(lambda r: f"people|{r['role']}|{r['person']}") | beam.Distinct()
                  | "people facts" >> beam.Map(lambda k: (k.rsplit("|", 1)[0], 1)))
        image_keys = images | "image keys" >> beam.Map(lambda r: (r["key"], 1))
        # rejects of image rows go with the images' account; every other reject with the audio keys
        split = ({"img": image_keys, "rej": stage_rejects | "rej by key" >> beam.Map(lambda r: (r["key"], r))}
                 | "image or audio" >> beam.CoGroupByKey()
                 | "route" >> beam.FlatMap(lambda kv: [beam.pvalue.TaggedOutput("img", (kv[0], r)) if kv[1]["img"]
                                                       else (kv[0], r) for r in kv[1]["rej"]]).with_outputs("img", main="audio"))
        verdicts = ({"rec": audio | "rec by key" >> beam.Map(lambda r: (r["key"], r)), "live": live,
                     "rej": split.audio, "shard_rej": shard_rejects | "shard rej by key" >> beam.Map(lambda r: (r["key"], r))}
                    | "audio join" >> beam.CoGroupByKey()
                    | "audio verdicts" >> beam.FlatMap(_audio_verdict, ctx.run).with_outputs("rejects", "count", "card",
                                                                                              main="index"))
        rejects = ((verdicts.rejects, split.img | "image rejects" >> beam.Values()) | "all rejects" >> beam.Flatten()
                   | "strip" >> beam.Map(lambda r: {k: r[k] for k in ("key", "stage", "reason", "detail")}))
        rejects | "write rejects" >> WriteTable(ctx.path("rejects"), REJECT_SCHEMA, sort_by=("stage", "key", "reason"))
        verdicts.index | "write index" >> WriteTable(ctx.path("work", "index"), INDEX_SCHEMA)
        dropped = pbegin | "dropped images" >> ReadTable(ctx.path("work", "images-dropped"))
        image_counts = ({"img": image_keys, "rej": split.img,
                         # audio-text samples pair no image (and must not all meet under one null key)
                         "paired": members | "paired images" >> beam.FlatMap(
                             lambda m: [(m["image"], 1)] if m["image"] else []),
                         "dropped": dropped | "dropped by key" >> beam.Map(lambda r: (r["key"], 1))}
                        | "image join" >> beam.CoGroupByKey() | "image verdicts" >> beam.FlatMap(_image_verdict))
        card = ((verdicts.card | "card facts" >> beam.FlatMap(_card_facts),
                 audio | "catalog facts" >> beam.FlatMap(_catalog_facts), people) | "facts" >> beam.Flatten())
        reasons = rejects | "reasons" >> beam.Map(lambda r: (f"{r['stage']}/{r['reason']}", 1))
        (pbegin | "once" >> Once()
         | "summary" >> beam.Map(_write_summary, ctx, one(leak_top, []), one(leak_count, 0),
                                 _dict(verdicts.count, "audio"), _dict(image_counts, "images"), _dict(card, "card"),
                                 _dict(reasons, "reasons")))
        return verdicts.index


def accounting(audio: dict) -> dict:
    """Audio records: crawled = in samples + rejected (records that could not be read count as crawled and
    rejected); partitions that failed are counted apart, not as records."""
    crawled = audio.get("audio", 0) + audio.get("unparseable", 0)
    in_samples, rejected = audio.get("in_samples", 0), audio.get("rejected", 0) + audio.get("unparseable", 0)
    overlap = audio.get("overlap", 0)
    return {"records_crawled": crawled, "recordings_in_samples": in_samples, "records_rejected": rejected,
            "records_unreadable": audio.get("unparseable", 0), "partitions_failed": audio.get("partitions_failed", 0),
            "overlap": overlap, "balanced": crawled == in_samples + rejected - overlap and not overlap}


def image_account(images: dict) -> dict:
    """Images: crawled = paired + unused (with a reason) + rejected (with reasons)."""
    def part(prefix):
        return {k.split("|", 1)[1]: v for k, v in sorted(images.items()) if k.startswith(prefix + "|")}
    out = {"crawled": images.get("crawled", 0), "paired_in_samples": images.get("paired", 0),
           "rejected": images.get("rejected", 0), "unused": images.get("unused", 0),
           "rejected_by_reason": part("rejected"), "unused_by_reason": part("unused")}
    out["balanced"] = out["crawled"] == out["paired_in_samples"] + out["unused"] + out["rejected"]
    return out

