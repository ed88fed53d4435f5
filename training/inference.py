"""Using a trained model: load it once, embed audio, files, images and texts; export it for others.

```python
from bestiary.training.inference import Model
model = Model.load("exported/")              # a folder `bestiary export` wrote, or a checkpoint.pt
audio = model.embed_audio(wave, 44100)        # a mono or (samples, channels) array at its own rate
clips = model.embed_files(["a.wav", "b.mp3"])  # (rows, errors): one row per file, its most salient clip
texts = model.embed_texts(["Strix aluco", "the song of a Great Tit"])
scores = audio @ texts.T                      # embeddings are unit vectors: cosine similarity
```

An export is `model.safetensors` (the weights), `config.json` (the architecture, the audio settings the
model was trained on, the image size) and `tokenizer.json`; pretrained towers (CLAP, CLIP, a sentence
encoder) travel as their own `save_pretrained` folders beside them.  Loading imports torch, the encoders
and the audio codecs only.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bestiary import __version__
from bestiary.captioning.templates import class_prompt
from bestiary.media.audio import AudioError, make_clips, read_clip
from bestiary.media.images import ImageError, prepare_image
from bestiary.training.config import ModelConfig
from bestiary.training.data import _image
from bestiary.training.encoders import TriModal
from bestiary.training.tokenizer import Tokenizer

AUDIO_EXT = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".aif", ".aiff"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}
EXPORT_FORMAT = "bestiary-model/1"
TOWERS = {"audio": "audio_weights", "image": "image_weights", "text": "text_weights"}


def list_media(path: str) -> list[Path]:
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [f for f in files if f.suffix.lower() in AUDIO_EXT | IMAGE_EXT]


class Model:
    """A trained tri-modal model, loaded once, embedding on the CPU or a GPU."""

    def __init__(self, net: TriModal, tokenizer, image_size: int, device: str = "cpu",
                 species: list[str] | None = None):
        self.net, self.tokenizer, self.image_size, self.device = net.to(device).eval(), tokenizer, image_size, device
        self.cfg: ModelConfig = net.cfg
        self.species = set(species or [])   # the accepted names it was trained on (empty: not recorded)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> "Model":
        """An export folder, or a checkpoint (a path or URL)."""
        path = str(path)
        if os.path.isdir(path):
            return cls._from_export(path, device)
        from bestiary.training.train import load_model
        net, tok, state = load_model(path, device)
        return cls(net, tok, state.get("train_config", {}).get("image_size", 64), device, state.get("species"))

    @classmethod
    def _from_export(cls, folder: str, device: str) -> "Model":
        from safetensors.torch import load_file
        with open(os.path.join(folder, "config.json")) as fh:
            spec = json.load(fh)
        if spec.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{folder}: not a bestiary export (format {spec.get('format')!r})")
        model = dict(spec["model"])
        for tower, field in TOWERS.items():  # pretrained towers rebuild from the folders exported with them
            if model.get(field):
                model[field] = os.path.join(folder, tower)
        net = TriModal(ModelConfig(**model))
        net.load_state_dict(load_file(os.path.join(folder, "model.safetensors"), device="cpu"))
        with open(os.path.join(folder, "tokenizer.json")) as fh:
            tok_state = json.load(fh)
        if tok_state.get("kind") == "hf":
            tok_state["path"] = os.path.join(folder, "text")
        return cls(net, Tokenizer.from_state(tok_state), spec["image_size"], device, spec.get("species"))

    # ------------------------------------------------------------ embeddings (unit vectors)

    @torch.no_grad()
    def embed_audio(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One embedding for a recording given as samples: its most salient clip of the model's length, at
        the model's rate (mono mixed, resampled, padded)."""
        import soundfile as sf
        buf = io.BytesIO()
        sf.write(buf, np.asarray(wave, dtype=np.float32), int(sample_rate), format="WAV", subtype="FLOAT")
        return self._audio_tensors([self._clip(buf.getvalue())[0]])[0]

    def _clip(self, data: bytes) -> tuple[torch.Tensor, float]:
        _, clips = make_clips(data, self.cfg.sample_rate, self.cfg.clip_seconds, max_clips=1, min_seconds=0.1)
        x, _ = read_clip(clips[0].flac)
        return torch.from_numpy(x), clips[0].offset_s

    @torch.no_grad()
    def _audio_tensors(self, tensors: list[torch.Tensor]) -> np.ndarray:
        x = torch.stack(tensors).to(self.device)
        return self.net.encode_audio(x).float().cpu().numpy()

    @torch.no_grad()
    def embed_images(self, images: list) -> np.ndarray:
        """Images as encoded bytes, paths or PIL images."""
        tensors = []
        for img in images:
            if isinstance(img, (str, os.PathLike)):
                img = Path(img).read_bytes()
            if not isinstance(img, (bytes, bytearray)):
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG")
                img = buf.getvalue()
            jpg, _ = prepare_image(img, max(self.image_size * 2, 128))
            tensors.append(_image(jpg, self.image_size, False, None))
        x = torch.stack(tensors).to(self.device)
        return self.net.encode_image(x).float().cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer.encode(list(texts)).to(self.device)
        return self.net.encode_text(ids).float().cpu().numpy()

    @torch.no_grad()
    def embed_files(self, files: list, batch: int = 16) -> tuple[list[dict], list[dict]]:
        """Rows (path, modality, offset_s, embedding) and rows for files that could not be read (path, reason)."""
        rows, errors, pending = [], [], {"audio": [], "image": []}

        def flush(kind: str) -> None:
            items = pending[kind]
            if not items:
                return
            x = torch.stack([t for _, t, _ in items]).to(self.device)
            emb = self.net.encode_audio(x) if kind == "audio" else self.net.encode_image(x)
            for (path, _, offset), e in zip(items, emb.float().cpu().numpy()):
                rows.append({"path": str(path), "modality": kind, "offset_s": offset, "embedding": e.astype(np.float32)})
            pending[kind] = []

        for f in map(Path, files):
            kind = "audio" if f.suffix.lower() in AUDIO_EXT else "image"
            try:
                if kind == "audio":
                    tensor, offset = self._clip(f.read_bytes())
                else:
                    jpg, _ = prepare_image(f.read_bytes(), max(self.image_size * 2, 128))
                    tensor, offset = _image(jpg, self.image_size, False, None), None
            except (AudioError, ImageError) as err:
                errors.append({"path": str(f), "reason": err.reason})
                continue
            except OSError as err:
                errors.append({"path": str(f), "reason": f"unreadable: {err.strerror or type(err).__name__}"})
                continue
            pending[kind].append((f, tensor, offset))
            if len(pending[kind]) >= batch:
                flush(kind)
        flush("audio")
        flush("image")
        return sorted(rows, key=lambda r: r["path"]), errors

    def unknown_names(self, names: list[str]) -> dict[str, str]:
        """Names the model cannot know, with why: pieces its tokenizer has no entry for, or (when the model
        records them) not among the species it was trained on.  Zero-shot still ranks them, on less."""
        out = {}
        unk = getattr(self.tokenizer, "unk", None) or "<unk>"
        for n in names:
            pieces = self.tokenizer.pieces(n) if hasattr(self.tokenizer, "pieces") else []
            if unk in pieces:
                out[n] = "not in the model's vocabulary"
            elif self.species and n not in self.species:
                out[n] = f"not among the {len(self.species)} species the model was trained on"
        return out

    def classify(self, files: list, species: list[str], kind: str = "scientific", top: int = 5) -> tuple[list[dict], list[dict]]:
        """For each audio file, the species list ranked by zero-shot score (softmax over the list)."""
        names = [s.strip() for s in species if s.strip()]
        fields = [{"scientific": n, "common": n, "taxonomy": f"genus {n.split()[0]}, species {n}"} for n in names]
        text = torch.from_numpy(self.embed_texts([class_prompt(kind, f) for f in fields]))
        rows, errors = self.embed_files([f for f in map(Path, files) if f.suffix.lower() in AUDIO_EXT])
        scale = float(self.net.logit_scale.detach().exp().clamp(max=100))
        out = []
        for r in rows:
            sims = torch.from_numpy(r["embedding"]) @ text.T
            probs = torch.softmax(scale * sims, dim=0)
            order = torch.argsort(probs, descending=True)[:top]
            out.append({"path": r["path"], "offset_s": r["offset_s"],
                        "ranking": [{"species": names[i], "score": round(float(probs[i]), 4),
                                     "cosine": round(float(sims[i]), 4)} for i in order]})
        return out, errors


