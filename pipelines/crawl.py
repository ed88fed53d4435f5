"""Crawl stage: partitions -> raw pages (JSONL.gz, the source of truth) -> catalog rows.

Each partition (one source query) pages on its own cursor and checkpoints it
after every page, so a killed crawl resumes where each partition stopped.
Normalising is a pure function from a raw record to catalog rows.
"""
from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator

import apache_beam as beam

from bestiary.connectors import gbif, inat_open_data, inaturalist, macaulay, xenocanto
from bestiary.connectors.http import FetchError, HttpClient, policy_from
from bestiary.pipelines import io
from bestiary.pipelines.killpoints import killpoint
from bestiary.schemas.config import BuildConfig, SourceConfig
from bestiary.schemas.records import reject

log = logging.getLogger(__name__)
CRAWLABLE = ("xeno-canto", "inaturalist", "macaulay", "gbif", "inaturalist-open-data", "macaulay-export")
BULK_PAGE = 10_000  # records per kept page of a bulk file source
MAX_RESTARTS = 3


def id_ranges(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop] cut into `parts` contiguous, non-overlapping inclusive ranges."""
    step = -(-(stop - start + 1) // parts)
    return [(lo, min(stop, lo + step - 1)) for lo in range(start, stop + 1, step)]


def with_range(source: str, query, lo: int, hi: int):
    if source == "xeno-canto":
        return f"{query} nr:{lo}-{hi}"
    if source == "inaturalist":
        return {**dict(query), "id_above": lo - 1, "id_below": hi + 1}
    raise ValueError(f"{source} has no id-range partitions")


def partitions(cfg: BuildConfig) -> list[dict]:
    """A full crawl's partitions (run 1): one per (source, query), or per (source, query, id range)."""
    out = []
    for src in cfg.sources:
        if src.name not in CRAWLABLE:
            continue
        for i, query in enumerate(src.queries):
            if src.id_ranges and src.name in ("xeno-canto", "inaturalist"):
                r = src.id_ranges
                for j, (lo, hi) in enumerate(id_ranges(r.start, r.stop, r.parts)):
                    out.append({"source": src.name, "index": i, "query": with_range(src.name, query, lo, hi),
                                "id": f"{src.name}-q{i:03d}-r{j:03d}", "run": 1, "mode": "full"})
            else:
                out.append({"source": src.name, "index": i, "query": query, "id": f"{src.name}-q{i:03d}",
                            "run": 1, "mode": "full"})
    return out


class PagingChanged(RuntimeError):
    """The result set changed under page-number paging: pages may have shifted, start again."""


def read_file(client: HttpClient, where: str) -> bytes:
    """A bulk file from a URL (the HTTP policy applies) or a path (local, gs://, s3://)."""
    return client.get_bytes(where) if where.startswith(("http://", "https://")) else io.read_bytes(where)


def bulk_records(client: HttpClient, src: SourceConfig, query) -> list[dict]:
    """Raw records of a bulk file source: joined dump rows, or export rows."""
    if src.name == "macaulay-export":
        return macaulay.read_export(read_file(client, str(query)))
    files = {k: read_file(client, dict(query)[k]) for k in ("observations", "photos", "taxa", "observers")}
    return list(inat_open_data.joined_photos(**files))


def fetch_pages(client: HttpClient, src: SourceConfig, query, cursor) -> Iterator[tuple[list[dict], object]]:
    """(records, next cursor) per page; the cursor is None after the last page."""
    total = None
    if src.name in ("inaturalist-open-data", "macaulay-export"):  # a file read once, kept in pages
        records, start = bulk_records(client, src, query), cursor or 0
        for lo in range(start, len(records), BULK_PAGE):
            hi = min(len(records), lo + BULK_PAGE)
            yield records[lo:hi], hi if hi < len(records) else None
        if start >= len(records):
            yield [], None
        return
    while True:
        if src.name == "xeno-canto":
            page = cursor or 1
            url, params = xenocanto.page_request(src.base_url, str(query), page, src.per_page,
                                                 xenocanto.api_key(src.api_key_env))
            body = client.get_json(url, params)
            records, pages = xenocanto.parse_page(body)
            count = int(body.get("numRecordings") or 0)
            if total is not None and count != total:  # a record came or went: later pages shifted
                raise PagingChanged(f"numRecordings {total} -> {count} at page {page}")
            total = count
            cursor = page + 1 if page < pages and records else None
        elif src.name == "inaturalist":
            above = cursor or int(dict(query).get("id_above", 0))
            url, params = inaturalist.page_request(src.base_url, dict(query), above, src.per_page)
            records = inaturalist.parse_page(client.get_json(url, params))
            cursor = max(int(r["id"]) for r in records) if records else None
        elif src.name == "macaulay":
            url, params = macaulay.page_request(src.base_url, dict(query), cursor, src.per_page)
            records, nxt = macaulay.parse_page(client.get_json(url, params))
            cursor = nxt if records and nxt and nxt != cursor else None
        elif src.name == "gbif":
            offset = cursor or 0
            url, params = gbif.occurrence_request(src.base_url, dict(query), offset, src.per_page)
            records, end, count = gbif.parse_occurrence_page(client.get_json(url, params))
            if total is not None and count != total:  # offset paging shifts too
                raise PagingChanged(f"count {total} -> {count} at offset {offset}")
            total = count
            nxt = offset + len(records)
            if not end and records and nxt + min(src.per_page, gbif.MAX_LIMIT) > gbif.MAX_OFFSET:
                raise FetchError("gbif_offset_limit", "over 100,000 results: split the query or use a GBIF download")
            cursor = nxt if records and not end else None
        else:
            raise ValueError(f"{src.name} is not crawlable")
        yield records, cursor
        if cursor is None:
            return


