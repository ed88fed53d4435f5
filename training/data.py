"""Streaming the shards: a WebDataset pipeline split by rank and worker.

Shards are listed by the manifest (a folder or any URL: http(s)://, s3://,
gs://), or given as a brace pattern; each epoch visits them in an order drawn
from (seed, epoch), split across ranks then loader workers, so ranks see
disjoint samples.  Each worker opens its shards itself (training/storage.py,
optionally through a local shard cache) and decodes FLAC, JPEG and the caption
choice; batches come back page-locked for non-blocking copies to the GPU.
"""
from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import warnings

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from bestiary.schemas.manifest import Manifest
from bestiary.training import storage
from bestiary.training.tombstones import Tombstones


@dataclass(frozen=True)
class DataConfig:
    shards_dir: str                   # the shards' folder or URL, or a brace pattern of shard URLs
    splits: tuple[str, ...] = ("train",)
    batch_size: int = 32
    workers: int = 1
    clip_samples: int = 480000        # 10 s at 48 kHz: set from the manifest by train and eval
    image_size: int = 64
    shuffle_buffer: int = 256
    seed: int = 0
    train: bool = True                # training stream: split by rank, shuffled, endless; else one pass
    augment: bool = True              # random crop, flips, random caption kind (training only)
    shard_cache: str | None = None    # keep a local copy of each remote shard here
    pin_memory: bool = False          # page-locked batches (for non-blocking copies to a GPU)


def _is_pattern(spec: str) -> bool:
    return "{" in spec or spec.endswith(".tar")


def manifest_location(spec: str) -> str:
    """Where the manifest is: in the shards' folder, or beside the shards a pattern names."""
    if _is_pattern(spec):
        base = spec.split("{", 1)[0]
        return storage.join(base.rsplit("/", 1)[0] if "/" in base else ".", "manifest.json")
    return storage.join(spec, "manifest.json")


def read_manifest(spec: str) -> Manifest:
    where = manifest_location(spec)
    try:
        return Manifest.model_validate_json(storage.read_bytes(where))
    except FileNotFoundError:
        raise FileNotFoundError(f"no manifest at {where} (the shards' folder holds manifest.json)") from None


def shard_urls(spec: str, splits: tuple[str, ...]) -> list[str]:
    """The shards of these splits: the manifest's, in its order, or those a brace pattern names."""
    manifest = read_manifest(spec)
    if _is_pattern(spec):
        named = {os.path.basename(u): u for u in storage.expand(spec)}
        return [named[s.file] for s in manifest.shards_of(splits) if s.file in named]
    return [storage.join(spec, s.file) for s in manifest.shards_of(splits)]


def split_samples(spec: str, splits: tuple[str, ...]) -> int:
    return read_manifest(spec).live_samples(splits)


def tombstones(spec: str) -> Tombstones:
    """The dataset's tombstones, read one shard's sidecar at a time (training/tombstones.py)."""
    return Tombstones(manifest_location(spec), read_manifest(spec))


def deleted_keys(spec: str) -> set[str]:
    """Every tombstone, '{shard file}/{sample key}': samples of records changed or deleted since their shard
    (all shards' sidecars at once: for tools and tests; the loader reads one shard's at a time)."""
    tombs = tombstones(spec)
    return {f"{f}/{k}" for f in tombs.files() for k in tombs.of(f)}


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

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        if self._rng is None:  # per rank and worker, so forked workers do not repeat each other
            info = torch.utils.data.get_worker_info()
            rank = int(os.environ.get("RANK", "0"))
            self._rng = random.Random(self.cfg.seed * 7919 + rank * 131 + (info.id if info else 0))
        return self._rng

    def __call__(self, sample: dict) -> dict:
        meta = json.loads(sample["json"])
        aug = self.cfg.train and self.cfg.augment
        text = self.rng.choice(meta["captions"])["text"] if aug else sample["txt"].decode("utf-8")
        taxon = meta["taxon"]
        return {
            "key": sample["__key__"],
            "audio": _audio(sample["flac"], self.cfg.clip_samples, aug, self.rng),
            # an audio-text sample has no jpg: a blank image that has_image keeps out of the image terms
            "image": _image(sample["jpg"], self.cfg.image_size, aug, self.rng) if sample.get("jpg")
            else torch.zeros(3, self.cfg.image_size, self.cfg.image_size),
            "has_image": bool(sample.get("jpg")),
            "text": text,
            "species": taxon["accepted_name"],
            "genus": taxon["lineage"].get("genus"),
            "family": taxon["lineage"].get("family"),
            "traits": meta.get("traits") or {},
            "meta": meta,
        }


class OpenShards:
    """{"url"} -> {"url", "stream"}: each worker opens its own shards (through the shard cache when set)."""

    def __init__(self, cache: str | None, sha256: dict[str, str]):
        self.cache, self.sha256 = cache, sha256

    def __call__(self, src):
        cache = storage.ShardCache(self.cache, self.sha256) if self.cache else None
        for sample in src:
            url = sample["url"]
            try:
                stream = storage.open_url(cache.get(url) if cache else url)
            except Exception as err:  # noqa: BLE001 - a shard that cannot be read is skipped, with a warning
                warnings.warn(f"shard {url}: {type(err).__name__}: {err}", stacklevel=1)
                continue
            yield {"url": url, "stream": stream}


def collate(samples: list[dict]) -> dict:
    out = {"audio": torch.stack([s["audio"] for s in samples]), "image": torch.stack([s["image"] for s in samples]),
           "has_image": torch.tensor([s["has_image"] for s in samples], dtype=torch.bool)}
    for k in ("key", "text", "species", "genus", "family", "traits", "meta"):
        out[k] = [s[k] for s in samples]
    return out


def make_pipeline(cfg: DataConfig, epochs: int | None = None) -> wds.DataPipeline:
    manifest = read_manifest(cfg.shards_dir)
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
    stages += [OpenShards(cfg.shard_cache, {s.file: s.sha256 for s in manifest.shards}),
               wds.pipelinefilter(tar_file_expander)(handler=wds.warn_and_continue),
               wds.pipelinefilter(group_by_keys)(handler=wds.warn_and_continue)]
    tombs = Tombstones(manifest_location(cfg.shards_dir), manifest)
    if tombs:   # shard by shard, before the shuffle buffer mixes shards
        stages.append(tombs)
    if cfg.train and cfg.shuffle_buffer > 1:
        stages.append(wds.shuffle(cfg.shuffle_buffer, initial=min(64, cfg.shuffle_buffer), rng=random.Random(cfg.seed)))
    stages += [wds.map(Decode(cfg)),
               wds.batched(cfg.batch_size, collation_fn=collate, partial=not cfg.train)]
    return wds.DataPipeline(*stages)


def make_loader(cfg: DataConfig, epochs: int | None = None) -> torch.utils.data.DataLoader:
    pipe = make_pipeline(cfg, epochs)
    return torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=cfg.workers,
                                       persistent_workers=False, prefetch_factor=4 if cfg.workers else None,
                                       pin_memory=cfg.pin_memory and torch.cuda.is_available())
