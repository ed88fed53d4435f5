"""The runs of one output folder: what each crawled, and where the next incremental run starts.

`state/runs.json` lists every run with its crawl partitions, its start time
(the next run's `updated_since` watermark) and the highest ids it saw (from
`work/cursors.json`, which the crawl stage writes).  A full build is run 1.
`build --incremental` adds a run whose partitions ask only for what is new,
as each connector says (`Connector.delta_queries`: Xeno-canto `nr:` and
`since:`, iNaturalist `id_above` and `updated_since`; the others are listed
again, pages only, and a record missing from a complete new listing is gone).
Earlier runs' partitions are replayed from their kept raw pages, never fetched.
"""
from __future__ import annotations

import datetime as dt

from bestiary.connectors import registry
from bestiary.pipelines import io
from bestiary.pipelines.context import Mode, RunContext
from bestiary.schemas.config import BuildConfig, ConfigError


def id_ranges(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop] cut into `parts` contiguous, non-overlapping inclusive ranges."""
    step = -(-(stop - start + 1) // parts)
    return [(lo, min(stop, lo + step - 1)) for lo in range(start, stop + 1, step)]


def partitions(cfg: BuildConfig) -> list[dict]:
    """A full crawl's partitions (run 1): one per (source, query), or per (source, query, id range)."""
    out = []
    for src in cfg.sources:
        conn = registry.get(src.name)
        for i, query in enumerate(src.queries):
            base = {"source": src.name, "index": i, "run": 1, "mode": "full", "base": f"{src.name}-q{i:03d}"}
            if src.id_ranges and conn.id_ranges:
                r = src.id_ranges
                for j, (lo, hi) in enumerate(id_ranges(r.start, r.stop, r.parts)):
                    out.append({**base, "query": conn.with_id_range(query, lo, hi), "id": f"{base['base']}-r{j:03d}"})
            else:
                out.append({**base, "query": query, "id": base["base"]})
    return out


def delta_partitions(cfg: BuildConfig, run: int, cursors: dict[str, int], watermark: str) -> list[dict]:
    """The partitions of an incremental run (their ids name the run, so their pages and cursors are its own)."""
    out = []
    for src in cfg.sources:
        conn = registry.get(src.name)
        for i, query in enumerate(src.queries):
            base = f"{src.name}-q{i:03d}"
            for suffix, mode, q in conn.delta_queries(query, cursors.get(src.name), watermark):
                out.append({"source": src.name, "index": i, "run": run, "mode": mode, "base": base,
                            "id": f"{base}-run{run:04d}-{suffix}", "query": q})
    return out


def runs_path(cfg: BuildConfig) -> str:
    return io.join(cfg.out, "state", "runs.json")


def load_runs(cfg: BuildConfig) -> list[dict]:
    return io.read_json(runs_path(cfg))["runs"] if io.exists(runs_path(cfg)) else []


def save_runs(cfg: BuildConfig, runs: list[dict]) -> None:
    io.write_json(runs_path(cfg), {"runs": runs})


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def start_incremental(cfg: BuildConfig) -> dict:
    """Register a new run after the last one, from the cursors the last crawl wrote; returns it."""
    runs = load_runs(cfg)
    if not runs:
        raise ConfigError(f"{cfg.out} has no previous build to add to: run a full `bestiary build` first")
    cursors_file = io.join(cfg.out, "work", "cursors.json")
    cursors = io.read_json(cursors_file) if io.exists(cursors_file) else {}
    run = len(runs) + 1
    entry = {"run": run, "started": now(), "cursors": cursors,
             "partitions": delta_partitions(cfg, run, cursors, runs[-1]["started"])}
    save_runs(cfg, runs + [entry])
    return entry


def first_free_shards(cfg: BuildConfig) -> dict[str, int]:
    """Per split, the index after the highest shard published so far (O(shards), from the manifest)."""
    path = io.join(cfg.out, "shards", "manifest.json")
    out: dict[str, int] = {}
    for s in (io.read_json(path)["shards"] if io.exists(path) else []):
        out[s["split"]] = max(out.get(s["split"], 0), int(s["name"].rsplit("-", 1)[1]) + 1)
    return out


def context(cfg: BuildConfig, mode: Mode) -> RunContext:
    """The run this build is: run 1 (full or rebuild) or the latest incremental run."""
    runs = load_runs(cfg)
    if not runs:
        runs = [{"run": 1, "started": now(), "cursors": {}, "partitions": partitions(cfg)}]
        save_runs(cfg, runs)
    parts = tuple(p for r in runs for p in r["partitions"])
    run = len(runs)
    first = first_free_shards(cfg) if run > 1 else {}
    return RunContext(cfg, run=run, mode=mode if run == 1 or mode != "full" else "incremental",
                      partitions=parts, first_shard=first)
