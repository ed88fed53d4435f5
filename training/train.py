"""`bestiary train`: tri-modal contrastive training on the shards (CPU, one GPU, or torchrun DDP).

Resume is exact: the data stream is cut into segments of `checkpoint_every`
steps, each drawn from shards resampled with a seed of its own (seed, segment),
and checkpoints land on segment boundaries with every RNG state; so 20 steps
equal 10 steps, a resume, and 10 more, weight for weight.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import tarfile
import time
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from bestiary.schemas.manifest import Manifest, check_audio
from bestiary.training import distributed as dist
from bestiary.training import storage
from bestiary.training.config import ModelConfig, TrainConfig  # noqa: F401 (TrainConfig: callers import it here)
from bestiary.training.data import DataConfig, make_loader, read_manifest, shard_urls
from bestiary.training.encoders import TriModal
from bestiary.training.losses import taxonomy_targets, trimodal_loss
from bestiary.training.tokenizer import SubwordTokenizer, Tokenizer
from bestiary.training.traits import trait_loss


def captions_of(shards: str, splits: tuple[str, ...] = ("train",)) -> list[str]:
    """Every caption of every training sample: a tokenizer corpus for shards from a build that shipped none."""
    texts = []
    for url in shard_urls(shards, splits):
        with storage.open_url(url) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    texts += [c["text"] for c in json.loads(tar.extractfile(m).read())["captions"]]
    return texts


def tokenizer_for(shards: str, manifest: Manifest, max_len: int = 32) -> SubwordTokenizer:
    """The build's subword tokenizer, beside the manifest; for older shards, one trained on their captions
    here (a full read of the training shards: it warns)."""
    if manifest.tokenizer:
        from bestiary.training.data import manifest_location
        spec = storage.read_bytes(storage.sibling(manifest_location(shards), manifest.tokenizer)).decode()
        return SubwordTokenizer(spec, max_len)
    warnings.warn("these shards ship no tokenizer (an older build): training one on their captions", stacklevel=2)
    from bestiary.captioning.vocabulary import train_subword, words
    counts: dict[str, int] = {}
    for text in captions_of(shards):
        for w in words(text):
            counts[w] = counts.get(w, 0) + 1
    return SubwordTokenizer(train_subword(counts), max_len)



def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain lists, so `torch.load` (weights_only) reads a checkpoint."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    """Written to a temporary file and renamed: a kill never leaves half a checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str, device: str = "cpu") -> dict:
    """A checkpoint from a path or URL; plain `torch.load` reads it too (tensors, numbers, strings, lists)."""
    data = storage.read_bytes(path) if "://" in path else None
    return torch.load(io.BytesIO(data) if data is not None else path, map_location=device, weights_only=True)


def model_from_state(state: dict, device: str = "cpu") -> tuple[TriModal, object]:
    model = TriModal(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Tokenizer.from_state(state["tokenizer"])


def load_model(path: str, device: str = "cpu") -> tuple[TriModal, object, dict]:
    state = read_checkpoint(path, device)
    model, tok = model_from_state(state, device)
    return model, tok, state


def _pair_weights(cfg: TrainConfig) -> dict[tuple[str, str], float]:
    return {tuple(k.split("_")): float(v) for k, v in cfg.pair_weights.items()}


def segment_loader(cfg: TrainConfig, mcfg: ModelConfig, step: int):
    """The data stream for the segment that starts at `step` (its own seed: resume needs no cursor)."""
    segment = step // cfg.checkpoint_every
    data = DataConfig(cfg.shards, ("train",), cfg.batch_size, cfg.workers, int(round(mcfg.clip_seconds * mcfg.sample_rate)),
                      cfg.image_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed * 100003 + segment,
                      augment=cfg.augment, shard_cache=cfg.shard_cache, pin_memory=cfg.pin_memory)
    return iter(make_loader(data))


def autocast(cfg: TrainConfig, device: str):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device == "cuda")
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


@dataclass
class TrainState:
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    tok: Tokenizer
    mcfg: ModelConfig
    step: int = 0
    species: set = field(default_factory=set)   # accepted names trained on (bounded by species)


def freeze_for_stage(model: TriModal, stage: str) -> list[torch.nn.Parameter]:
    """BioVITA stage 1 ("audio") trains the audio encoder and its projection onto a frozen image-text space;
    stage 2 ("joint") trains everything.  Returns the parameters to optimise."""
    if stage not in ("audio", "joint"):
        raise ValueError(f"unknown stage {stage!r} (audio or joint)")
    for name, p in model.named_parameters():
        p.requires_grad = stage == "joint" or name.startswith(("audio.", "audio_proj."))
    return [p for p in model.parameters() if p.requires_grad]


