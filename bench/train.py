"""Training throughput against the data loader alone: the loader must not be the bottleneck.

Reads the shards `make demo` builds (or --shards).  Runs the loader alone for N
batches, then N training steps on the same stream settings, and prints samples/s
for each and their ratio (loader / training: above 1 means the model, not the data,
sets the pace).  On a machine with CUDA the training run uses bf16 autocast.

Usage: python bench/train.py [--shards demo_out/shards] [--steps 30] [--batch-size 32] [--workers 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bestiary.training.data import DataConfig, make_loader
from bestiary.training.encoders import ModelConfig
from bestiary.training.train import TrainConfig, train


def loader_rate(shards: str, steps: int, batch: int, workers: int) -> float:
    it = iter(make_loader(DataConfig(shards, ("train",), batch, workers, seed=1)))
    next(it)  # start-up (worker processes) is not throughput
    t0 = time.perf_counter()
    n = sum(len(next(it)["text"]) for _ in range(steps))
    return n / (time.perf_counter() - t0)


def train_rate(shards: str, steps: int, batch: int, workers: int) -> float:
    """Samples/s of `steps` training steps: a run of steps + 2 less a run of 2 (set-up, first batches)."""
    times = []
    for n in (2, steps + 2):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(shards=shards, out=tmp, steps=steps + 2, batch_size=batch, workers=workers, checkpoint_every=10**6,
                              log_every=10**6, model=ModelConfig())
            t0 = time.perf_counter()
            train(cfg, progress=False, stop_at=n)
            times.append(time.perf_counter() - t0)
    return steps * batch / (times[1] - times[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="demo_out/shards")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    device = "cuda (bf16)" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    data = loader_rate(a.shards, a.steps, a.batch_size, a.workers)
    model = train_rate(a.shards, a.steps, a.batch_size, a.workers)
    print(f"device: {device}; batch {a.batch_size}, {a.steps} steps, {a.workers} loader worker(s)")
    print(f"loader alone: {data:.1f} samples/s")
    print(f"training:     {model:.1f} samples/s")
    print(f"loader / training: {data / model:.2f}x (above 1: the loader is not the bottleneck)")


if __name__ == "__main__":
    main()
