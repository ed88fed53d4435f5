"""Encoders behind one interface: modality input -> embedding in the shared space.

Small from-scratch defaults that train on a CPU: log-mel (computed in torch,
on the device) + CNN for audio, a CNN for images, a small transformer over a
caption-trained tokenizer for text.  Chosen by name from `ENCODERS`.
"""
from __future__ import annotations

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from bestiary.training.config import ModelConfig  # noqa: F401 (the architecture's config lives with the others)


class LogMel(nn.Module):
    """Waveform (batch, samples) -> log-mel (batch, 1, mels, frames), on whatever device the input is."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        self.register_buffer("fb", torch.tensor(fb, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.n_fft, self.hop = cfg.n_fft, cfg.hop

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        mel = torch.matmul(self.fb, spec)
        logmel = torch.log(mel + 1e-6)
        logmel = (logmel - logmel.mean(dim=(1, 2), keepdim=True)) / (logmel.std(dim=(1, 2), keepdim=True) + 1e-5)
        return logmel.unsqueeze(1)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: an embedding must not depend on the rest of its batch (ranks hold
    # different batches, and evaluation embeds one sample the same whatever its neighbours)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.GELU(),
                         nn.MaxPool2d(2))


class AudioCNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.logmel = LogMel(cfg)
        self.body = nn.Sequential(conv_block(1, w // 2), conv_block(w // 2, w), conv_block(w, 2 * w),
                                  conv_block(2 * w, 2 * w))
        self.out_dim = 2 * w * 2  # mean and max over time, pooled frequency

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        h = self.body(self.logmel(wav)).mean(dim=2)          # (b, c, frames)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)


class ImageCNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.body = nn.Sequential(conv_block(3, w // 2), conv_block(w // 2, w), conv_block(w, 2 * w),
                                  conv_block(2 * w, 2 * w))
        self.out_dim = 2 * w

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.body(img).mean(dim=(2, 3))


class TextTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = 2 * cfg.width
        self.embed = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(cfg.max_len, d))
        layer = nn.TransformerEncoderLayer(d, cfg.text_heads, 2 * d, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.body = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out_dim = d

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        h = self.body(self.embed(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=pad)
        h = self.norm(h)
        keep = (~pad).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)   # mean over real tokens


ENCODERS = {"audio": {"cnn": AudioCNN}, "image": {"cnn": ImageCNN}, "text": {"transformer": TextTransformer}}


def _pretrained(modality: str, name: str):
    from bestiary.training import pretrained
    return {("audio", "clap"): pretrained.ClapAudio, ("image", "clip"): pretrained.ClipImage,
            ("text", "hf"): pretrained.HFText}.get((modality, name))


PRETRAINED = {"audio": ("clap",), "image": ("clip",), "text": ("hf",)}


def build_encoder(modality: str, name: str, cfg: ModelConfig) -> nn.Module:
    if name in PRETRAINED[modality]:
        return _pretrained(modality, name)(cfg)
    try:
        return ENCODERS[modality][name](cfg)
    except KeyError:
        known = ", ".join([*ENCODERS[modality], *PRETRAINED[modality]])
        raise ValueError(f"unknown {modality} encoder {name!r} (known: {known})") from None


class TriModal(nn.Module):
    """Audio, image and text encoders with linear projections into one normalised space."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = build_encoder("audio", cfg.audio_encoder, cfg)
        self.image = build_encoder("image", cfg.image_encoder, cfg)
        self.text = build_encoder("text", cfg.text_encoder, cfg)
        self.audio_proj = nn.Linear(self.audio.out_dim, cfg.embed_dim)
        self.image_proj = nn.Linear(self.image.out_dim, cfg.embed_dim)
        self.text_proj = nn.Linear(self.text.out_dim, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), CLIP's start
        if cfg.trait_heads:
            from bestiary.training.traits import TraitHeads
            self.traits = TraitHeads(cfg.embed_dim)

    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_proj(self.audio(wav)), dim=-1)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image(img)), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(ids)), dim=-1)
