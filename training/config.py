"""A training run's configuration: one typed, frozen object, from YAML, `--set key=value` and flags.

The defaults live here and only here: `bestiary train` flags default to "not given" and override the
YAML's values, which override these.  The audio settings (sample rate, clip length) come from the shards'
manifest unless a run asks otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bestiary.schemas.config import ConfigError, apply_override, describe, read_yaml


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelConfig(_Frozen):
    """The architecture (kept in every checkpoint and export, so a model rebuilds as it was trained)."""
    embed_dim: int = Field(512, ge=1)
    width: int = Field(32, ge=4)
    sample_rate: int = Field(48000, gt=0)   # set from the manifest when a run starts
    clip_seconds: float = Field(10.0, gt=0)
    n_fft: int = 1024
    hop: int = 960                 # 20 ms frames at 48 kHz
    n_mels: int = 64
    fmin: float = 100.0
    fmax: float = 16000.0
    text_layers: int = 2
    text_heads: int = 4
    vocab_size: int = 1000
    max_len: int = 32
    audio_encoder: str = "cnn"
    image_encoder: str = "cnn"
    text_encoder: str = "transformer"
    trait_heads: bool = False      # auxiliary trait heads on the audio embedding
    audio_weights: str | None = None   # local folders of pretrained weights (see pretrained.py)
    image_weights: str | None = None
    text_weights: str | None = None
    pad_id: int = 0

    def to_dict(self) -> dict:
        return self.model_dump()


class TrainConfig(_Frozen):
    shards: str                       # the shards' folder or URL (holds manifest.json)
    out: str                          # the run folder: checkpoint.pt, log.csv, tb/ (local, or s3:// for checkpoints)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)   # per rank, per micro-batch
    accumulate: int = Field(1, ge=1)    # micro-batches per optimizer step
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup: int = Field(20, ge=0)
    workers: int = Field(1, ge=0)       # data loader workers
    shuffle_buffer: int = Field(256, ge=0)   # samples; 0: read in shard order
    seed: int = 0
    image_size: int = Field(64, ge=8)
    clip_seconds: float | None = Field(None, gt=0)   # None: the manifest's
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast on CUDA, fp32 on the CPU
    augment: bool = True              # random crop, flip and caption kind; off: fixed, for exact comparisons
    taxonomy_loss: bool = False       # AnimalCLAP: relatives (same genus 0.5, family 0.25) as soft positives
    trait_loss: float = Field(0.0, ge=0)   # weight of the trait heads' auxiliary loss (0: no heads)
    stage: Literal["joint", "audio"] = "joint"   # BioVITA: "audio" onto a frozen image-text space, then "joint"
    init: str | None = None           # start from this checkpoint's weights (stage 2 from stage 1, say)
    log_keys: bool = False            # write the sample keys each rank trained on (keys-rank{r}.jsonl)
    shard_cache: str | None = None    # a local folder keeping a copy of each remote shard
    pin_memory: bool = True           # page-locked batches and non-blocking copies on CUDA
    pair_weights: dict[str, float] = {"audio_text": 1.0, "audio_image": 1.0, "image_text": 1.0}
    model: ModelConfig = ModelConfig()

    @field_validator("pair_weights")
    @classmethod
    def _pairs(cls, v: dict[str, float]) -> dict[str, float]:
        bad = set(v) - {"audio_text", "audio_image", "image_text"}
        if bad:
            raise ValueError(f"unknown pairs {sorted(bad)} (audio_text, audio_image, image_text)")
        return v


def load_train_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A run's config: the YAML at `path` (if any), then `overrides` (dotted keys: `model.width`, `lr`)."""
    data = read_yaml(Path(path)) if path else {}
    if data is None:
        data = {}
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err, " (a flag or the YAML)")) from None