def setup_state(cfg: TrainConfig, resume: bool, device: str) -> tuple[TrainState, dict | None]:
    manifest = read_manifest(cfg.shards)
    ckpt_path = run_path(cfg, "checkpoint.pt")
    saved = read_checkpoint(ckpt_path) if resume and storage.exists(ckpt_path) else None
    if saved:
        tok = Tokenizer.from_state(saved["tokenizer"])
    elif cfg.model.text_encoder == "hf":
        from bestiary.training.pretrained import HFTokenizer
        tok = HFTokenizer(cfg.model.text_weights)
    else:
        tok = tokenizer_for(cfg.shards, manifest)
    mcfg = ModelConfig(**{**cfg.model.model_dump(), "vocab_size": len(tok.vocab), "max_len": tok.max_len,
                          "trait_heads": cfg.trait_loss > 0, "pad_id": getattr(tok, "pad_id", 0),
                          "sample_rate": manifest.sample_rate,
                          "clip_seconds": cfg.clip_seconds or manifest.clip_seconds})
    for other, where in ((saved, "the checkpoint to resume"),
                         (read_checkpoint(cfg.init) if cfg.init and not saved else None, f"--init {cfg.init}")):
        if other:
            m = other["model_config"]
            check_audio(m.get("sample_rate", 48000), m.get("clip_seconds", 10.0), manifest, where)
    model = TriModal(mcfg).to(device)
    if cfg.init and not saved:
        model.load_state_dict(read_checkpoint(cfg.init)["model"])
    trainable = freeze_for_stage(model, cfg.stage)
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    st = TrainState(model, opt, tok, mcfg)
    if saved:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        st.step = saved["step"]
        st.species = set(saved.get("species") or [])
        set_rng_state(saved["rng"])
    return st, saved


def local_dir(cfg: TrainConfig) -> str:
    """Where the run's files are written: `out` itself, or a local staging folder when `out` is s3://."""
    if "://" not in cfg.out:
        return cfg.out
    import hashlib
    return os.path.join(tempfile.gettempdir(), "bestiary-runs", hashlib.sha256(cfg.out.encode()).hexdigest()[:16])


def run_path(cfg: TrainConfig, name: str) -> str:
    return storage.join(cfg.out, name)


def checkpoint(cfg: TrainConfig, st: TrainState) -> None:
    raw = st.model.module if hasattr(st.model, "module") else st.model
    local = os.path.join(local_dir(cfg), "checkpoint.pt")
    save_checkpoint(local, {
        "model": raw.state_dict(), "optimizer": st.opt.state_dict(), "step": st.step, "rng": rng_state(),
        "tokenizer": st.tok.state(), "model_config": st.mcfg.to_dict(), "species": sorted(st.species),
        "train_config": cfg.model_dump(mode="json", exclude={"model"})})
    if "://" in cfg.out:  # a remote run folder gets the checkpoint and the log after each save
        for name in ("checkpoint.pt", "log.csv"):
            path = os.path.join(local_dir(cfg), name)
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    storage.write_bytes(run_path(cfg, name), fh.read())


