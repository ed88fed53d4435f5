"""Does the training loader keep up?  Its samples/s against a bare FLAC + JPEG decode of the same bytes, and
its speed-up from 1 to 2 workers.

Baseline: the train shards' members read from the tars into memory first, then decoded in one process the
way the loader's workers decode them (FLAC to float32, crop to the clip; JPEG to RGB, crop, resize): pure
decoding, no tar parsing, no batching, no worker hand-off.  The loader: `make_loader` over the same shards
(tar streaming, decode in workers, batching, hand-off to the main process), one pass, 1 then 2 workers.
Goals: loader (1 worker) >= 0.9x the bare decode; 2 workers >= 1.7x 1 worker (on 2 cores).

Usage: python bench/loader.py [--shards demo_out/shards] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def members(urls: list[str]) -> list[tuple[bytes, bytes]]:
    out = []
    for url in urls:
        with tarfile.open(url) as tar:
            got: dict[str, dict[str, bytes]] = {}
            for m in tar:
                key, _, ext = m.name.partition(".")
                got.setdefault(key, {})[ext] = tar.extractfile(m).read()
        out += [(g["flac"], g["jpg"]) for g in got.values()]
    return out


def bare(samples: list[tuple[bytes, bytes]], clip: int, size: int) -> float:
    import random
    from bestiary.training.data import _audio, _image
    rng = random.Random(0)
    t = time.perf_counter()
    for flac, jpg in samples:
        _audio(flac, clip, True, rng)
        _image(jpg, size, True, rng)
    return len(samples) / (time.perf_counter() - t)


def loader(shards: str, workers: int, batch: int, clip: int, size: int, epochs: int) -> float:
    from bestiary.training.data import DataConfig, make_loader
    cfg = DataConfig(shards, ("train",), batch, workers, clip, size, shuffle_buffer=0, train=True, augment=True)
    it = iter(make_loader(cfg, epochs=epochs))
    first = next(it)  # workers started and warm: what a training step sees
    n, t = 0, time.perf_counter()
    for b in it:
        n += len(b["text"])
    del first
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default=os.path.join(ROOT, "demo_out", "shards"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from bestiary.training.data import read_manifest, shard_urls
    manifest = read_manifest(a.shards)
    clip = manifest.clip_samples
    urls = shard_urls(a.shards, ("train",))
    samples = members(urls) * a.epochs
    base = bare(samples, clip, a.size)
    one = loader(a.shards, 1, a.batch, clip, a.size, a.epochs)
    two = loader(a.shards, 2, a.batch, clip, a.size, a.epochs)
    print(f"{len(samples)} samples ({len(urls)} shards x {a.epochs} epochs), clips of {clip} samples, images {a.size}px")
    print(f"bare FLAC + JPEG decode, 1 process: {base:.1f} samples/s")
    print(f"training loader, 1 worker:           {one:.1f} samples/s = {one / base:.2f}x the bare decode (goal >= 0.9)")
    print(f"training loader, 2 workers:          {two:.1f} samples/s = {two / one:.2f}x 1 worker (goal >= 1.7)")


if __name__ == "__main__":
    main()