# ---------------------------------------------------------------- the older function API

def embed_files(checkpoint: str, files: list[Path], batch: int = 16) -> tuple[list[dict], list[dict]]:
    return Model.load(checkpoint).embed_files(files, batch)


def classify(checkpoint: str, files: list[Path], species: list[str], kind: str = "scientific",
             top: int = 5) -> tuple[list[dict], list[dict]]:
    return Model.load(checkpoint).classify(files, species, kind, top)


def write_embeddings(rows: list[dict], out: str) -> None:
    dim = len(rows[0]["embedding"]) if rows else 0
    table = pa.table({
        "path": [r["path"] for r in rows], "modality": [r["modality"] for r in rows],
        "offset_s": pa.array([r["offset_s"] for r in rows], pa.float64()),
        "embedding": pa.array([r["embedding"].tolist() for r in rows], pa.list_(pa.float32(), dim)),
    })
    pq.write_table(table, out)


# ---------------------------------------------------------------- export

def export(checkpoint: str, folder: str) -> str:
    """A checkpoint as a folder anyone can load (`Model.load`): safetensors weights, a JSON config, the
    tokenizer, and the `save_pretrained` folders of any pretrained towers."""
    from safetensors.torch import save_file
    from bestiary.training.train import load_model
    net, tok, state = load_model(checkpoint)
    os.makedirs(folder, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": EXPORT_FORMAT})
    cfg = net.cfg.model_dump()
    for tower, field in TOWERS.items():
        if cfg.get(field):
            getattr(net, tower).save_pretrained(os.path.join(folder, tower))
            cfg[field] = tower
    spec = {"format": EXPORT_FORMAT, "bestiary": __version__, "model": cfg,
            "sample_rate": net.cfg.sample_rate, "clip_seconds": net.cfg.clip_seconds,
            "image_size": state.get("train_config", {}).get("image_size", 64), "step": state.get("step"),
            "species": state.get("species") or []}
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(spec, fh, indent=2, sort_keys=True)
    tok_state = tok.state()
    if tok_state.get("kind") == "hf":
        tok_state["path"] = "text"
    with open(os.path.join(folder, "tokenizer.json"), "w") as fh:
        json.dump(tok_state, fh)
    return folder

