"""Crawl stage: partitions -> raw pages (JSONL.gz, the source of truth) -> catalog parts.

Each partition (one source query, or one id range of it) pages on its own
cursor and checkpoints it after every page, so a killed crawl resumes where
each partition stopped.  Unfinished partitions are crawled host-keyed
(pipelines/hosts.py: one budget per host); then every kept page is read on
any worker and each row's version (where it is, its run and content hash)
meets the record's other versions by key: the latest run's wins, and a record a
complete re-listing no longer shows is gone.  The winners are written from
their pages, a run of pages per catalog part, so no full record ever crosses a
shuffle.  Normalising is each connector's pure function.
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
from bestiary.pipelines.singletons import Once, one
from bestiary.pipelines.tables import WriteTable, part_name, sort_rows, write_part
from bestiary.schemas.records import CATALOG_SCHEMA, REJECT_SCHEMA, reject, typed_catalog_row

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
MAX_PAGES = 100_000     # pages of a partition whose API gives no count
PART_RECORDS = 10_000   # raw records per catalog part (a part holds a run of one partition's pages)


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


class PagingBound(RuntimeError):
    """A partition's listing went past a bound: it ends there, as a reject with the reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def page_bound(src, total: int | None) -> int:
    """Pages a partition may take: the config's `max_pages`, else twice what the API's own count needs (it
    may grow while we page) plus a few, else MAX_PAGES."""
    if src.max_pages:
        return src.max_pages
    if total is not None:
        return 2 * -(-max(total, 1) // max(1, src.per_page)) + 5
    return MAX_PAGES


def page_digest(records: list) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()


class CrawlHost(HostWork):
    """The unfinished partitions of one host: paging on from the cursor, every page and its cursor kept;
    yields (partition, page) for every kept page (earlier ones included), never records.  Each partition's
    paging is bounded: by its page count, a cursor seen before, a page repeating the one before."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.policy, ctx.cfg.http.host_threads)
        self.ctx = ctx

    def _page_on(self, conn, src, part: dict, state: dict) -> dict:
        """Fetch and keep pages from the state's cursor until the end or a bound; returns the last state."""
        ctx, seen, last = self.ctx, {json.dumps(state["cursor"], default=str)}, state.get("digest")
        for records, cursor, total in conn.pages(self.client, src, part["query"], state["cursor"]):
            if src.max_pages and state["pages"] >= src.max_pages:
                return {**state, "done": True}  # the user's own limit: a complete crawl as asked
            digest = page_digest(records)
            if records and digest == last:
                raise PagingBound("page_repeated", f"page {state['pages']} repeats page {state['pages'] - 1}")
            write_page(page_path(ctx, part["id"], state["pages"]), records)
            state = {"cursor": cursor, "pages": state["pages"] + 1, "done": cursor is None, "digest": digest}
            io.write_json(state_path(ctx, part["id"]), state)
            killpoint("crawl:page")
            key = json.dumps(cursor, default=str)
            if cursor is not None and key in seen:
                raise PagingBound("cursor_cycle", f"cursor {str(cursor)[:40]} came back after page {state['pages']}")
            seen.add(key)
            last = digest
            if cursor is not None and state["pages"] >= page_bound(src, total):
                raise PagingBound("page_bound", f"{state['pages']} pages for {total} records "
                                                f"({src.per_page} a page); set max_pages to crawl on")
        return state

    def handle(self, part: dict):
        ctx = self.ctx
        src = next(s for s in ctx.cfg.sources if s.name == part["source"])
        conn = registry.get(src.name)
        state = read_state(ctx, part["id"])
        sent = state["pages"]
        try:
            for attempt in range(MAX_RESTARTS + 1):
                try:
                    state = self._page_on(conn, src, part, state)
                    break
                except PagingChanged as err:
                    # pages kept before are read again too; their records meet the new copies by key
                    log.warning("partition %s: %s; crawling it again (%d)", part["id"], err, attempt + 1)
                    if attempt == MAX_RESTARTS:
                        raise FetchError("paging_unstable", str(err)) from None
                    state = {"cursor": None, "pages": 0, "done": False}
                    io.write_json(state_path(ctx, part["id"]), state)
        except PagingBound as err:
            # the pages before the bound stand; the partition is finished as far as this archive can be paged
            log.warning("partition %s: %s (%s); it ends there", part["id"], err.reason, err.detail)
            state = {**read_state(ctx, part["id"]), "done": True, "bound": err.reason}
            io.write_json(state_path(ctx, part["id"]), state)
            yield beam.pvalue.TaggedOutput("rejects", reject(f"partition:{part['id']}", "crawl", err.reason, err.detail))
        except Exception as err:  # noqa: BLE001 - whatever stops a partition is its reject, never the build's
            reason = getattr(err, "reason", None) or ("bad_page" if isinstance(err, ValueError)
                                                      else f"crawl_error:{type(err).__name__}")
            log.warning("partition %s stopped at page %d: %s", part["id"], state["pages"], reason)
            yield beam.pvalue.TaggedOutput("rejects", reject(f"partition:{part['id']}", "crawl", reason,
                                                             f"page {state['pages']}: {getattr(err, 'detail', err)}"))
        else:
            if not state["done"] and src.max_pages and state["pages"] >= src.max_pages:
                io.write_json(state_path(ctx, part["id"]), {**state, "done": True})
        kept = read_state(ctx, part["id"])["pages"]  # what is on disk, however paging ended
        for n in range(max(sent, kept)):
            if io.exists(page_path(ctx, part["id"], n)):
                yield part, n


def content_hash(raw: str | None) -> str:
    return hashlib.sha256((raw or "").encode()).hexdigest()


def page_rows(ctx: RunContext, part: dict, n: int, records: list[dict] | None = None):
    """Every catalog row of one kept page, with where it sits; or ('reject', row) for unreadable records."""
    src = next(s for s in ctx.cfg.sources if s.name == part["source"])
    conn = registry.get(src.name)
    records = read_page(page_path(ctx, part["id"], n)) if records is None else records
    for i, record in enumerate(records):
        try:
            rows = conn.normalize(src, record)
        except Exception as err:  # noqa: BLE001 - an unreadable record is a reject, whatever its fault
            rid = conn.record_id(record)
            where = rid if rid not in ("?", "None", "") else f"?{part['id']}/{n}/{i}"  # one row per record
            # a connector may name the fault (`reason`: a files row without a path); else it is unparseable
            reason = getattr(err, "reason", None) or "unparseable_record"
            detail = str(err) if getattr(err, "reason", None) else f"{type(err).__name__}: {err}"
            yield "reject", reject(f"{src.name}:{where}", "crawl", reason, detail)
            continue
        for j, row in enumerate(rows):
            yield (i, j), {**row, "crawl_run": part.get("run", 1), "content_hash": content_hash(row.get("raw"))}


def _cursor(row: dict) -> int | None:
    field = registry.get(row["source"]).cursor_field
    value = str(row.get(field) or "").rsplit(":", 1)[-1] if field else ""
    return int(value) if value.isdigit() else None


@beam.typehints.with_output_types(beam.typehints.KV[str, beam.typehints.Any])
class ScanPage(beam.DoFn):
    """A kept page -> (key, version) per catalog row: where it is, and what picking a version needs."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def process(self, item):
        part, n = item
        try:
            records = read_page(page_path(self.ctx, part["id"], n))
        except Exception as err:  # noqa: BLE001 - a page we cannot read back is the partition's reject
            yield beam.pvalue.TaggedOutput("rejects", reject(f"partition:{part['id']}#page{n}", "crawl",
                                                             "unreadable_page", f"{type(err).__name__}: {err}"))
            return
        yield beam.pvalue.TaggedOutput("pages", len(records))
        for where, row in page_rows(self.ctx, part, n, records):
            if where == "reject":
                yield beam.pvalue.TaggedOutput("rejects", row)
                continue
            yield row["key"], {"run": row["crawl_run"], "hash": row["content_hash"], "part": part["id"], "page": n,
                               "at": list(where), "mode": part.get("mode", "full"), "base": part.get("base", part["id"]),
                               "source": row["source"], "type": row["media_type"], "cursor": _cursor(row),
                               **{f: str(row.get(f) or "")[:80] for f in COMPARED}}


COMPARED = ("scientific_name", "license", "media_url", "observation_id")  # what a conflict report names


def conflicts(versions: list[dict], kept: dict) -> list[dict]:
    """Other versions of a record from the same run as the kept one: the archive sent two records under one
    id.  One reject per distinct version, naming what differed."""
    out = {}
    for v in versions:
        if v["run"] == kept["run"] and v["hash"] != kept["hash"] and v["hash"] not in out:
            diff = [f"{f}: {kept[f]!r} vs {v[f]!r}" for f in COMPARED if v.get(f) != kept.get(f)]
            out[v["hash"]] = (v, "; ".join(diff) or "the raw records differ")
    return [{"hash": h, "detail": d, "part": v["part"], "page": v["page"]} for h, (v, d) in sorted(out.items())]


def pick_one(versions: list[dict]) -> dict:
    """The same record seen twice (overlapping pages, or a later run's edit) is kept once, deterministically:
    the latest run's version (then the smallest content hash)."""
    return min(versions, key=lambda v: (-v["run"], v["hash"], v["part"], v["page"], v["at"]))


def is_gone(versions: list[dict], relisted: set[str], run: int) -> bool:
    """Listed before under a query this run listed again completely, and not in the new listing."""
    return any(v["base"] in relisted for v in versions) and not any(
        v["mode"] == "relist" and v["run"] == run for v in versions)


@beam.typehints.with_output_types(beam.typehints.KV[beam.typehints.Tuple[str, int], beam.typehints.Any])
class PickVersion(beam.DoFn):
    """(key, versions) -> the winner's place, keyed by the catalog part it is written to; 'gone' keys;
    'dropped' counts of versions not kept."""

    def __init__(self, ctx: RunContext):
        self.run = ctx.run
        self.relists = {p["base"]: p["id"] for p in ctx.partitions if p["run"] == ctx.run and p["mode"] == "relist"}
        self.pages_per_part = {s.name: max(1, PART_RECORDS // s.per_page) for s in ctx.cfg.sources}

    def process(self, item, failed):
        key, versions = item
        versions = list(versions)
        failed = {r["key"].removeprefix("partition:") for r in failed}
        # a broken listing deletes nothing (a bound that ended one cleanly leaves a reject too: not complete)
        relisted = {b for b, pid in self.relists.items() if pid not in failed}
        if self.run > 1 and relisted and is_gone(versions, relisted, self.run):
            yield beam.pvalue.TaggedOutput("gone", key)
            return
        if len(versions) > 1:
            yield beam.pvalue.TaggedOutput("dropped", len(versions) - 1)
        v = pick_one(versions)
        for c in conflicts(versions, v):
            yield beam.pvalue.TaggedOutput("conflicts", reject(
                f"{key}#{c['hash'][:12]}", "crawl", "conflicting_versions",
                f"kept {v['part']} page {v['page']}, dropped {c['part']} page {c['page']}: {c['detail']}"))
        yield (v["part"], v["page"] // self.pages_per_part.get(v["source"], 1)), (v["page"], v["at"])
        yield beam.pvalue.TaggedOutput("kept", v)


class WriteCatalogPart(beam.DoFn):
    """The winners of a run of pages, read again from those pages: one recordings part and one images part,
    rows sorted by key.  Full records never cross a shuffle (the local runner would hold every one)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.parts = {p["id"]: p for p in ctx.partitions}

    def process(self, item):
        (part_id, k), places = item
        wanted: dict[int, set] = {}
        for page, at in places:
            wanted.setdefault(page, set()).add(tuple(at))
        rows = []
        for page in sorted(wanted):
            rows += [row for where, row in page_rows(self.ctx, self.parts[part_id], page)
                     if where != "reject" and where in wanted[page]]
        name = f"part-{part_id}-{k:05d}.parquet"
        for media, folder in (("audio", "recordings"), ("image", "images")):
            chosen = sort_rows([r for r in rows if r["media_type"] == media], ("key",))
            if chosen:
                write_part(self.ctx.path("catalog", folder, name), [typed_catalog_row(r) for r in chosen],
                           CATALOG_SCHEMA)
        yield len(rows)


def _write_empty(counts: dict, ctx: RunContext) -> None:
    for media, folder in (("audio", "recordings"), ("image", "images")):
        if not counts.get(media):  # readers still see the table's columns
            write_part(ctx.path("catalog", folder, part_name(0)), [], CATALOG_SCHEMA)


def _write_stats(_, ctx: RunContext, counts: dict, failed: list[dict], cursors: dict) -> None:
    _write_empty(counts, ctx)
    io.write_json(ctx.path("work", "cursors.json"), dict(sorted(cursors.items())))
    io.write_json(ctx.path("work", "stats-crawl.json"), {
        "raw_records": counts.get("raw", 0), "catalog_rows": counts.get("rows", 0),
        "duplicates_dropped": counts.get("dropped", 0), "gone_from_listings": counts.get("gone", 0),
        "run": ctx.run, "audio_items": counts.get("audio", 0), "image_items": counts.get("image", 0),
        "rejects": counts.get("rejects", 0), "pages": counts.get("pages", 0),
        "partitions_failed": sorted(r["key"].removeprefix("partition:") for r in failed),
        "by_source": {k.split("|", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("src|")},
    })


class Crawl(beam.PTransform):
    """The crawl stage's graph: partitions in; catalog parts, rejects, cursors and stats out."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx = self.ctx
        parts = (pbegin | "partitions" >> beam.Create(list(ctx.partitions))
                 | "by state" >> beam.ParDo(PartitionState(ctx)).with_outputs("pending", main="kept"))
        crawled = (parts.pending | "host groups" >> beam.GroupByKey()
                   | "crawl" >> beam.ParDo(CrawlHost(ctx)).with_outputs("rejects", main="pages"))
        pages = (parts.kept, crawled.pages) | "pages" >> beam.Flatten()
        scanned = (pages | "spread pages" >> beam.Reshuffle()
                   | "scan" >> beam.ParDo(ScanPage(ctx)).with_outputs("rejects", "pages", main="versions"))
        failed = crawled.rejects
        picked = (scanned.versions | "versions" >> beam.GroupByKey()
                  | "pick" >> beam.ParDo(PickVersion(ctx), beam.pvalue.AsList(failed)).with_outputs(
                      "gone", "dropped", "kept", "conflicts", main="places"))
        written = (picked.places | "by part" >> beam.GroupByKey()
                   | "write parts" >> beam.ParDo(WriteCatalogPart(ctx)))
        kept = picked.kept
        rejects = (crawled.rejects, scanned.rejects, picked.conflicts) | "rejects" >> beam.Flatten()
        rejects | "write rejects" >> WriteTable(ctx.path("work", "rejects-crawl"), REJECT_SCHEMA,
                                                sort_by=("key", "reason"))
        counts = ((kept | "n rows" >> beam.FlatMap(lambda v: [("rows", 1), (v["type"], 1),
                                                              (f"src|{v['source']}/{v['type']}", 1)]),
                   scanned.pages | "n pages" >> beam.FlatMap(lambda n: [("pages", 1), ("raw", n)]),
                   picked.dropped | "n dropped" >> beam.Map(lambda n: ("dropped", n)),
                   picked.gone | "n gone" >> beam.Map(lambda _: ("gone", 1)),
                   rejects | "n rejects" >> beam.Map(lambda _: ("rejects", 1)))
                  | "counts" >> beam.Flatten() | "sum" >> beam.CombinePerKey(sum)
                  | "as dict" >> beam.combiners.ToDict().without_defaults())
        cursors = (kept | "cursor ids" >> beam.FlatMap(lambda v: [(v["source"], v["cursor"])] if v["cursor"] else [])
                   | "max id" >> beam.CombinePerKey(max) | "cursors" >> beam.combiners.ToDict().without_defaults())
        (pbegin | "once" >> Once()
         | "stats" >> beam.Map(_write_stats, ctx, one(counts, {}), beam.pvalue.AsList(failed), one(cursors, {})))
        return written


OUTPUTS = ("catalog/recordings", "catalog/images", "work/rejects-crawl")
