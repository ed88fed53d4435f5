"""An offline `build --rebuild` of the demo against the bare codec chain over the same cached media.

First a normal build of the demo (serve-sample on a free port, at each `--scales` size).  Then, with the
server gone, side by side on the same cached media and on all cores:
- bestiary: `bestiary build configs/demo.yaml --rebuild` (every stage again from kept raw pages and caches,
  network refused), CPU seconds of every process it starts (driver, runner, SDK workers), and of the
  driver on its own (imports, graph construction, the runner, the card);
- the bare chain: for every medium in the samples, decode, mono, 48 kHz (soxr), FLAC of the same clips
  (offsets from the samples' JSON); and JPEG of the same images; in a process pool of one per core.
- bestiary's media analysis alone: the probe's own functions (decode, PCM hash, fingerprint, salience,
  clip choice, FLAC clips; dHash and JPEG) on the same media, in the same kind of pool: what any rebuild
  with these analyses costs with no pipeline at all;
- the import floor: CPU seconds of `import apache_beam` plus bestiary's stages, which a Beam rebuild pays
  at least twice (the driver, and the warm worker server its SDK workers fork from).
Printed: CPU seconds of each and bestiary's throughput against the bare chain's (goal >= 0.7), and the
ceiling the analysis and the imports leave: bare / (analysis + 2 x import floor).

Each side runs `--repeats` times, in turns, and the medians are compared (these machines are noisy: one
pair of runs moved the ratio by a quarter).  CPU seconds come from getrusage of waited-for children.

Usage: python bench/rebuild.py [--scales 1,4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

# one BLAS thread a process, as bestiary's workers run (pipelines/runner.py): the pools' processes are one a
# core already, and OpenBLAS threads of their own would only spin against each other
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_cpu(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run a command; (wall seconds, CPU seconds of it and every process under it).  From getrusage of
    the waited-for children: every process of a build is waited for by its parent (the SDK workers by the
    runner or the warm worker server, the server by the driver), so none is missed, however short-lived."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - t0, cpu_seconds() - c0


# the CLI under a wrapper that writes the driver's own CPU seconds (not its children's) to a file at exit
DRIVER_WRAP = ("import atexit, resource, runpy, sys\n"
               "path = sys.argv.pop(1)\n"
               "def report():\n"
               "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
               "    open(path, 'w').write(str(r.ru_utime + r.ru_stime))\n"
               "atexit.register(report)\n"
               "sys.argv[0] = 'bestiary'\n"
               "runpy.run_module('bestiary.pipelines.cli', run_name='__main__')\n")


def rebuild_cpu(env: dict) -> tuple[float, float, float]:
    """`build configs/demo.yaml --rebuild`: (wall seconds, CPU seconds of every process, the driver's own)."""
    with tempfile.NamedTemporaryFile("r", suffix=".cpu") as fh:
        wall, cpu = tree_cpu([sys.executable, "-c", DRIVER_WRAP, fh.name, "build", "configs/demo.yaml", "--rebuild"],
                             env)   # the server is gone: everything from raw pages and caches
        return wall, cpu, float(fh.read())


def bare_one(job: tuple[str, str, list[float], float, int, int]) -> int:
    """One medium through the bare codec chain; returns the bytes it wrote."""
    import soundfile as sf
    import soxr
    from PIL import Image
    kind, path, offsets, clip_s, rate, size = job
    data = open(path, "rb").read()
    if kind == "image":
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        return len(buf.getvalue())
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - what libsndfile cannot read, PyAV can
        import av
        with av.open(io.BytesIO(data)) as c:
            frames = [f.to_ndarray() for f in c.decode(audio=0)]
            sr = c.streams.audio[0].rate
        x = np.concatenate([f if f.ndim == 2 else f[None] for f in frames], axis=1).T.astype(np.float32)
    mono = x.mean(axis=1)
    out = 0
    for off in offsets:
        seg = mono[int(off * sr): int((off + clip_s) * sr)]
        y = soxr.resample(seg, sr, rate, quality="HQ") if sr != rate else seg
        y = np.pad(y, (0, max(0, int(clip_s * rate) - len(y))))[: int(clip_s * rate)]
        buf = io.BytesIO()
        sf.write(buf, np.clip(y, -1, 1), rate, format="FLAC", subtype="PCM_16")
        out += len(buf.getvalue())
    return out


def analysis_one(m, job: tuple[str, str, list[float], float, int, int]) -> int:
    """One medium through bestiary's own analysis (what the probe runs on it); returns the bytes it wrote."""
    from bestiary.media.audio import AudioError, analyze_audio
    from bestiary.media.derived import pack_clips
    from bestiary.media.fingerprints import dhash
    from bestiary.media.images import prepare_image
    kind, path, _, _, _, _ = job   # m: the build's MediaConfig
    data = open(path, "rb").read()
    if kind == "image":
        dhash(data)
        return len(prepare_image(data, m.image_size)[0])
    try:
        a = analyze_audio(data, m.sample_rate, m.clip_seconds, m.max_clips_per_recording, m.min_seconds,
                          m.min_source_rate, None, m.ultrasonic_policy())
    except AudioError:
        return 0
    return len(pack_clips(a.info, a.clips))


def import_floor(env: dict) -> float:
    """CPU seconds of importing Beam and bestiary's stages once, in a fresh interpreter."""
    return tree_cpu([sys.executable, "-c", "import apache_beam, bestiary.pipelines.build, bestiary.pipelines.shard, "
                     "bestiary.pipelines.enrich, bestiary.pipelines.finalize"], env)[1]


def bare_jobs(out: str, cfg) -> list[tuple]:
    """Every medium the samples use: its cached blob and the clips taken from it."""
    import webdataset as wds
    from bestiary.pipelines import io as bio
    from bestiary.pipelines.cache import MediaCache
    cache = MediaCache(os.path.join(out, "cache", "media"))
    catalog = {r["key"]: r["media_url"] for t in ("recordings", "images")
               for r in bio.read_rows(os.path.join(out, "catalog", t), ["key", "media_url"])}
    manifest = json.load(open(os.path.join(out, "shards", "manifest.json")))
    clips: dict[str, list[float]] = {}
    images: set[str] = set()
    for s in manifest["shards"]:
        for sample in wds.WebDataset(os.path.join(out, "shards", s["file"]), shardshuffle=False):
            meta = json.loads(sample["json"])
            clips.setdefault(meta["record_key"], []).append(meta["audio"]["offset_s"])
            if meta["image"]:   # an audio-text sample has none
                images.add(meta["image"]["key"])
    m = cfg.media
    jobs = [("audio", cache.lookup(catalog[k]), sorted(v), m.clip_seconds, m.sample_rate, 0) for k, v in clips.items()]
    jobs += [("image", cache.lookup(catalog[k]), [], 0.0, 0, m.image_size) for k in sorted(images)]
    return jobs


def measure(scale: float, env: dict, repeats: int) -> dict:
    """Build the demo at an archive scale, then rebuild it offline and run the bare chain on its media."""
    from bestiary.sample_archive.server import start_in_thread
    from bestiary.schemas.config import load_config
    server, _, url = start_in_thread(seed=7, scale=scale)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "demo_out")
        env = {**env, "SAMPLE_URL": url, "DEMO_OUT": out}
        try:
            wall, cpu = tree_cpu([sys.executable, "-m", "bestiary.pipelines.cli", "build", "configs/demo.yaml"], env)
        finally:
            server.shutdown()
            server.server_close()
        os.environ.update(env)
        cfg = load_config(os.path.join(ROOT, "configs", "demo.yaml"))
        jobs = bare_jobs(out, cfg)
        runs = []   # (rebuild wall, rebuild CPU, bare wall, bare CPU, analysis CPU, import floor, driver CPU)
        for _ in range(repeats):
            rwall, ours, driver = rebuild_cpu(env)
            t0, c0 = time.perf_counter(), cpu_seconds(own=True)
            with ProcessPoolExecutor(os.cpu_count()) as pool:
                written = sum(pool.map(bare_one, jobs, chunksize=4))
            bare_run = (time.perf_counter() - t0, cpu_seconds(own=True) - c0)
            c0 = cpu_seconds(own=True)
            with ProcessPoolExecutor(os.cpu_count()) as pool:
                analysed = sum(pool.map(partial(analysis_one, cfg.media), jobs, chunksize=4))
            runs.append((rwall, ours, *bare_run, cpu_seconds(own=True) - c0, import_floor(env), driver))
        rwall, ours, bare_wall, bare, analysis, floor, driver = (statistics.median(r[i] for r in runs)
                                                                 for i in range(7))
    n_audio = sum(1 for j in jobs if j[0] == "audio")
    print(f"scale {scale:g}: first build {wall:.0f} s, {cpu:.1f} CPU-s; media {n_audio} recordings "
          f"({sum(len(j[2]) for j in jobs)} clips), {len(jobs) - n_audio} images, bare chain wrote {written / 1e6:.1f} MB")
    print(f"    bestiary build --rebuild: {rwall:.1f} s wall, {ours:.1f} CPU-s ({cfg.runner.mode}, "
          f"{cfg.runner.workers} workers); bare codec chain: {bare_wall:.1f} s wall, {bare:.1f} CPU-s "
          f"({os.cpu_count()} processes); throughput {bare / ours:.2f}x (medians of {repeats} runs of each, "
          f"in turns; ratios {', '.join(f'{r[3] / r[1]:.2f}' for r in runs)})", flush=True)
    print(f"    of the rebuild's CPU: the driver {driver:.1f} CPU-s (imports, graph construction, the runner, the "
          f"card), the warm worker server and SDK workers {ours - driver:.1f} CPU-s", flush=True)
    print(f"    bestiary's media analysis alone: {analysis:.1f} CPU-s ({bare / analysis:.2f}x the bare chain's "
          f"throughput; wrote {analysed / 1e6:.1f} MB); import floor {floor:.1f} CPU-s a process; so a Beam "
          f"rebuild with these analyses reaches at most {bare / (analysis + 2 * floor):.2f}x; the rest of the "
          f"rebuild (stages, bundles, tables) costs {ours - analysis:.1f} CPU-s", flush=True)
    return {"ours": ours, "bare": bare, "analysis": analysis, "driver": driver}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="1", help="archive scales, e.g. 1,4: the second pair gives the marginal cost")
    ap.add_argument("--repeats", type=int, default=3, help="rebuild and bare chain runs (in turns) at each scale")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    env = {**os.environ, "XC_API_KEY": os.environ.get("XC_API_KEY", "bench-key"), "PYTHONUNBUFFERED": "1"}
    got = [measure(float(s), env, a.repeats) for s in a.scales.split(",")]
    if len(got) >= 2:
        d_ours, d_bare = got[-1]["ours"] - got[0]["ours"], got[-1]["bare"] - got[0]["bare"]
        print(f"per added medium (scale {a.scales.split(',')[0]} -> {a.scales.split(',')[-1]}): throughput "
              f"{d_bare / d_ours:.2f}x the bare chain (the analysis alone: "
              f"{d_bare / (got[-1]['analysis'] - got[0]['analysis']):.2f}x); fixed cost of a rebuild "
              f"{got[0]['ours'] - got[0]['bare'] * d_ours / d_bare:.1f} CPU-s; the driver's CPU went from "
              f"{got[0]['driver']:.1f} to {got[-1]['driver']:.1f} CPU-s")
    print(f"throughput bestiary / bare chain (demo): {got[0]['bare'] / got[0]['ours']:.2f}x (goal >= 0.7)")


def cpu_seconds(own: bool = False) -> float:
    """CPU seconds of every waited-for child so far, and this process's own with `own` (the bare chain's
    dispatch happens here)."""
    import resource
    who = [resource.RUSAGE_CHILDREN] + ([resource.RUSAGE_SELF] if own else [])
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


if __name__ == "__main__":
    main()
