"""What users do with a trained model: embed a folder of audio or images, and rank a species
list for each recording zero-shot (as BioLingual's users do)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bestiary.captioning.templates import class_prompt
from bestiary.media.audio import AudioError, make_clips, read_clip
from bestiary.media.images import ImageError, prepare_image
from bestiary.training.data import _image
from bestiary.training.train import load_model

AUDIO_EXT = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".aif", ".aiff"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}


def list_media(path: str) -> list[Path]:
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [f for f in files if f.suffix.lower() in AUDIO_EXT | IMAGE_EXT]


def _audio_tensor(data: bytes) -> tuple[torch.Tensor, float]:
    """The most salient 10 s window at 48 kHz, and where it starts."""
    _, clips = make_clips(data, max_clips=1, min_seconds=0.1)
    x, _ = read_clip(clips[0].flac)
    return torch.from_numpy(x), clips[0].offset_s


@torch.no_grad()
def embed_files(checkpoint: str, files: list[Path], batch: int = 16) -> tuple[list[dict], list[dict]]:
    """Rows (path, modality, offset_s, embedding) and rows for files that could not be read (path, reason)."""
    model, _tok, state = load_model(checkpoint)
    size = state["train_config"].get("image_size", 64)
    rows, errors, pending = [], [], {"audio": [], "image": []}

    def flush(kind: str) -> None:
        items = pending[kind]
        if not items:
            return
        x = torch.stack([t for _, t, _ in items])
        emb = model.encode_audio(x) if kind == "audio" else model.encode_image(x)
        for (path, _, offset), e in zip(items, emb.numpy()):
            rows.append({"path": str(path), "modality": kind, "offset_s": offset, "embedding": e.astype(np.float32)})
        pending[kind] = []

    for f in files:
        kind = "audio" if f.suffix.lower() in AUDIO_EXT else "image"
        try:
            if kind == "audio":
                tensor, offset = _audio_tensor(f.read_bytes())
            else:
                jpg, _ = prepare_image(f.read_bytes(), max(size * 2, 128))
                tensor, offset = _image(jpg, size, False, None), None
        except (AudioError, ImageError) as err:
            errors.append({"path": str(f), "reason": err.reason})
            continue
        pending[kind].append((f, tensor, offset))
        if len(pending[kind]) >= batch:
            flush(kind)
    flush("audio")
    flush("image")
    return sorted(rows, key=lambda r: r["path"]), errors


def write_embeddings(rows: list[dict], out: str) -> None:
    dim = len(rows[0]["embedding"]) if rows else 0
    table = pa.table({
        "path": [r["path"] for r in rows], "modality": [r["modality"] for r in rows],
        "offset_s": pa.array([r["offset_s"] for r in rows], pa.float64()),
        "embedding": pa.array([r["embedding"].tolist() for r in rows], pa.list_(pa.float32(), dim)),
    })
    pq.write_table(table, out)


@torch.no_grad()
def classify(checkpoint: str, files: list[Path], species: list[str], kind: str = "scientific",
             top: int = 5) -> tuple[list[dict], list[dict]]:
    """For each audio file, the species list ranked by zero-shot score (softmax over the list)."""
    model, tok, _ = load_model(checkpoint)
    names = [s.strip() for s in species if s.strip()]
    fields = [{"scientific": n, "common": n, "taxonomy": f"genus {n.split()[0]}, species {n}"} for n in names]
    text = model.encode_text(tok.encode([class_prompt(kind, f) for f in fields]))
    rows, errors = embed_files(checkpoint, [f for f in files if f.suffix.lower() in AUDIO_EXT])
    out = []
    scale = float(model.logit_scale.exp().clamp(max=100))
    for r in rows:
        sims = torch.from_numpy(r["embedding"]) @ text.T
        probs = torch.softmax(scale * sims, dim=0)
        order = torch.argsort(probs, descending=True)[:top]
        out.append({"path": r["path"], "offset_s": r["offset_s"],
                    "ranking": [{"species": names[i], "score": round(float(probs[i]), 4),
                                 "cosine": round(float(sims[i]), 4)} for i in order]})
    return out, errors


