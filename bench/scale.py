"""How the build scales: the metadata stages at 10k, 100k and 1M recordings (two images each), then the
media stages end to end on short recordings from serve-sample.

Metadata: a generated iNaturalist dump of N observations, each with one sound and two photos, in real v1
shape (~2.5 KB of JSON), kept as raw pages of 8 id-range partitions, so the crawl replays them (no network);
probes for every medium (PCM hashes, fingerprints with some exact and near copies, dHashes with some near
copies) kept as an earlier build's, so dedupe runs on them.  Then crawl, enrich, caption and the shard
plan (select, probe reuse, dedupe, splits, pairing, shard assignment) run on Beam's multi-process runner
with 2 workers, each pipeline submitted from its serialized graph to a job process (runner.job_process),
as a cluster would get it.  Printed per size: wall time, peak RSS of the driver (the process that builds
graphs and reads back facts), of the largest SDK worker and of the local runner (the job process, which
keeps every stage boundary in memory: what a cluster's shuffle holds), and every graph's size.

Media (`--media N`): serve-sample with enough species records for N recordings of at most 3 s, mono WAV
at 16 kHz at most, built into 3 s clips at 16 kHz (so 100k recordings fit in about 25 GB of disk: fetched
media, clip packs and shards); a full build (probe: fetch and decode once; materialize), same figures.

`--own-names`: every record misspells its species its own way, so the enrich stage meets as many distinct
names as records (the name joins must stay keyed: no map of all names in any worker).

Usage: python bench/scale.py [--sizes 10000,100000,1000000] [--media 100000] [--workers 2] [--own-names]
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = 8
PER_PAGE = 200
ID0 = 10_000_000


def template() -> dict:
    from bestiary.sample_archive import formats
    from bestiary.sample_archive.generate import build_archive
    arch = build_archive(7)
    obs = next(o for o in arch.inat if o.sounds and len(o.photos) >= 2)
    return formats.inat_observation(obs, "http://127.0.0.1:9"), [formats.inat_taxon(s) for s in arch.species]


def own_name(name: str, k: int) -> str:
    """The k-th misspelling of a name, all distinct: letters after the epithet (one or two: a fuzzy match
    finds the species; three or more: unresolved)."""
    tail = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        tail = chr(97 + r) + tail
    return name + tail


def observation(t: dict, taxa: list[dict], i: int, rng: np.random.Generator, own_names: bool = False) -> dict:
    o = copy.deepcopy(t)
    oid = ID0 + i
    taxon = taxa[i % len(taxa)]
    if own_names:   # every record spells its species its own way: as many distinct names as records
        taxon = {**taxon, "name": own_name(taxon["name"], i // len(taxa))}
    o.update(id=oid, uuid=f"00000000-0000-4000-8000-{oid:012d}", taxon=taxon,
             observed_on=f"20{10 + i % 14:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
             location=f"{rng.uniform(-60, 70):.5f},{rng.uniform(-170, 170):.5f}")
    o["sounds"][0].update(id=oid, file_url=f"http://127.0.0.1:9/sounds/{oid}.wav")
    for j, p in enumerate(o["photos"][:2]):
        p.update(id=oid * 10 + j, url=f"http://127.0.0.1:9/photos/{oid * 10 + j}/square.jpg")
    o["photos"] = o["photos"][:2]
    o["observation_photos"] = [{"id": p["id"], "position": j, "photo": p} for j, p in enumerate(o["photos"])]
    return o


def write_dump(cfg, n: int, own_names: bool = False) -> None:
    """Raw pages and finished crawl states for every partition, as a crawl that already ran leaves them."""
    from bestiary.pipelines import io
    from bestiary.pipelines.runs import partitions
    t, taxa = template()
    rng = np.random.default_rng(0)
    parts = partitions(cfg)
    per_part = -(-n // len(parts))
    for k, part in enumerate(parts):
        lo, hi = k * per_part, min(n, (k + 1) * per_part)
        pages = 0
        for start in range(lo, hi, PER_PAGE):
            lines = "".join(json.dumps(observation(t, taxa, i, rng, own_names), sort_keys=True) + "\n"
                            for i in range(start, min(hi, start + PER_PAGE)))
            io.write_bytes(io.join(cfg.out, "raw", part["id"], f"page-{pages:06d}.jsonl.gz"),
                           gzip.compress(lines.encode(), mtime=0))
            pages += 1
        io.write_json(io.join(cfg.out, "state", "crawl", f"{part['id']}.json"),
                      {"cursor": None, "pages": pages, "done": True})


def write_probes(cfg, n: int, species: int) -> None:
    """An earlier build's probes: 1 % exact and 2 % near copies of an earlier recording of the same species;
    2 % near-copy images."""
    from bestiary.pipelines.probe import PROBE_SCHEMA, media_fingerprint
    from bestiary.pipelines.tables import part_name, write_part
    rng = np.random.default_rng(1)
    afp, ifp = media_fingerprint(cfg.media, "audio"), media_fingerprint(cfg.media, "image")
    rows, part, prev_hash, earlier = [], 0, None, {}
    for i in range(n):
        oid = ID0 + i
        codes = rng.integers(1, 1 << 15, 200).astype(np.uint16)
        sha = f"{oid:064x}"
        before = earlier.get(i % species)  # observation i's species is taxa[i % species]
        if before is not None and i % 100 == 1:
            codes, sha = before
        elif before is not None and i % 50 == 3:
            flips = (rng.random((200, 15)) < 0.03).astype(np.uint16) @ (1 << np.arange(15)).astype(np.uint16)
            codes = (before[0] ^ flips).astype(np.uint16)
        earlier[i % species] = codes, sha
        rows.append({"kind": "audio", "key": f"inaturalist:sound-{oid}", "url": f"http://127.0.0.1:9/sounds/{oid}.wav",
                     "media_fp": afp, "blob": sha, "pcm_sha256": sha, "codes": codes.tobytes(), "sample_rate": 44100,
                     "channels": 1, "seconds": 20.0, "clips": 2, "derived": f"cache/derived/{sha}.clips"})
        for j in range(2):
            h = int(rng.integers(0, 1 << 62)) * 4 + j
            if j == 1 and i % 50 == 7:
                h = prev_hash ^ 0b101
            prev_hash = h
            pid = oid * 10 + j
            rows.append({"kind": "image", "key": f"inaturalist:photo-{pid}",
                         "url": f"http://127.0.0.1:9/photos/{pid}/medium.jpg", "media_fp": ifp, "blob": f"{pid:064x}",
                         "dhash": f"{h:016x}", "width": 640, "height": 480, "derived": f"cache/derived/{pid}.jpg"})
        if len(rows) >= 60_000 or i == n - 1:
            write_part(os.path.join(cfg.out, "catalog", "probes", part_name(part)), rows, PROBE_SCHEMA)
            rows, part = [], part + 1


def metadata_config(out: str, n: int, workers: int) -> dict:
    from tests.conftest import sample_taxonomy
    return {"out": out,
            "sources": [{"name": "inaturalist", "base_url": "http://127.0.0.1:9", "per_page": PER_PAGE,
                         "queries": [{"sounds": "true", "photos": "true"}],
                         "id_ranges": {"start": ID0, "stop": ID0 + n, "parts": PARTS}}],
            "taxonomy": sample_taxonomy(), "media": {"max_clips_per_recording": 2},
            "shards": {"samples_per_shard": 1000},
            "runner": {"mode": "multi_processing", "workers": workers, "job_process": True}}


DRIVER = """
import json, resource, sys, time
from bestiary.pipelines.build import finalize, run_stage
from bestiary.pipelines.runner import configure_filesystems
from bestiary.pipelines.runs import context
from bestiary.schemas.config import parse_config
cfg = parse_config(json.loads(sys.argv[1]))
stages = sys.argv[2].split(",")
configure_filesystems(cfg.runner)
ctx = context(cfg, "full")
times = {}
for stage in stages:
    t = time.perf_counter()
    if stage == "plan":  # the shard stage's plan pipeline, without writing tars
        from bestiary.pipelines.build import _clear, _stage_previous_probes
        from bestiary.pipelines.runner import pipeline
        from bestiary.pipelines.shard import OUTPUTS, PlanShards
        _stage_previous_probes(ctx)
        _clear(ctx, OUTPUTS)
        with pipeline(cfg.runner, "plan", cfg.out) as p:
            p | PlanShards(ctx)
    elif stage == "finalize":
        finalize(ctx)
    else:
        run_stage(ctx, stage, force=True)
    times[stage] = round(time.perf_counter() - t, 1)
