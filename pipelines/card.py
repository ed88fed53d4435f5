"""The dataset card: OUT/README.md with counts per split, species, hours, licences and sources."""
from __future__ import annotations

from collections import Counter

from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_card(cfg: BuildConfig, manifest: dict, stats: dict) -> str:
    audio = io.read_rows(io.join(cfg.out, "catalog", "recordings.parquet"))
    acc = stats["accounting"]
    licences = Counter(r["license"] for r in audio)
    sources = Counter(r["source"] for r in audio)
    splits = manifest["splits"]
    text = "\n\n".join([
        "# bestiary dataset card",
        f"Built by bestiary from {len(cfg.sources)} source(s); config fingerprint `{manifest['config_fingerprint']}`. "
        f"Samples are {cfg.media.clip_seconds:g} s mono FLAC clips at {cfg.media.sample_rate} Hz, each with a paired "
        "JPEG image, a caption and a JSON record (licence and attribution included).",
        "## Splits\n" + _table(["split", "shards", "samples", "species", "MB"],
                               [[k, v["shards"], v["samples"], len(v["species"]), round(v["bytes"] / 1e6, 1)]
                                for k, v in splits.items()]),
        f"Audio in samples: {stats['shard']['audio_hours']} h. The `unseen` split holds species absent from "
        "train/val/test (chosen by a hash of the accepted taxon id), for zero-shot evaluation.",
        "## Records\n" + _table(["what", "count"], [
            ["audio records crawled", acc["records_crawled"]], ["recordings in samples", acc["recordings_in_samples"]],
            ["records rejected", acc["records_rejected"]], ["balanced", acc["balanced"]]]),
        "## Rejects by reason\n" + _table(["stage/reason", "count"], [[k, v] for k, v in stats["rejects_by_reason"].items()]),
        "## Licences of crawled audio\n" + _table(["licence", "records"], sorted(licences.items())),
        "## Sources\n" + _table(["source", "audio records"], sorted(sources.items())),
    ]) + "\n"
    io.write_bytes(io.join(cfg.out, "README.md"), text.encode())
    return text
