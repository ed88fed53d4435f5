"""The dataset card: OUT/README.md with counts per split, species, hours, licences and sources."""
from __future__ import annotations

import io as _io
from collections import Counter

from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _plots(cfg: BuildConfig, audio: list[dict], manifest: dict, stats: dict) -> list[str]:
    """PNG plots beside the card: species long tail, durations, licences, locations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    in_samples = set(stats.get("recordings_in_samples_keys", []))
    used = [r for r in audio if r["key"] in in_samples] or audio
    made = []

    def save(fig, name: str) -> None:
        buf = _io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})  # no timestamp: reproducible
        plt.close(fig)
        io.write_bytes(io.join(cfg.out, "card", name), buf.getvalue())
        made.append(name)

    per_species = Counter(r["scientific_name"] for r in used)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(len(per_species)), sorted(per_species.values(), reverse=True), color="#4a7ab5")
    ax.set(title="Recordings per species (long tail)", xlabel="species, by rank", ylabel="recordings")
    save(fig, "species_long_tail.png")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist([r["duration_s"] for r in used if r["duration_s"]], bins=30, color="#6aa36f")
    ax.set(title="Recording durations", xlabel="seconds", ylabel="recordings")
    save(fig, "durations.png")
    lic = Counter(r["license"] for r in audio)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(list(lic), list(lic.values()), color="#c98b3a")
    ax.set(title="Licences of crawled audio", xlabel="recordings")
    save(fig, "licences.png")
    pts = [(r["lon"], r["lat"]) for r in used if r["lat"] is not None and r["lon"] is not None]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if pts:
        ax.scatter(*zip(*pts), s=6, alpha=0.6, color="#a33b3b")
    ax.set(title="Recording locations", xlabel="longitude", ylabel="latitude", xlim=(-180, 180), ylim=(-90, 90))
    ax.grid(alpha=0.3)
    save(fig, "locations.png")
    return made


def write_card(cfg: BuildConfig, manifest: dict, stats: dict) -> str:
    audio = io.read_rows(io.join(cfg.out, "catalog", "recordings.parquet"))
    plots = _plots(cfg, audio, manifest, stats)
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
        "## Plots\n" + "\n".join(f"![{p[:-4].replace('_', ' ')}](card/{p})" for p in plots),
    ]) + "\n"
    io.write_bytes(io.join(cfg.out, "README.md"), text.encode())
    return text