def normalize_record(src: SourceConfig, record: dict) -> list[dict]:
    if src.name == "xeno-canto":
        return xenocanto.normalize(record)
    if src.name == "inaturalist":
        return inaturalist.normalize(record)
    if src.name == "macaulay":
        return macaulay.normalize(record, src.media_base_url or src.base_url, src.license_override)
    if src.name == "gbif":
        return gbif.normalize_occurrence(record)
    if src.name == "inaturalist-open-data":
        return inat_open_data.normalize_photo(record["photo"], record["observation"], record["taxon"],
                                              record["observer"], src.base_url)
    if src.name == "macaulay-export":
        return macaulay.normalize_export_row(record, src.media_base_url or src.base_url, src.license_override)
    raise ValueError(f"no normalizer for {src.name}")


def _write_page(path: str, records: list[dict]) -> None:
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    io.write_bytes(path, gzip.compress(lines.encode(), mtime=0))


def read_page(path: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(io.read_bytes(path)).decode().splitlines() if line]


class CrawlPartition(beam.DoFn):
    """Pages through one partition, keeping every page and the cursor after it."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self) -> None:
        self.client = HttpClient(policy_from(self.cfg.http, self.cfg.sources))

    def process(self, part: dict):
        src = next(s for s in self.cfg.sources if s.name == part["source"])
        root = io.join(self.cfg.out, "raw", part["id"])
        state_path = io.join(self.cfg.out, "state", "crawl", f"{part['id']}.json")
        state = io.read_json(state_path) if io.exists(state_path) else {"cursor": None, "pages": 0, "done": False}
        tag = (part["source"], part["id"], part.get("run", 1), part.get("mode", "full"))
        for n in range(state["pages"]):  # pages already kept: replay, never re-fetch
            for rec in read_page(io.join(root, f"page-{n:06d}.jsonl.gz")):
                yield tag, rec
        if state["done"]:
            return
        try:
            for attempt in range(MAX_RESTARTS + 1):
                try:
                    for records, cursor in fetch_pages(self.client, src, part["query"], state["cursor"]):
                        if src.max_pages and state["pages"] >= src.max_pages:
                            break
                        _write_page(io.join(root, f"page-{state['pages']:06d}.jsonl.gz"), records)
                        state = {"cursor": cursor, "pages": state["pages"] + 1, "done": cursor is None}
                        io.write_json(state_path, state)
                        killpoint("crawl:page")
                        for rec in records:
                            yield tag, rec
                    break
                except PagingChanged as err:
                    # records already sent are merged by key downstream; nothing is skipped
                    log.warning("partition %s: %s; crawling it again (%d)", part["id"], err, attempt + 1)
                    if attempt == MAX_RESTARTS:
                        raise FetchError("paging_unstable", str(err)) from None
                    state = {"cursor": None, "pages": 0, "done": False}
                    io.write_json(state_path, state)
        except (FetchError, ValueError) as err:
            reason = getattr(err, "reason", "bad_page")
            log.warning("partition %s stopped at page %d: %s", part["id"], state["pages"], reason)
            yield beam.pvalue.TaggedOutput("rejects", reject(f"partition:{part['id']}", "crawl", reason,
                                                             f"page {state['pages']}: {getattr(err, 'detail', err)}"))
        if not state["done"] and src.max_pages and state["pages"] >= src.max_pages:
            io.write_json(state_path, {**state, "done": True})


class Normalize(beam.DoFn):
    """Raw record -> catalog rows, or a reject row naming why it could not be read."""

    def __init__(self, cfg: BuildConfig):
        self.sources = {s.name: s for s in cfg.sources}

    def process(self, item):
        (source, part_id, run, mode), record = item
        try:
            for row in normalize_record(self.sources[source], record):
                yield {**row, "crawl_run": run, "_partition": part_id, "_mode": mode}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            rid = record.get("id", "?") if isinstance(record, dict) else "?"
            yield beam.pvalue.TaggedOutput("rejects", reject(f"{source}:{rid}", "crawl", "unparseable_record",
                                                             f"{type(err).__name__}: {err}"))


def pick_one(rows: list[dict]) -> dict:
    """The same record seen twice (overlapping pages, or a later run's edit) is kept once, deterministically:
    the latest run's version."""
    return min(rows, key=lambda r: (-r.get("crawl_run", 1), r["raw"]))