def train_step(cfg: TrainConfig, st: TrainState, loader, device: str, weights) -> tuple[float, dict, int, float]:
    """One optimizer step over `accumulate` micro-batches; (loss, parts, samples, seconds waiting for data)."""
    raw = st.model.module if hasattr(st.model, "module") else st.model
    for g in st.opt.param_groups:
        g["lr"] = lr_at(st.step, cfg)
    st.opt.zero_grad(set_to_none=True)
    total, parts, seen, wait = 0.0, {}, 0, 0.0
    for _ in range(cfg.accumulate):
        t0 = time.perf_counter()
        batch = next(loader)
        wait += time.perf_counter() - t0
        with autocast(cfg, device):
            emb = {"audio": raw.encode_audio(batch["audio"].to(device, non_blocking=True)),
                   "image": raw.encode_image(batch["image"].to(device, non_blocking=True)),
                   "text": raw.encode_text(st.tok.encode(batch["text"]).to(device))}
        emb = {k: v.float() for k, v in emb.items()}
        emb_local_audio = emb["audio"]
        labels = {k: batch[k] for k in ("species", "genus", "family")}
        has_image = batch["has_image"]
        if dist.world_size() > 1:  # contrast against every rank's samples; gradients flow back through the gather
            emb = {k: dist.gather_with_grad(v) for k, v in emb.items()}
            labels = {k: dist.gather_objects(v) for k, v in labels.items()}
            has_image = torch.tensor(dist.gather_objects(has_image.tolist()), dtype=torch.bool)
        st.species.update(labels["species"])   # every rank's: rank 0 writes the checkpoint
        targets = taxonomy_targets(labels["species"], labels["genus"], labels["family"]) if cfg.taxonomy_loss else None
        loss, parts = trimodal_loss(emb, raw.logit_scale, weights, targets, has_image)
        if cfg.trait_loss > 0:  # per rank: the heads need no negatives from other ranks
            traits = trait_loss(raw.traits, emb_local_audio, batch["traits"])
            parts["traits"] = float(traits.detach())
            loss = loss + cfg.trait_loss * traits
        (loss / cfg.accumulate).backward()
        total += loss.item() / cfg.accumulate
        seen += len(batch["text"])
        if cfg.log_keys:
            with open(os.path.join(local_dir(cfg), f"keys-rank{dist.rank()}.jsonl"), "a") as fh:
                fh.write(json.dumps({"step": st.step, "keys": batch["key"], "loss": loss.item()}) + "\n")
    dist.average_gradients(raw)
    torch.nn.utils.clip_grad_norm_([p for p in raw.parameters() if p.requires_grad], 1.0)
    st.opt.step()
    st.step += 1
    return total, parts, seen, wait


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train to `cfg.steps` (or stop early at `stop_at`, for tests of resume)."""
    os.makedirs(local_dir(cfg), exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seed_all(cfg.seed)
    st, saved = setup_state(cfg, resume, device)
    weights = _pair_weights(cfg)
    log = RunLog(cfg, resume and saved is not None)
    end = min(cfg.steps, stop_at or cfg.steps)
    bar = tqdm(total=cfg.steps, initial=st.step, disable=not progress or not dist.is_main(), desc="train", unit="step")
    st.model.train()
    history, wait, busy, seen = [], 0.0, 0.0, 0
    loader = segment_loader(cfg, st.mcfg, st.step) if st.step < end else None
    while st.step < end:
        t0 = time.perf_counter()
        loss, parts, n, waited = train_step(cfg, st, loader, device, weights)
        elapsed = time.perf_counter() - t0
        wait, busy, seen = wait + waited, busy + elapsed - waited, seen + n
        history.append(loss)
        if (st.step % cfg.log_every == 0 or st.step == end) and dist.is_main():
            rate, share = seen * dist.world_size() / (wait + busy), wait / (wait + busy)
            raw = st.model.module if hasattr(st.model, "module") else st.model
            log.write([st.step, loss] + [parts.get(k, float("nan")) for k in ("audio_text", "audio_image", "image_text", "traits")]
                      + [lr_at(st.step - 1, cfg), rate, share, float(1 / raw.logit_scale.detach().exp())])
            bar.set_postfix(loss=f"{loss:.3f}", sps=f"{rate:.1f}", wait=f"{share:.0%}")
            wait = busy = 0.0
            seen = 0
        bar.update(1)
        if st.step % cfg.checkpoint_every == 0 or st.step == cfg.steps:
            if dist.is_main():
                checkpoint(cfg, st)
            if st.step < end:
                loader = segment_loader(cfg, st.mcfg, st.step)  # a new segment, seeded on its own
    bar.close()
    log.close()
    return {"steps": st.step, "first_loss": history[0] if history else None,
            "last_loss": float(np.mean(history[-10:])) if history else None,
            "checkpoint": run_path(cfg, "checkpoint.pt"), "losses": history}


COLUMNS = ["step", "loss", "audio_text", "audio_image", "image_text", "traits", "lr", "samples_per_s", "data_wait",
           "temperature"]


class RunLog:
    """log.csv and TensorBoard event files (OUT/tb) with the same scalars; rank 0 only."""

    def __init__(self, cfg: TrainConfig, append: bool):
        self.active = dist.is_main()
        if not self.active:
            return
        path = os.path.join(local_dir(cfg), "log.csv")
        fresh = not (append and os.path.exists(path))
        self.fh = open(path, "w" if fresh else "a", newline="")
        self.csv = csv.writer(self.fh)
        if fresh:
            self.csv.writerow(COLUMNS)
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(os.path.join(local_dir(cfg), "tb"))

    def write(self, values: list) -> None:
        if not self.active:
            return
        self.csv.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in values])
        self.fh.flush()
        for name, v in zip(COLUMNS[1:], values[1:]):
            if v == v:  # NaN: a pair that is switched off
                self.tb.add_scalar(f"train/{name}", v, values[0])

    def close(self) -> None:
        if self.active:
            self.fh.close()
            self.tb.close()
