"""Tombstones as per-shard sidecars: the samples of records an incremental run found changed or deleted.

A shard's tombstones are a JSON list of its sample keys in `shards/tombstones/{stem}.v{run}.json`,
written by the run that added to them (its earlier list and this run's, merged, in a keyed step per
shard), and named with their count by that shard's manifest entry.  The file name carries the run, so a
reader of an earlier manifest never sees a later run's tombstones, and a run cut short and resumed writes
the same files again.  No process holds more than one shard's tombstones; the driver holds one
(count, file name) per shard.
"""
from __future__ import annotations

import apache_beam as beam

from bestiary.pipelines import io
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.singletons import Nothing, Once

DIR = "tombstones"   # under shards/, beside the manifest that names its files


def sidecar_name(file: str, run: int) -> str:
    """The sidecar of a shard file as of a run, relative to the shards' folder."""
    return f"{DIR}/{file.rsplit('.', 1)[0]}.v{run}.json"


def published(ctx: RunContext) -> dict[str, dict]:
    """The last manifest's tombstones: shard file -> {"deleted", "tombstones"} (O(shards))."""
    path = ctx.path("shards", "manifest.json")
    if not ctx.incremental or not io.exists(path):
        return {}
    return {s["file"]: {"deleted": s.get("deleted", 0), "tombstones": s.get("tombstones")}
            for s in io.read_json(path)["shards"] if s.get("tombstones")}


def _by_shard(tomb: str) -> tuple[str, str]:
    file, key = tomb.split("/", 1)
    return file, key


def _write(item, ctx: RunContext, before: dict[str, dict]) -> None:
    """One shard's sidecar: its earlier tombstones and this run's, then the summary the driver reads."""
    file, keys = item
    merged = set(keys)
    old = before.get(file)
    if old:
        merged |= set(io.read_json(ctx.path("shards", *old["tombstones"].split("/"))))
    rel = sidecar_name(file, ctx.run)
    io.write_json(ctx.path("shards", *rel.split("/")), sorted(merged))
    io.write_json(ctx.path("work", "tombstones", f"{file}.json"),
                  {"file": file, "deleted": len(merged), "tombstones": rel})


class WriteTombstones(beam.PTransform):
    """'{shard file}/{sample key}' -> one sidecar per shard that gained tombstones this run, and its summary
    in work/tombstones/ (the last manifest's entries, O(shards), are the side input)."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, tombs):
        ctx = self.ctx
        last = tombs.pipeline | "last manifest" >> (Once() if ctx.incremental else Nothing())
        before = beam.pvalue.AsSingleton(last | "its tombstones" >> beam.Map(lambda _: published(ctx)), default_value={})
        # a manifest from before sidecars lists its tombstones in `deleted`: they move to the sidecars once
        legacy = last | "its old list" >> beam.FlatMap(lambda _: io.read_json(ctx.path("shards", "manifest.json"))
                                                       .get("deleted", []))
        return ((tombs, legacy) | "with old list" >> beam.Flatten()
                | "by shard" >> beam.Map(_by_shard)
                | "per shard" >> beam.GroupByKey() | "write sidecar" >> beam.Map(_write, ctx, before))


def current(ctx: RunContext) -> dict[str, dict]:
    """Every shard's tombstones after this run: the last manifest's, updated by what this run wrote (the
    driver's O(shards) view, for the manifest and finalize)."""
    if not ctx.incremental:
        return {}
    now = published(ctx)
    for path in io.listdir(ctx.path("work", DIR, "*.json")):
        s = io.read_json(path)
        now[s["file"]] = {"deleted": s["deleted"], "tombstones": s["tombstones"]}
    return dict(sorted(now.items()))


def _read(item: tuple[str, str], shards: str):
    file, rel = item
    yield file, io.read_json(io.join(shards, *rel.split("/")))


class ReadTombstones(beam.PTransform):
    """(shard file, sidecar) pairs (a file list: O(shards)) -> (shard file, [sample keys])."""

    def __init__(self, ctx: RunContext, sidecars: dict[str, str]):
        super().__init__()
        self.ctx, self.sidecars = ctx, sidecars

    def expand(self, pbegin):
        return (pbegin | "sidecars" >> beam.Create(sorted(self.sidecars.items()))
                | "read sidecars" >> beam.FlatMap(_read, self.ctx.path("shards")))
