"""Pretrained encoders from local weights, through `transformers`: never downloaded.

- audio `clap`: HTS-AT, CLAP's audio tower (`ClapAudioModelWithProjection`), on CLAP's own
  log-mel features (its feature extractor, 48 kHz like the shards);
- image `clip`: a CLIP vision tower (`CLIPVisionModelWithProjection`; BioCLIP converted to this
  format works the same), fed our image tensors resized and normalised the CLIP way;
- text `hf`: a CLIP text tower (`CLIPTextModelWithProjection`) or any encoder `AutoModel` loads
  (RoBERTa, BERT): the first token's hidden state; with its own tokenizer (`HFTokenizer`).

Each is built from a folder `save_pretrained` wrote (config + safetensors), with
`local_files_only=True` and the hub switched off: a missing folder is a clear error.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _local(path: str | None, what: str) -> str:
    if not path or not os.path.isdir(path):
        raise ValueError(f"{what}: no weights folder at {path!r} (bestiary loads pretrained weights from a local "
                         "folder written by save_pretrained; it never downloads)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return path


class ClapAudio(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor
        path = _local(cfg.audio_weights, "audio encoder clap")
        self.model = ClapAudioModelWithProjection.from_pretrained(path, local_files_only=True)
        self.features = ClapFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.sample_rate = cfg.sample_rate
        self.out_dim = self.model.config.projection_dim

    def save_pretrained(self, folder: str) -> None:
        self.model.save_pretrained(folder)
        self.features.save_pretrained(folder)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # CLAP's features are computed by its extractor (numpy); 'rand_trunc' keeps one channel, no fusion
        f = self.features(list(wav.detach().float().cpu().numpy()), sampling_rate=self.sample_rate,
                          return_tensors="pt", truncation="rand_trunc")
        return self.model(input_features=f["input_features"].to(wav.device)).audio_embeds


class ClipImage(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection
        path = _local(cfg.image_weights, "image encoder clip")
        self.model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True)
        self.size = self.model.config.image_size
        self.out_dim = self.model.config.projection_dim
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def save_pretrained(self, folder: str) -> None:
        self.model.save_pretrained(folder)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img * 0.25 + 0.5  # the loader's normalisation undone: [0, 1]
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        return self.model(pixel_values=(x - self.mean) / self.std).image_embeds


class HFText(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        from transformers import AutoConfig, AutoModel, CLIPTextModelWithProjection
        path = _local(cfg.text_weights, "text encoder hf")
        self.clip = AutoConfig.from_pretrained(path, local_files_only=True).model_type in ("clip_text_model", "clip")
        if self.clip:
            self.model = CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True)
            self.out_dim = self.model.config.projection_dim
        else:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
            self.out_dim = self.model.config.hidden_size
        self.pad_id = cfg.pad_id
        self.path = path
        self.pooling = text_pooling(path)

    def save_pretrained(self, folder: str) -> None:
        self.model.save_pretrained(folder)
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(self.path, local_files_only=True).save_pretrained(folder)
        if self.pooling == "mean":   # a sentence-transformers folder says how it pools; keep saying it
            import json
            os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
            with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as fh:
                json.dump({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, fh)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        if self.clip:
            return self.model(input_ids=ids, attention_mask=mask).text_embeds
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "mean":   # sentence encoders (MiniLM, MPNet) are trained on the mean of their tokens
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return hidden[:, 0]


def text_pooling(path: str) -> str:
    """`mean` for a sentence-transformers folder whose pooling is the token mean (its 1_Pooling/config.json),
    else `cls` (BERT/RoBERTa's first token)."""
    import json
    cfg = os.path.join(path, "1_Pooling", "config.json")
    if os.path.exists(cfg):
        with open(cfg) as fh:
            return "mean" if json.load(fh).get("pooling_mode_mean_tokens") else "cls"
    return "cls"


class HFTokenizer:
    """The pretrained text tower's own tokenizer, with bestiary's tokenizer interface."""

    def __init__(self, path: str, max_len: int = 64):
        from transformers import AutoTokenizer
        self.path = _local(path, "tokenizer")
        self.tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.max_len = max_len
        self.vocab = list(range(self.tok.vocab_size))  # only its size is read
        self.pad_id = self.tok.pad_token_id or 0

    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.tok(list(texts), padding="max_length", truncation=True, max_length=self.max_len,
                        return_tensors="pt")["input_ids"]

    def state(self) -> dict:
        return {"kind": "hf", "path": self.path, "max_len": self.max_len}
