"""Streaming the shards: a WebDataset pipeline split by rank and worker.

Shards are listed by the manifest; each epoch visits them in an order drawn
from (seed, epoch), split across ranks then loader workers, so ranks see
disjoint samples.  Decoding (FLAC, JPEG, caption choice) runs in the workers.
"""
from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image


@dataclass(frozen=True)
class DataConfig:
    shards_dir: str
    splits: tuple[str, ...] = ("train",)
    batch_size: int = 32
    workers: int = 1
    clip_samples: int = 480000        # 10 s at 48 kHz
    image_size: int = 64
    shuffle_buffer: int = 256
    seed: int = 0
    train: bool = True                # training stream: split by rank, shuffled, endless; else one pass
    augment: bool = True              # random crop, flips, random caption kind (training only)


def read_manifest(shards_dir: str) -> dict:
    with open(os.path.join(shards_dir, "manifest.json")) as fh:
        return json.load(fh)


def shard_urls(shards_dir: str, splits: tuple[str, ...]) -> list[str]:
    manifest = read_manifest(shards_dir)
    return [os.path.join(shards_dir, s["file"]) for s in manifest["shards"] if s["split"] in splits and s["samples"]]


def split_samples(shards_dir: str, splits: tuple[str, ...]) -> int:
    m = read_manifest(shards_dir)
    files = {s["file"] for s in m["shards"] if s["split"] in splits}
    dead = sum(1 for d in m.get("deleted", []) if d.split("/", 1)[0] in files)
    return sum(s["samples"] for s in m["shards"] if s["split"] in splits) - dead


def deleted_keys(shards_dir: str) -> set[str]:
    """Tombstones, '{shard file}/{sample key}': samples of records changed or deleted since their shard."""
    return set(read_manifest(shards_dir).get("deleted", []))


class EpochShards(torch.utils.data.IterableDataset):
    """Shard URLs epoch after epoch, each epoch in its own seeded order (endless when epochs is None).

    Every rank and worker draws the same order, then takes its own slice of it."""

    def __init__(self, urls: list[str], seed: int, epochs: int | None):
        self.urls, self.seed, self.epochs = list(urls), seed, epochs

    def __iter__(self) -> Iterator[dict]:
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = list(self.urls)
            random.Random(self.seed * 1000003 + epoch).shuffle(order)
            for u in order:
                yield {"url": u}
            epoch += 1


def _audio(flac: bytes, n: int, train: bool, rng: random.Random) -> torch.Tensor:
    data, _ = sf.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if len(x) > n:
        start = rng.randrange(len(x) - n + 1) if train else (len(x) - n) // 2
        x = x[start:start + n]
    elif len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    return torch.from_numpy(np.ascontiguousarray(x))


def _image(jpg: bytes, size: int, train: bool, rng: random.Random) -> torch.Tensor:
    img = Image.open(io.BytesIO(jpg)).convert("RGB")
    if train:  # random resized crop (80-100 % of the short side) and horizontal flip
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.8, 1.0))
        x0, y0 = rng.randrange(w - side + 1), rng.randrange(h - side + 1)
        img = img.crop((x0, y0, x0 + side, y0 + side))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        w, h = img.size
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (arr - 0.5) / 0.25


class Decode:
    """Raw tar sample -> dict of tensors and text (a picklable callable for loader workers)."""

    def __init__(self, cfg: DataConfig, skip: set[str]):
        self.cfg, self.skip = cfg, skip
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        if self._rng is None:  # per rank and worker, so forked workers do not repeat each other
            info = torch.utils.data.get_worker_info()
            rank = int(os.environ.get("RANK", "0"))
            self._rng = random.Random(self.cfg.seed * 7919 + rank * 131 + (info.id if info else 0))
        return self._rng

    def __call__(self, sample: dict) -> dict | None:
        if self.skip and f"{os.path.basename(sample.get('__url__', ''))}/{sample['__key__']}" in self.skip:
            return None
        meta = json.loads(sample["json"])
        aug = self.cfg.train and self.cfg.augment
        text = self.rng.choice(meta["captions"])["text"] if aug else sample["txt"].decode("utf-8")
        taxon = meta["taxon"]
        return {
            "key": sample["__key__"],
            "audio": _audio(sample["flac"], self.cfg.clip_samples, aug, self.rng),
            "image": _image(sample["jpg"], self.cfg.image_size, aug, self.rng),
            "text": text,
            "species": taxon["accepted_name"],
            "genus": taxon["lineage"].get("genus"),
            "family": taxon["lineage"].get("family"),
            "traits": meta.get("traits") or {},
            "meta": meta,
        }


def _drop_none(src):
    for s in src:
        if s is not None:
            yield s


def collate(samples: list[dict]) -> dict:
    out = {"audio": torch.stack([s["audio"] for s in samples]), "image": torch.stack([s["image"] for s in samples])}
    for k in ("key", "text", "species", "genus", "family", "traits", "meta"):
        out[k] = [s[k] for s in samples]
    return out


def make_pipeline(cfg: DataConfig, epochs: int | None = None) -> wds.DataPipeline:
    urls = shard_urls(cfg.shards_dir, cfg.splits)
    if not urls:
        raise ValueError(f"no shards for splits {cfg.splits} in {cfg.shards_dir}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train and len(urls) < world * max(1, cfg.workers):
        raise ValueError(f"{len(urls)} shards for {world} rank(s) x {cfg.workers} worker(s): every reader needs "
                         "at least one shard; build more shards (shards.min_shards_per_split) or use fewer workers")
    stages = [EpochShards(urls, cfg.seed, epochs if cfg.train else 1)]
    if cfg.train:
        stages += [wds.split_by_node, wds.split_by_worker]
    else:
        stages += [wds.split_by_worker]
    stages += [wds.tarfile_to_samples(handler=wds.warn_and_continue)]
    if cfg.train and cfg.shuffle_buffer > 1:
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=min(64, cfg.shuffle_buffer), rng=random.Random(cfg.seed)))
    stages += [wds.map(Decode(cfg, deleted_keys(cfg.shards_dir))), _drop_none,
               wds.batched(cfg.batch_size, collation_fn=collate, partial=not cfg.train)]
    return wds.DataPipeline(*stages)


def make_loader(cfg: DataConfig, epochs: int | None = None) -> torch.utils.data.DataLoader:
    pipe = make_pipeline(cfg, epochs)
    return torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=cfg.workers,
                                       persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
