"""The shards' manifest: the contract between the build that writes shards and the training and evaluation
that read them.  `manifest.json` sits beside the shards (a folder, or any URL); shard files are named
relative to it."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "bestiary-webdataset/1"


class ShardEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    name: str
    file: str
    split: str
    samples: int = Field(ge=0)
    samples_with_image: int | None = Field(None, ge=0)   # the rest are audio-text samples (None: not counted)
    bytes: int = Field(ge=0)
    sha256: str
    # samples of this shard superseded since it was written (records changed or deleted by a later run):
    # how many, and the sidecar (a JSON list of their keys, relative to the manifest) that names them
    deleted: int = Field(0, ge=0)
    tombstones: str | None = None


class SplitSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    shards: int
    samples: int
    samples_with_image: int | None = None
    bytes: int
    species: list[str]


class Manifest(BaseModel):
    """What a reader needs: the audio settings the samples were cut with, the members of a sample, the
    shards by split (each with its tombstones: the count and the sidecar naming the samples superseded
    since), and the tokenizer the build trained on the captions (a Hugging Face `tokenizers` file beside
    the manifest).  `deleted` is the one list of tombstones ('{shard file}/{sample key}') that manifests
    before per-shard sidecars held; readers still honour it, builds no longer write it."""
    model_config = ConfigDict(frozen=True, extra="ignore")   # a newer build's extra fields do not break readers
    format: Literal["bestiary-webdataset/1"] = FORMAT
    version: int = Field(1, ge=1)
    config_fingerprint: str
    members: list[str]
    optional_members: list[str] = []   # members a sample may lack: `jpg` in an audio-text sample
    sample_rate: int = Field(gt=0)
    clip_seconds: float = Field(gt=0)
    splits: dict[str, SplitSummary]
    shards: list[ShardEntry]
    deleted: list[str] = []
    tokenizer: str | None = None

    def shards_of(self, splits: tuple[str, ...]) -> list[ShardEntry]:
        return [s for s in self.shards if s.split in splits and s.samples]

    def live_samples(self, splits: tuple[str, ...]) -> int:
        files = {s.file for s in self.shards if s.split in splits}
        legacy = sum(1 for d in self.deleted if d.split("/", 1)[0] in files)
        return sum(s.samples - s.deleted for s in self.shards if s.split in splits) - legacy

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


class AudioMismatch(ValueError):
    """A model trained on clips of one shape met shards of another."""


def check_audio(model_rate: int, model_clip_s: float, manifest: Manifest, where: str) -> None:
    if model_rate != manifest.sample_rate or abs(model_clip_s - manifest.clip_seconds) > 1e-6:
        raise AudioMismatch(f"{where} was trained on {model_rate} Hz, {model_clip_s:g} s clips; these shards hold "
                            f"{manifest.sample_rate} Hz, {manifest.clip_seconds:g} s clips")
