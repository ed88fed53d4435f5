"""`bestiary train`: tri-modal contrastive training on the shards (CPU or one GPU for now)."""
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

from bestiary.training.data import DataConfig, make_loader, shard_urls
from bestiary.training.encoders import ModelConfig, TriModal
from bestiary.training.losses import trimodal_loss
from bestiary.training.tokenizer import Tokenizer


@dataclass(frozen=True)
class TrainConfig:
    shards_dir: str
    out_dir: str
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 20
    workers: int = 1
    seed: int = 0
    image_size: int = 64
    clip_seconds: float = 10.0
    log_every: int = 10
    checkpoint_every: int = 100
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


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    os.makedirs(cfg.out_dir, exist_ok=True)
    seed_all(cfg.seed)
    ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if resume and os.path.exists(ckpt_path) else None
    tok = Tokenizer.from_state(state["tokenizer"]) if state else Tokenizer.train(captions_of(cfg.shards_dir))
    mcfg = ModelConfig(**{**asdict(cfg.model), "vocab_size": len(tok.vocab), "max_len": tok.max_len})
    model = TriModal(mcfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step = 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    data = DataConfig(cfg.shards_dir, ("train",), cfg.batch_size, cfg.workers,
                      int(cfg.clip_seconds * mcfg.sample_rate), cfg.image_size, seed=cfg.seed + step)
    loader = iter(make_loader(data))
    weights = _pair_weights(cfg)
    log_path = os.path.join(cfg.out_dir, "log.csv")
    new_log = not (resume and os.path.exists(log_path))
    logf = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["step", "loss", "audio_text", "audio_image", "image_text", "lr", "samples_per_s", "data_wait"])
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", unit="step")
    model.train()
    history, wait, busy, seen = [], 0.0, 0.0, 0
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        emb = {"audio": model.encode_audio(batch["audio"].to(device)),
               "image": model.encode_image(batch["image"].to(device)),
               "text": model.encode_text(tok.encode(batch["text"]).to(device))}
        loss, parts = trimodal_loss(emb, model.logit_scale, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        t2 = time.perf_counter()
        wait, busy, seen = wait + (t1 - t0), busy + (t2 - t1), seen + len(batch["text"])
        loss_value = loss.item()
        history.append(loss_value)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate, share = seen / (wait + busy), wait / (wait + busy)
            writer.writerow([step, f"{loss_value:.4f}"] + [f"{parts.get(k, float('nan')):.4f}" for k in
                            ("audio_text", "audio_image", "image_text")] + [f"{lr_at(step - 1, cfg):.6f}", f"{rate:.1f}", f"{share:.3f}"])
            logf.flush()
            bar.set_postfix(loss=f"{loss_value:.3f}", sps=f"{rate:.1f}", wait=f"{share:.0%}")
            wait = busy = 0.0
            seen = 0
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                        "tokenizer": tok.state(), "model_config": mcfg.to_dict(),
                                        "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"}})
    bar.close()
    logf.close()
    return {"steps": step, "first_loss": history[0] if history else None,
            "last_loss": float(np.mean(history[-10:])) if history else None, "checkpoint": ckpt_path}
