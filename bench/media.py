"""Media benchmarks, each printing a ratio against a baseline run side by side.

1. Audio path on the same 50 files, one core: bestiary (decode -> 48 kHz mono ->
   salient 10 s clips -> FLAC) against the ffmpeg command line doing the same
   per file (decode, downmix, resample, cut the same windows, FLAC).  Goal >= 1.5x.
   Debian's ffmpeg is the baseline (apt-get install ffmpeg); it is never a
   dependency of bestiary.
2. Shard writing: bestiary's deterministic, hashing tar writer against plain
   `tarfile` with the same bytes, then hashlib for the manifest's sha256.  Goal >= 0.9x.
3. Peak RSS of a whole build on a 10x sample archive against 1x.  Goal <= 1.3x.

Usage: python bench/media.py [--files 50] [--skip-rss]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for both sides

from bestiary.media.audio import make_clips  # noqa: E402
from bestiary.pipelines.materialize import write_tar  # noqa: E402
from bestiary.sample_archive.generate import build_archive, render_audio  # noqa: E402


def files(n: int) -> list[tuple[str, bytes]]:
    recs = build_archive(7).xc[:n]
    return [(f"{r.id}.{r.fmt}", render_audio(r)[0]) for r in recs]


def bench_audio(items: list[tuple[str, bytes]], tmp: str) -> tuple[float, float, list]:
    t0 = time.perf_counter()
    windows = []
    for _, data in items:
        _, clips = make_clips(data, 48000, 10.0, 3)
        windows.append([c.offset_s for c in clips])
    ours = time.perf_counter() - t0
    paths = []
    for name, data in items:
        path = os.path.join(tmp, name)
        with open(path, "wb") as fh:
            fh.write(data)
        paths.append(path)
    t0 = time.perf_counter()
    for path, offsets in zip(paths, windows):
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-y", "-i", path]
        for k, off in enumerate(offsets):
            cmd += ["-map", "0:a", "-ss", f"{off}", "-t", "10", "-ac", "1", "-ar", "48000",
                    "-af", "apad=whole_dur=10", "-sample_fmt", "s16", f"{path}.{k}.flac"]
        subprocess.run(cmd, check=True)
    theirs = time.perf_counter() - t0
    return ours, theirs, windows


def bench_tar(items: list[tuple[str, bytes]], repeats: int = 10) -> tuple[float, float]:
    samples = [(f"s{i:06d}", {"flac": data, "jpg": data[:20000], "json": b"{}", "txt": b"caption"})
               for i, (_, data) in enumerate(items)]
    best_ours = best_plain = float("inf")
    for i in range(repeats):
        if i % 2 == 0:  # alternate which side runs first (allocator warm-up favours the second)
            t0 = time.perf_counter()
            ours = write_tar(samples)
            best_ours = min(best_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for key, members in samples:
                for ext, body in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        plain = buf.getvalue()
        hashlib.sha256(plain).hexdigest()  # both sides end with the shard written and its sha256 for the manifest
        best_plain = min(best_plain, time.perf_counter() - t0)
        if i % 2 == 1:
            t0 = time.perf_counter()
            ours = write_tar(samples)
            best_ours = min(best_ours, time.perf_counter() - t0)
    assert abs(len(ours) - len(plain)) < 1024 * len(samples)
    return best_ours, best_plain


RSS_SCRIPT = """
import json, resource, sys
from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
cfg = parse_config(json.loads(sys.argv[1]))
stats = build(cfg)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "records": stats["accounting"]["records_crawled"], "samples": stats["shard"]["samples"]}))
"""


def bench_rss(scale: float, tmp: str, max_seconds: float) -> dict:
    from bestiary.sample_archive.server import start_in_thread
    server, _, url = start_in_thread(scale=scale, max_seconds=max_seconds, audio_format="wav")
    cfg = {"out": os.path.join(tmp, f"x{scale:g}"), "taxonomy": {"gbif_base_url": url},
           "sources": [{"name": "xeno-canto", "base_url": url, "queries": ["grp:birds", "grp:frogs"], "per_page": 500,
                        "api_key_env": "XC_API_KEY"},
                       {"name": "inaturalist", "base_url": url, "per_page": 200,
                        "queries": [{"sounds": "true"}, {"photos": "true"}]}],
           "shards": {"samples_per_shard": 500, "min_shards_per_split": 2}, "media": {"max_clips_per_recording": 1}}
    env = {**os.environ, "XC_API_KEY": os.environ.get("XC_API_KEY", "bench-key")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, json.dumps(cfg)], capture_output=True, text=True, env=env)
    server.shutdown()
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-max-seconds", type=float, default=6.0, help="recording length cap for the RSS builds")
    a = ap.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("the baseline needs Debian's ffmpeg: apt-get install ffmpeg")
    items = files(a.files)
    hours = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs, windows = bench_audio(items, tmp)
        hours = sum(len(w) for w in windows)
        t_ours, t_plain = bench_tar(items)
        rss = None if a.skip_rss else (bench_rss(1, tmp, a.rss_max_seconds), bench_rss(10, tmp, a.rss_max_seconds))
    print(f"audio: {len(items)} files, {hours} clips; bestiary {ours:.2f} s, ffmpeg CLI {theirs:.2f} s")
    print(f"tar:   bestiary writer {t_ours * 1000:.1f} ms, plain tarfile {t_plain * 1000:.1f} ms")
    if rss:
        for label, r in zip(("1x", "10x"), rss):
            print(f"build {label}: {r['records']} records, {r['samples']} samples, {r['seconds']:.0f} s, "
                  f"peak RSS {r['rss_mb']:.0f} MB")
        print(f"build time 10x / 1x: {rss[1]['seconds'] / rss[0]['seconds']:.2f} "
              f"(records {rss[1]['records'] / rss[0]['records']:.1f}x)")
    print(f"audio path speed, bestiary / ffmpeg CLI: {theirs / ours:.2f}x (goal >= 1.5)")
    print(f"shard writing speed, bestiary / tarfile: {t_plain / t_ours:.2f}x (goal >= 0.9)")
    if rss:
        print(f"peak RSS 10x / 1x: {rss[1]['rss_mb'] / rss[0]['rss_mb']:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
