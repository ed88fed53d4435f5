"""The runs of one output folder: what each crawled, and where the next incremental run starts.

`state/runs.json` lists every run with its crawl partitions, its start time
(the next run's `updated_since` watermark) and the highest ids it saw.  A full
build is run 1.  `build --incremental` adds a run whose partitions ask only
for what is new: ids above the cursors and records updated since the
watermark (Xeno-canto `nr:` and `since:`, iNaturalist `id_above` and
`updated_since`); sources without either (Macaulay, GBIF, bulk files) are
listed again, pages only, and a record missing from their new listing is gone.
Earlier runs' partitions are replayed from their kept raw pages, never fetched.
"""
from __future__ import annotations

import datetime as dt

from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig

ID_CURSOR_SOURCES = ("xeno-canto", "inaturalist")


def runs_path(cfg: BuildConfig) -> str:
    return io.join(cfg.out, "state", "runs.json")


def load_runs(cfg: BuildConfig) -> list[dict]:
    return io.read_json(runs_path(cfg))["runs"] if io.exists(runs_path(cfg)) else []


def save_runs(cfg: BuildConfig, runs: list[dict]) -> None:
    io.write_json(runs_path(cfg), {"runs": runs})


def current_run(cfg: BuildConfig) -> int:
    return len(load_runs(cfg)) or 1


def cursors_from(rows: list[dict]) -> dict[str, int]:
    """The highest record id per id-cursored source (iNaturalist: observation ids, what `id_above` pages on)."""
    out: dict[str, int] = {}
    for r in rows:
        field = {"xeno-canto": "source_id", "inaturalist": "observation_id"}.get(r["source"])
        if field and str(r.get(field) or "").isdigit():
            out[r["source"]] = max(out.get(r["source"], 0), int(r[field]))
    return out


def delta_partitions(cfg: BuildConfig, run: int, cursors: dict[str, int], watermark: str) -> list[dict]:
    """The partitions of an incremental run (their ids name the run, so their pages and cursors are its own)."""
    day = watermark[:10]
    out = []
    for src in cfg.sources:
        for i, query in enumerate(src.queries):
            base = f"{src.name}-q{i:03d}-run{run:04d}"
            common = {"source": src.name, "index": i, "run": run}
            if src.name == "xeno-canto":
                top = cursors.get(src.name, 0)
                out.append({**common, "id": f"{base}-new", "query": f"{query} nr:{top + 1}-999999999", "mode": "new"})
                out.append({**common, "id": f"{base}-since", "query": f"{query} since:{day}", "mode": "updated"})
            elif src.name == "inaturalist":
                q = {k: v for k, v in dict(query).items() if k not in ("id_above", "id_below")}
                out.append({**common, "id": f"{base}-new", "query": {**q, "id_above": cursors.get(src.name, 0)},
                            "mode": "new"})
                out.append({**common, "id": f"{base}-since", "query": {**q, "updated_since": watermark},
                            "mode": "updated"})
            else:
                out.append({**common, "id": f"{base}-relist", "query": query, "mode": "relist"})
    return out


def start_incremental(cfg: BuildConfig, rows: list[dict]) -> dict:
    """Register a new run after the last one; returns it."""
    runs = load_runs(cfg)
    if not runs:
        raise ValueError(f"{cfg.out} has no previous build to add to: run a full `bestiary build` first")
    run = len(runs) + 1
    cursors = cursors_from(rows)
    entry = {"run": run, "started": now(), "cursors": cursors,
             "partitions": delta_partitions(cfg, run, cursors, runs[-1]["started"])}
    save_runs(cfg, runs + [entry])
    return entry


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
