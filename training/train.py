"""`bestiary train`: tri-modal contrastive training on the shards (CPU, one GPU, or torchrun DDP).

Resume is exact: the data stream is cut into segments of `checkpoint_every`
steps, each drawn from shards resampled with a seed of its own (seed, segment),
and checkpoints land on segment boundaries with every RNG state; so 20 steps
equal 10 steps, a resume, and 10 more, weight for weight.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import tarfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from bestiary.training import distributed as dist
from bestiary.training.data import DataConfig, make_loader, shard_urls
from bestiary.training.encoders import ModelConfig, TriModal
from bestiary.training.losses import taxonomy_targets, trimodal_loss
from bestiary.training.tokenizer import Tokenizer
from bestiary.training.traits import trait_loss


@dataclass(frozen=True)
class TrainConfig:
    shards_dir: str
    out_dir: str
    steps: int = 300
    batch_size: int = 32              # per rank, per micro-batch
    accumulate: int = 1               # micro-batches per optimizer step
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 20
    workers: int = 1
    shuffle_buffer: int = 256         # samples; 0: read in shard order
    seed: int = 0
    image_size: int = 64
    clip_seconds: float = 10.0
    log_every: int = 10
    checkpoint_every: int = 100
    precision: str = "auto"           # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16
    augment: bool = True              # random crop, flip and caption kind; off: fixed, for exact comparisons
    taxonomy_loss: bool = False       # AnimalCLAP: relatives (same genus 0.5, family 0.25) as soft positives
    trait_loss: float = 0.0           # weight of the trait heads' auxiliary loss (0: no heads)
    stage: str = "joint"              # BioVITA: "audio" = stage 1, audio onto a frozen image-text space; "joint" = 2
    init: str | None = None           # start from this checkpoint's weights (stage 2 from stage 1, say)
    log_keys: bool = False            # write the sample keys each rank trained on (keys-rank{r}.jsonl)
    pair_weights: dict = field(default_factory=lambda: {"audio_text": 1.0, "audio_image": 1.0, "image_text": 1.0})
    model: ModelConfig = ModelConfig()


def captions_of(shards_dir: str, splits: tuple[str, ...] = ("train",)) -> list[str]:
    """Every caption of every training sample (the tokenizer's corpus)."""
    texts = []
    for url in shard_urls(shards_dir, splits):
        with tarfile.open(url) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    texts += [c["text"] for c in json.loads(tar.extractfile(m).read())["captions"]]
    return texts


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
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    """Written to a temporary file and renamed: a kill never leaves half a checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_model(path: str, device: str = "cpu") -> tuple[TriModal, Tokenizer, dict]:
    state = torch.load(path, map_location=device, weights_only=False)
    model = TriModal(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Tokenizer.from_state(state["tokenizer"]), state


def _pair_weights(cfg: TrainConfig) -> dict[tuple[str, str], float]:
    return {tuple(k.split("_")): float(v) for k, v in cfg.pair_weights.items()}


def segment_loader(cfg: TrainConfig, mcfg: ModelConfig, step: int):
    """The data stream for the segment that starts at `step` (its own seed: resume needs no cursor)."""
    segment = step // cfg.checkpoint_every
    data = DataConfig(cfg.shards_dir, ("train",), cfg.batch_size, cfg.workers, int(cfg.clip_seconds * mcfg.sample_rate),
                      cfg.image_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed * 100003 + segment,
                      augment=cfg.augment)
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


def freeze_for_stage(model: TriModal, stage: str) -> list[torch.nn.Parameter]:
    """BioVITA stage 1 ("audio") trains the audio encoder and its projection onto a frozen image-text space;
    stage 2 ("joint") trains everything.  Returns the parameters to optimise."""
    if stage not in ("audio", "joint"):
        raise ValueError(f"unknown stage {stage!r} (audio or joint)")
    for name, p in model.named_parameters():
        p.requires_grad = stage == "joint" or name.startswith(("audio.", "audio_proj."))
    return [p for p in model.parameters() if p.requires_grad]


def setup_state(cfg: TrainConfig, resume: bool, device: str) -> tuple[TrainState, dict | None]:
    ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=False) if resume and os.path.exists(ckpt_path) else None
    if saved:
        tok = Tokenizer.from_state(saved["tokenizer"])
    elif cfg.model.text_encoder == "hf":
        from bestiary.training.pretrained import HFTokenizer
        tok = HFTokenizer(cfg.model.text_weights)
    else:
        tok = Tokenizer.train(captions_of(cfg.shards_dir))
    mcfg = ModelConfig(**{**asdict(cfg.model), "vocab_size": len(tok.vocab), "max_len": tok.max_len,
                          "trait_heads": cfg.trait_loss > 0, "pad_id": getattr(tok, "pad_id", 0)})
    model = TriModal(mcfg).to(device)
    if cfg.init and not saved:
        model.load_state_dict(torch.load(cfg.init, map_location="cpu", weights_only=False)["model"])
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
        set_rng_state(saved["rng"])
    return st, saved


def checkpoint(cfg: TrainConfig, st: TrainState) -> None:
    raw = st.model.module if hasattr(st.model, "module") else st.model
    save_checkpoint(os.path.join(cfg.out_dir, "checkpoint.pt"), {
        "model": raw.state_dict(), "optimizer": st.opt.state_dict(), "step": st.step, "rng": rng_state(),
        "tokenizer": st.tok.state(), "model_config": st.mcfg.to_dict(),
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"}})


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
            emb = {"audio": raw.encode_audio(batch["audio"].to(device)),
                   "image": raw.encode_image(batch["image"].to(device)),
                   "text": raw.encode_text(st.tok.encode(batch["text"]).to(device))}
        emb = {k: v.float() for k, v in emb.items()}
        emb_local_audio = emb["audio"]
        labels = {k: batch[k] for k in ("species", "genus", "family")}
        if dist.world_size() > 1:  # contrast against every rank's samples; gradients flow back through the gather
            emb = {k: dist.gather_with_grad(v) for k, v in emb.items()}
            labels = {k: dist.gather_objects(v) for k, v in labels.items()}
        targets = taxonomy_targets(labels["species"], labels["genus"], labels["family"]) if cfg.taxonomy_loss else None
        loss, parts = trimodal_loss(emb, raw.logit_scale, weights, targets)
        if cfg.trait_loss > 0:  # per rank: the heads need no negatives from other ranks
            traits = trait_loss(raw.traits, emb_local_audio, batch["traits"])
            parts["traits"] = float(traits.detach())
            loss = loss + cfg.trait_loss * traits
        (loss / cfg.accumulate).backward()
        total += loss.item() / cfg.accumulate
        seen += len(batch["text"])
        if cfg.log_keys:
            with open(os.path.join(cfg.out_dir, f"keys-rank{dist.rank()}.jsonl"), "a") as fh:
                fh.write(json.dumps({"step": st.step, "keys": batch["key"], "loss": loss.item()}) + "\n")
    dist.average_gradients(raw)
    torch.nn.utils.clip_grad_norm_([p for p in raw.parameters() if p.requires_grad], 1.0)
    st.opt.step()
    st.step += 1
    return total, parts, seen, wait


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train to `cfg.steps` (or stop early at `stop_at`, for tests of resume)."""
    os.makedirs(cfg.out_dir, exist_ok=True)
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
            log.write([st.step, loss] + [parts.get(k, float("nan")) for k in ("audio_text", "audio_image", "image_text", "traits")]
                      + [lr_at(st.step - 1, cfg), rate, share])
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
            "checkpoint": os.path.join(cfg.out_dir, "checkpoint.pt"), "losses": history}


COLUMNS = ["step", "loss", "audio_text", "audio_image", "image_text", "traits", "lr", "samples_per_s", "data_wait"]


class RunLog:
    """log.csv and TensorBoard event files (OUT/tb) with the same scalars; rank 0 only."""

    def __init__(self, cfg: TrainConfig, append: bool):
        self.active = dist.is_main()
        if not self.active:
            return
        path = os.path.join(cfg.out_dir, "log.csv")
        fresh = not (append and os.path.exists(path))
        self.fh = open(path, "w" if fresh else "a", newline="")
        self.csv = csv.writer(self.fh)
        if fresh:
            self.csv.writerow(COLUMNS)
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(os.path.join(cfg.out_dir, "tb"))

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
