"""Crawl politeness and media download throughput against the sample archive.

1. A crawl of every archive at a configured limit (default 10 requests/s) against
   serve-sample with added latency (default 50 ms): achieved rate / limit (goal >= 0.95)
   and the count of limit violations, any request that makes more than `limit` in one
   second as the server saw them (goal 0).
2. Media downloads into bestiary's cache (the shard worker's prefetch) against a plain
   sequential requests loop on the same files, same latency.  Prints the ratio last.

Usage: python bench/crawl.py [--limit 10] [--latency-ms 50] [--files 40]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import requests

from bestiary.pipelines.build import build
from bestiary.pipelines.materialize import MaterializeShard
from bestiary.sample_archive.server import start_in_thread
from bestiary.schemas.config import parse_config


def violations(times: list[float], limit: float) -> int:
    """Requests that are the (limit+1)-th inside a one-second window."""
    n = int(limit)
    return sum(1 for i in range(n, len(times)) if times[i] - times[i - n] < 1.0 - 1e-3)


def crawl(url: str, out: str, limit: float) -> None:
    sources = [
        {"name": "xeno-canto", "base_url": url, "queries": ["grp:birds", "grp:frogs"], "per_page": 50,
         "api_key_env": "XC_API_KEY"},
        {"name": "inaturalist", "base_url": url, "queries": [{"sounds": "true"}, {"photos": "true"}], "per_page": 4},
        {"name": "macaulay", "base_url": url, "queries": [{"mediaType": "audio"}, {"mediaType": "photo"}], "per_page": 4},
        {"name": "gbif", "base_url": url, "queries": [{"mediaType": "Sound"}], "per_page": 10},
    ]
    for s in sources:
        s["requests_per_second"] = limit
    build(parse_config({"out": out, "sources": sources}), only=("crawl",))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=float, default=10.0)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--files", type=int, default=40)
    a = ap.parse_args()
    os.environ.setdefault("XC_API_KEY", "bench-key")
    server, state, url = start_in_thread(latency_ms=a.latency_ms, max_seconds=8, audio_format="wav")
    with tempfile.TemporaryDirectory() as tmp:
        state.request_log = []
        crawl(url, os.path.join(tmp, "crawl"), a.limit)
        times = sorted(t for t, route in state.request_log if route != "index")
        achieved = (len(times) - 1) / (times[-1] - times[0])
        bad = violations(times, a.limit)

        recs = state.archive.xc[: a.files]
        photos = (state.archive.ml_photos * a.files)[: a.files]
        urls = [f"{url}/{r.id}/download" for r in recs] + [f"{url}/api/v1/asset/{p.id}/640" for p in photos]
        for u in urls:  # render once on the server so both sides fetch the same cached bytes
            requests.get(u, timeout=60)
        t0 = time.perf_counter()
        with requests.Session() as s:
            plain = [len(s.get(u, timeout=60).content) for u in urls]
        sequential = time.perf_counter() - t0
        cfg = parse_config({"out": os.path.join(tmp, "media"), "sources": [{"name": "xeno-canto", "base_url": url,
                                                                            "queries": ["grp:birds"]}]})
        worker = MaterializeShard(cfg)
        worker.setup()
        t0 = time.perf_counter()
        failed = worker.prefetch([{"media_url": u, "image_url": p} for u, p in zip(urls[: len(recs)], urls[len(recs):])])
        ours = time.perf_counter() - t0
        assert not failed, failed
        assert len(list(os.scandir(os.path.join(tmp, "media", "cache", "media", "blobs")))) == len(set(urls))
    server.shutdown()
    mb = sum(plain) / 1e6
    print(f"crawl: {len(times)} requests in {times[-1] - times[0]:.1f} s at a limit of {a.limit:g}/s, "
          f"{a.latency_ms:g} ms latency")
    print(f"media: {len(urls)} files, {mb:.1f} MB; sequential requests {sequential:.2f} s "
          f"({mb / sequential:.1f} MB/s), bestiary cache prefetch {ours:.2f} s ({mb / ours:.1f} MB/s)")
    print(f"limit violations: {bad} (goal 0)")
    print(f"achieved / limit: {achieved:.2f} / {a.limit:g} = {achieved / a.limit:.3f} (goal >= 0.95)")
    print(f"media download throughput, bestiary / sequential loop: {sequential / ours:.2f}x")


if __name__ == "__main__":
    main()
