"""Crawl stage: partitions -> raw pages (JSONL.gz, the source of truth) -> catalog parts.

Each partition (one source query, or one id range of it) pages on its own
cursor and checkpoints it after every page, so a killed crawl resumes where
each partition stopped.  Partitions that are finished are replayed from their
kept pages on any worker; the others are crawled host-keyed (pipelines/hosts.py:
one budget per host).  Every version of a record meets its others by key
(GroupByKey): the latest run's wins, and a record a complete re-listing no
longer shows is gone.  Normalising is each connector's pure function.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging

import apache_beam as beam

from bestiary.connectors import registry
from bestiary.connectors.base import PagingChanged
from bestiary.connectors.http import FetchError
from bestiary.pipelines import io
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.hosts import HostWork, host_slot
from bestiary.pipelines.killpoints import killpoint
from bestiary.pipelines.tables import WriteTable
from bestiary.schemas.records import CATALOG_SCHEMA, REJECT_SCHEMA, reject

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
CATALOG_ROWS_PER_PART = 20_000   # catalog rows carry the raw record (~1.5 KB)


def write_page(path: str, records: list[dict]) -> None:
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    io.write_bytes(path, gzip.compress(lines.encode(), mtime=0))


def read_page(path: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(io.read_bytes(path)).decode().splitlines() if line]


def page_path(ctx: RunContext, part_id: str, n: int) -> str:
    return ctx.path("raw", part_id, f"page-{n:06d}.jsonl.gz")


def state_path(ctx: RunContext, part_id: str) -> str:
    return ctx.path("state", "crawl", f"{part_id}.json")


def read_state(ctx: RunContext, part_id: str) -> dict:
    p = state_path(ctx, part_id)
    return io.read_json(p) if io.exists(p) else {"cursor": None, "pages": 0, "done": False}


def tag_of(part: dict) -> tuple:
    return part["source"], part["id"], part.get("run", 1), part.get("mode", "full"), part.get("base", part["id"])


class PartitionState(beam.DoFn):
    """A finished partition -> (partition, page) per kept page; an unfinished one -> 'pending', host-keyed."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def process(self, part: dict):
        state = read_state(self.ctx, part["id"])
        if not state["done"]:
            src = next(s for s in self.ctx.cfg.sources if s.name == part["source"])
            yield beam.pvalue.TaggedOutput("pending", (host_slot(src.base_url, part["id"], self.ctx.policy,
                                                                 self.ctx.cfg.http.host_slots), part))
            return
        for n in range(state["pages"]):
            yield part, n


class ReplayPage(beam.DoFn):
    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def process(self, item):
        part, n = item
        for rec in read_page(page_path(self.ctx, part["id"], n)):
            yield tag_of(part), rec


