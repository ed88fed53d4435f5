"""Incremental ingestion against a full build, side by side, on the sample archive.

1. The archive withholds its newest 1 % of Xeno-canto recordings (the highest ids,
   as a real archive's newest are); a full build runs; the archive publishes them;
   `build --incremental` adds them.  Printed: the incremental run's wall time
   against a full build of the whole archive (goal <= 3 %), and the media requests
   it made for media already in the cache (goal 0).
2. With --scales 1,10: full-build wall time and peak RSS at each scale of the
   archive, in child processes (goal: time near-linear, RSS <= 1.3x).

Usage: python bench/incremental.py [--scale 1] [--share 0.01] [--scales 1,10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.sample_archive.server import start_in_thread
from bestiary.schemas.config import load_config

MEDIA_ROUTES = ("xc_download", "inat_sound", "inat_photo", "ml_audio", "ml_image", "gbif_media")


def config(url: str, out: str):
    os.environ.update(SAMPLE_URL=url, DEMO_OUT=out, XC_API_KEY=os.environ.get("XC_API_KEY", "bench-key"))
    return load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml"))


def media_requests(before: dict, after: dict) -> int:
    return sum(after.get(r, 0) - before.get(r, 0) for r in MEDIA_ROUTES)


def incremental(scale: float, share: float) -> None:
    server, state, url = start_in_thread(seed=7, scale=scale)
    with tempfile.TemporaryDirectory() as tmp:
        newest = sorted(state.archive.xc, key=lambda r: r.id)[-max(1, round(share * len(state.archive.xc))):]
        hidden = {("xc", r.id) for r in newest}
        grown = config(url, os.path.join(tmp, "grown"))
        state.hidden |= hidden
        t = time.perf_counter()
        build(grown)
        t_first = time.perf_counter() - t
        state.hidden -= hidden
        before = dict(state.counts)
        t = time.perf_counter()
        stats = build(grown, incremental=True)
        t_incr = time.perf_counter() - t
        after = dict(state.counts)
        rejects = {r["key"]: r["stage"] for r in io.read_rows(os.path.join(tmp, "grown", "rejects"))}
        usable = sum(1 for r in newest if rejects.get(f"xeno-canto:{r.id}") not in ("select", "enrich"))
        media = media_requests(before, after)
        full = config(url, os.path.join(tmp, "full"))
        t = time.perf_counter()
        build(full)
        t_full = time.perf_counter() - t
    server.shutdown()
    plan = stats["plan"]
    print(f"archive scale {scale}: {len(state.archive.xc)} Xeno-canto recordings; {len(newest)} new "
          f"({100 * len(newest) / len(state.archive.xc):.1f} %), {usable} of them usable")
    print(f"full build without them {t_first:.1f} s; incremental run {t_incr:.1f} s "
          f"({plan['shards_planned']} new shards, {plan['audio_new']} new records); full build of everything {t_full:.1f} s")
    print(f"media requests in the incremental run: {media} ({usable} for new recordings, "
          f"{media - usable} for media already cached)")
    print(f"RATIO incremental / full build wall time: {t_incr / t_full:.3f} (goal <= 0.03)")
    print(f"RATIO cached media re-requested: {media - usable} (goal 0)")


CHILD = """
import json, os, resource, sys, time
from bestiary.sample_archive.server import start_in_thread
from bestiary.pipelines.build import build
from bestiary.schemas.config import load_config
server, state, url = start_in_thread(seed=7, scale=float(sys.argv[1]))
os.environ.update(SAMPLE_URL=url, DEMO_OUT=sys.argv[2], XC_API_KEY="bench-key")
t = time.perf_counter()
stats = build(load_config(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "records": stats["accounting"]["records_crawled"],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scales(values: list[float]) -> None:
    demo = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml")
    rows = {}
    for s in values:
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, "-c", CHILD, str(s), os.path.join(tmp, "out"), demo],
                                 capture_output=True, text=True, check=True)
            rows[s] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"scale {s:g}: {rows[s]['records']} records, {rows[s]['seconds']:.1f} s, peak RSS {rows[s]['peak_mib']:.0f} MiB")
    lo, hi = min(values), max(values)
    print(f"RATIO time {hi:g}x / {lo:g}x: {rows[hi]['seconds'] / rows[lo]['seconds']:.2f} for "
          f"{rows[hi]['records'] / rows[lo]['records']:.2f}x the records; "
          f"peak RSS: {rows[hi]['peak_mib'] / rows[lo]['peak_mib']:.2f} (goal <= 1.3)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--share", type=float, default=0.01)
    ap.add_argument("--scales", default="", help="e.g. 1,10: full builds at these archive scales (slow)")
    a = ap.parse_args()
    incremental(a.scale, a.share)
    if a.scales:
        scales([float(x) for x in a.scales.split(",")])


if __name__ == "__main__":
    main()