print("RESULT", json.dumps({"times": times, "driver_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_driver(conf: dict, stages: str) -> dict:
    """The build's driver in a child process; every process under it polled for its peak RSS."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(conf), stages], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peaks: dict[int, tuple[str, int]] = {}
    done = threading.Event()

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for p in procs:
                try:
                    cmd = " ".join(p.cmdline())
                    # a warm worker is a fork of the worker server, with the server's command line
                    forked = "warm_workers" in cmd and "warm_workers" in " ".join(p.parent().cmdline())
                    kind = ("driver" if p.pid == proc.pid else "runner" if "jobrun" in cmd
                            else "worker" if "sdk_worker" in cmd or forked
                            else "worker server" if "warm_workers" in cmd else "other")
                    rss = p.memory_info().rss
                    peaks[p.pid] = (kind, max(rss, peaks.get(p.pid, (kind, 0))[1]))
                except psutil.Error:
                    pass
            time.sleep(0.25)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    t0 = time.perf_counter()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    result = json.loads(out.split("RESULT", 1)[1])
    by_kind: dict[str, int] = {}
    for kind, rss in peaks.values():
        by_kind[kind] = max(by_kind.get(kind, 0), rss)
    # the driver's own figure from polling: ru_maxrss would count the parent's pages it was forked with
    return {"wall": wall, "times": result["times"], "driver_mib": by_kind.get("driver", 0) / 2**20,
            "worker_mib": by_kind.get("worker", 0) / 2**20, "runner_mib": by_kind.get("runner", 0) / 2**20}


def metadata(n: int, workers: int, keep: str | None, own_names: bool = False) -> dict:
    from bestiary.schemas.config import parse_config
    with tempfile.TemporaryDirectory(dir=keep) as tmp:
        conf = metadata_config(os.path.join(tmp, "out"), n, workers)
        cfg = parse_config(conf)
        t = time.perf_counter()
        write_dump(cfg, n, own_names)
        write_probes(cfg, n, len(template()[1]))
        gen = time.perf_counter() - t
        got = run_driver(conf, "crawl,enrich,caption,plan")
        graphs = json.load(open(os.path.join(cfg.out, "work", "graphs.json")))
        plan = json.load(open(os.path.join(cfg.out, "work", "stats-plan.json")))
        enrich = json.load(open(os.path.join(cfg.out, "work", "stats-enrich.json")))
    return {**got, "n": n, "generate_s": gen, "graphs": graphs, "planned": plan["recordings_planned"],
            "rejects": plan["rejects_by_reason"], "by_method": enrich["by_method"],
            "unresolved_names": enrich.get("unresolved_names"), "fuzzy_names": enrich.get("fuzzy_names")}


MEDIA_SECONDS, MEDIA_RATE = 3.0, 16000   # light media: the memory bounds, not the codecs, are measured


def media(n: int, workers: int, keep: str | None) -> dict:
    """serve-sample sized for about n recordings of at most 3 s (mono WAV at 16 kHz at most, so the server keeps
    up and 100k fit on disk), a full build into 3 s clips at 16 kHz."""
    from bestiary.sample_archive.server import start_in_thread
    from bestiary.sample_archive.generate import build_archive
    base = len([r for r in build_archive(7).recordings.values()])
    server, state, url = start_in_thread(seed=7, scale=max(1.0, n / base), max_seconds=MEDIA_SECONDS, audio_format="wav",
                                       max_rate=MEDIA_RATE)
    try:
        with tempfile.TemporaryDirectory(dir=keep) as tmp:
            os.environ.update(SAMPLE_URL=url, DEMO_OUT=os.path.join(tmp, "out"),
                              XC_API_KEY=os.environ.get("XC_API_KEY", "bench-key"))
            from bestiary.schemas.config import load_config
            cfg = load_config(os.path.join(ROOT, "configs", "demo.yaml"))
            conf = cfg.model_dump(mode="json")
            conf["runner"] = {"mode": "multi_processing", "workers": workers, "job_process": True}
            conf["media"].update(max_clips_per_recording=1, sample_rate=MEDIA_RATE, clip_seconds=MEDIA_SECONDS)
            got = run_driver(conf, "crawl,enrich,caption,shard,finalize")
            stats = json.load(open(os.path.join(conf["out"], "stats.json")))
            graphs = json.load(open(os.path.join(conf["out"], "work", "graphs.json")))
    finally:
        server.shutdown()
        server.server_close()
    return {**got, "n": stats["accounting"]["records_crawled"], "samples": stats["shard"]["samples"],
            "balanced": stats["accounting"]["balanced"], "graphs": graphs}


def show(label: str, r: dict) -> None:
    print(f"{label}: N={r['n']:,} wall {r['wall']:.0f} s ({r['wall'] / r['n'] * 1e3:.2f} ms/record) stages {r['times']}")
    print(f"    driver {r['driver_mib']:.0f} MiB, largest worker {r['worker_mib']:.0f} MiB, "
          f"local runner {r['runner_mib']:.0f} MiB; graphs {r['graphs']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--media", type=int, default=0, help="recordings for the end-to-end media run (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tmp", help="where the outputs go while measured (default: the system's)")
    ap.add_argument("--own-names", action="store_true",
                    help="every record misspells its species its own way (as many distinct names as records)")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    results = []
    for n in [int(s) for s in a.sizes.split(",") if s]:
        r = metadata(n, a.workers, a.tmp, a.own_names)
        results.append(r)
        show("metadata" + (" (own names)" if a.own_names else ""), r)
        print(f"    generated in {r['generate_s']:.0f} s; planned {r['planned']:,}; rejects {r['rejects']}", flush=True)
        print(f"    enrich: {r['by_method']}; distinct unresolved names {r['unresolved_names']}, "
              f"fuzzy matches {r['fuzzy_names']}", flush=True)
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        mid = results[-2]
        graph_max = max(max(r["graphs"].values()) for r in results)
        # Beam compresses pickled functions, so sizes move by a few dozen bytes with the paths in them
        spread = max(abs(r["graphs"][k] - results[0]["graphs"][k]) / results[0]["graphs"][k]
                     for r in results for k in results[0]["graphs"])
        print(f"graphs: largest {graph_max:,} bytes (goal < 1 MB); largest change across sizes {spread:.3%}")
        print(f"driver peak RSS {hi['n']:,} / {lo['n']:,}: {hi['driver_mib'] / lo['driver_mib']:.2f}x (goal <= 1.2)")
        print(f"largest worker at {hi['n']:,}: {hi['worker_mib']:.0f} MiB (goal < 2048)")
        per = [r["wall"] / r["n"] for r in (mid, hi)]
        print(f"time per record {hi['n']:,} / {mid['n']:,}: {per[1] / per[0]:.2f}x (goal <= 1.3)")
    if a.media:
        r = media(a.media, a.workers, a.tmp)
        show("media", r)
        print(f"    samples {r['samples']:,}, balanced {r['balanced']}")


if __name__ == "__main__":
    main()