class CrawlHost(HostWork):
    """The unfinished partitions of one host: kept pages replayed, then paging from the cursor, every page
    and its cursor kept before its records go on."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.policy, ctx.cfg.http.host_threads)
        self.ctx = ctx

    def handle(self, part: dict):
        ctx, tag = self.ctx, tag_of(part)
        src = next(s for s in ctx.cfg.sources if s.name == part["source"])
        conn = registry.get(src.name)
        state = read_state(ctx, part["id"])
        for n in range(state["pages"]):  # pages already kept: replay, never re-fetch
            for rec in read_page(page_path(ctx, part["id"], n)):
                yield tag, rec
        try:
            for attempt in range(MAX_RESTARTS + 1):
                try:
                    for records, cursor in conn.pages(self.client, src, part["query"], state["cursor"]):
                        if src.max_pages and state["pages"] >= src.max_pages:
                            break
                        write_page(page_path(ctx, part["id"], state["pages"]), records)
                        state = {"cursor": cursor, "pages": state["pages"] + 1, "done": cursor is None}
                        io.write_json(state_path(ctx, part["id"]), state)
                        killpoint("crawl:page")
                        for rec in records:
                            yield tag, rec
                    break
                except PagingChanged as err:
                    # records already sent meet their new copies by key downstream; nothing is skipped
                    log.warning("partition %s: %s; crawling it again (%d)", part["id"], err, attempt + 1)
                    if attempt == MAX_RESTARTS:
                        raise FetchError("paging_unstable", str(err)) from None
                    state = {"cursor": None, "pages": 0, "done": False}
                    io.write_json(state_path(ctx, part["id"]), state)
        except (FetchError, ValueError) as err:
            reason = getattr(err, "reason", "bad_page")
            log.warning("partition %s stopped at page %d: %s", part["id"], state["pages"], reason)
            yield beam.pvalue.TaggedOutput("rejects", reject(f"partition:{part['id']}", "crawl", reason,
                                                             f"page {state['pages']}: {getattr(err, 'detail', err)}"))
            return
        if not state["done"] and src.max_pages and state["pages"] >= src.max_pages:
            io.write_json(state_path(ctx, part["id"]), {**state, "done": True})


def content_hash(raw: str | None) -> str:
    return hashlib.sha256((raw or "").encode()).hexdigest()


class Normalize(beam.DoFn):
    """Raw record -> catalog rows, or a reject row naming why it could not be read."""

    def __init__(self, ctx: RunContext):
        self.sources = {s.name: s for s in ctx.cfg.sources}

    def process(self, item):
        (source, part_id, run, mode, base), record = item
        conn = registry.get(source)
        try:
            for row in conn.normalize(self.sources[source], record):
                yield {**row, "crawl_run": run, "content_hash": content_hash(row.get("raw")),
                       "_partition": part_id, "_mode": mode, "_base": base}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            yield beam.pvalue.TaggedOutput("rejects", reject(f"{source}:{conn.record_id(record)}", "crawl",
                                                             "unparseable_record", f"{type(err).__name__}: {err}"))


def pick_one(rows: list[dict]) -> dict:
    """The same record seen twice (overlapping pages, or a later run's edit) is kept once, deterministically:
    the latest run's version."""
    return min(rows, key=lambda r: (-r.get("crawl_run", 1), r["raw"]))


def is_gone(rows: list[dict], relisted: set[str], run: int) -> bool:
    """Listed before under a query this run listed again completely, and not in the new listing."""
    return any(r["_base"] in relisted for r in rows) and not any(
        r["_mode"] == "relist" and r["crawl_run"] == run for r in rows)


class PickVersion(beam.DoFn):
    """(key, versions) -> the kept row; 'gone' keys; 'dropped' counts of versions not kept."""

    def __init__(self, ctx: RunContext):
        self.run = ctx.run
        self.relists = {p["base"]: p["id"] for p in ctx.partitions if p["run"] == ctx.run and p["mode"] == "relist"}

    def process(self, item, failed):
        key, rows = item
        rows = list(rows)
        failed = {r["key"].removeprefix("partition:") for r in failed}
        relisted = {b for b, pid in self.relists.items() if pid not in failed}  # a broken listing deletes nothing
        if self.run > 1 and relisted and is_gone(rows, relisted, self.run):
            yield beam.pvalue.TaggedOutput("gone", key)
            return
        if len(rows) > 1:
            yield beam.pvalue.TaggedOutput("dropped", len(rows) - 1)
        yield {k: v for k, v in pick_one(rows).items() if not k.startswith("_")}


def _cursor(row: dict):
    field = registry.get(row["source"]).cursor_field
    value = str(row.get(field) or "").rsplit(":", 1)[-1] if field else ""
    if value.isdigit():
        yield row["source"], int(value)


def _write_stats(_, ctx: RunContext, counts: dict, failed: list[dict], cursors: dict) -> None:
    io.write_json(ctx.path("work", "cursors.json"), dict(sorted(cursors.items())))
    io.write_json(ctx.path("work", "stats-crawl.json"), {
        "raw_records": counts.get("raw", 0), "catalog_rows": counts.get("rows", 0),
        "duplicates_dropped": counts.get("dropped", 0), "gone_from_listings": counts.get("gone", 0),
        "run": ctx.run, "audio_items": counts.get("audio", 0), "image_items": counts.get("image", 0),
        "rejects": counts.get("rejects", 0),
        "partitions_failed": sorted(r["key"].removeprefix("partition:") for r in failed),
        "by_source": {k.split("|", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("src|")},
    })


class Crawl(beam.PTransform):
    """The crawl stage's graph: partitions in, catalog parts, rejects, cursors and stats out."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx = self.ctx
        parts = (pbegin | "partitions" >> beam.Create(list(ctx.partitions))
                 | "by state" >> beam.ParDo(PartitionState(ctx)).with_outputs("pending", main="kept"))
        replayed = parts.kept | "spread pages" >> beam.Reshuffle() | "replay" >> beam.ParDo(ReplayPage(ctx))
        crawled = (parts.pending | "host groups" >> beam.GroupByKey()
                   | "crawl" >> beam.ParDo(CrawlHost(ctx)).with_outputs("rejects", main="records"))
        raw = (replayed, crawled.records) | "raw records" >> beam.Flatten()
        norm = raw | "normalize" >> beam.ParDo(Normalize(ctx)).with_outputs("rejects", main="rows")
        failed = crawled.rejects
        picked = (norm.rows | "by key" >> beam.Map(lambda r: (r["key"], r)) | "versions" >> beam.GroupByKey()
                  | "pick" >> beam.ParDo(PickVersion(ctx), beam.pvalue.AsList(failed)).with_outputs(
                      "gone", "dropped", main="rows"))
        rows = picked.rows
        audio = rows | "audio" >> beam.Filter(lambda r: r["media_type"] == "audio")
        images = rows | "images" >> beam.Filter(lambda r: r["media_type"] == "image")
        rejects = (crawled.rejects, norm.rejects) | "rejects" >> beam.Flatten()
        audio | "write recordings" >> WriteTable(ctx.path("catalog", "recordings"), CATALOG_SCHEMA,
                                                 rows_per_part=CATALOG_ROWS_PER_PART)
        images | "write images" >> WriteTable(ctx.path("catalog", "images"), CATALOG_SCHEMA,
                                              rows_per_part=CATALOG_ROWS_PER_PART)
        rejects | "write rejects" >> WriteTable(ctx.path("work", "rejects-crawl"), REJECT_SCHEMA,
                                                sort_by=("key", "reason"))
        counts = ((raw | "n raw" >> beam.Map(lambda _: ("raw", 1)),
                   rows | "n rows" >> beam.FlatMap(lambda r: [("rows", 1), (r["media_type"], 1),
                                                              (f"src|{r['source']}/{r['media_type']}", 1)]),
                   picked.dropped | "n dropped" >> beam.Map(lambda n: ("dropped", n)),
                   picked.gone | "n gone" >> beam.Map(lambda _: ("gone", 1)),
                   rejects | "n rejects" >> beam.Map(lambda _: ("rejects", 1)))
                  | "counts" >> beam.Flatten() | "sum" >> beam.CombinePerKey(sum) | "as dict" >> beam.combiners.ToDict())
        cursors = (rows | "cursor ids" >> beam.FlatMap(_cursor) | "max id" >> beam.CombinePerKey(max)
                   | "cursors" >> beam.combiners.ToDict())
        (pbegin | "once" >> beam.Create([None])
         | "stats" >> beam.Map(_write_stats, ctx, beam.pvalue.AsSingleton(counts), beam.pvalue.AsList(failed),
                               beam.pvalue.AsSingleton(cursors)))
        return rows


OUTPUTS = ("catalog/recordings", "catalog/images", "work/rejects-crawl")
