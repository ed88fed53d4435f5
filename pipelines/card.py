"""The dataset card: OUT/README.md, a Hugging Face Hub card (YAML front matter: licences, tasks, size, the
splits' files and features) with counts per split, species, hours, licences, attribution, sources, a citation."""
from __future__ import annotations

import io as _io

from bestiary.pipelines import io
from bestiary.schemas.config import BuildConfig


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _part(card: dict, prefix: str) -> dict[str, int]:
    return {k.split("|", 1)[1]: v for k, v in card.items() if k.startswith(prefix + "|")}


def _plots(cfg: BuildConfig, card: dict, stats: dict) -> list[str]:
    """PNG plots beside the card, from the finalize aggregates (bounded by species, bins and grid cells):
    species long tail, durations, licences, locations, trait coverage."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bestiary.pipelines.finalize import DURATION_BIN_S, GRID_DEG
    made = []

    def save(fig, name: str) -> None:
        buf = _io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})  # no timestamp: reproducible
        plt.close(fig)
        io.write_bytes(io.join(cfg.out, "card", name), buf.getvalue())
        made.append(name)

    per_species = _part(card, "species")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(len(per_species)), sorted(per_species.values(), reverse=True), color="#4a7ab5")
    ax.set(title="Recordings in samples per species (long tail)", xlabel="accepted species, by rank",
           ylabel="recordings")
    save(fig, "species_long_tail.png")
    bins = {int(k): v for k, v in _part(card, "duration").items()}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar([b * DURATION_BIN_S for b in sorted(bins)], [bins[b] for b in sorted(bins)], width=DURATION_BIN_S,
           align="edge", color="#6aa36f")
    ax.set(title="Recording durations", xlabel="seconds", ylabel="recordings")
    save(fig, "durations.png")
    lic = _part(card, "licence")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(sorted(lic), [lic[k] for k in sorted(lic)], color="#c98b3a")
    ax.set(title="Licences of the published recordings", xlabel="recordings")
    save(fig, "licences.png")
    grid = [(tuple(map(int, k.split(","))), v) for k, v in _part(card, "grid").items()]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if grid:
        ax.scatter([(c[1] + 0.5) * GRID_DEG for c, _ in grid], [(c[0] + 0.5) * GRID_DEG for c, _ in grid],
                   s=[6 + 4 * v ** 0.5 for _, v in grid], alpha=0.6, color="#a33b3b")
    ax.set(title=f"Recording locations ({GRID_DEG:g} degree cells)", xlabel="longitude", ylabel="latitude",
           xlim=(-180, 180), ylim=(-90, 90))
    ax.grid(alpha=0.3)
    save(fig, "locations.png")
    coverage = stats.get("enrich", {}).get("trait_coverage") or {}
    if coverage:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.barh(list(coverage), [100 * v for v in coverage.values()], color="#7b5ea7")
        ax.set(title="Trait coverage (share of species with a value)", xlabel="% of species", xlim=(0, 100))
        ax.invert_yaxis()
        save(fig, "trait_coverage.png")
    return made


def _taxonomy(enrich: dict) -> str:
    """Records by resolution method, unresolved names, trait coverage and conflicts."""
    parts = [f"{enrich.get('records', 0)} catalog records resolved to {enrich.get('species', 0)} accepted species.",
             _table(["method", "records"], sorted((enrich.get("by_method") or {}).items())),
             _table(["found via", "records"], sorted((enrich.get("by_via") or {}).items()))]
    if enrich.get("fuzzy"):
        parts.append("Fuzzy matches: " + "; ".join(f"`{f}`" for f in enrich["fuzzy"][:20]))
    unresolved = enrich.get("unresolved") or {}
    if unresolved:
        parts.append("Unresolved names (kept in the catalog, not in samples):\n" +
                     _table(["name [reason]", "records"], sorted(unresolved.items(), key=lambda kv: (-kv[1], kv[0]))[:30]))
    coverage = enrich.get("trait_coverage") or {}
    if coverage:
        parts.append(_table(["trait", "species with a value"], [[t, f"{100 * v:.0f}%"] for t, v in coverage.items()]))
        parts.append(f"Trait rows joined per table: {enrich.get('trait_rows_joined')}; conflicts between tables "
                     f"(the earlier table kept): {enrich.get('trait_conflicts_by_trait') or 'none'}.")
    return "\n\n".join(parts)


SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
ARCHIVES = {"xeno-canto": "Xeno-canto (https://xeno-canto.org)", "inaturalist": "iNaturalist (https://www.inaturalist.org)",
            "macaulay": "the Macaulay Library at the Cornell Lab of Ornithology (https://www.macaulaylibrary.org)",
            "gbif": "GBIF.org (https://www.gbif.org): cite the occurrence download's DOI"}


def size_category(n: int) -> str:
    return next((name for top, name in SIZE_CATEGORIES if n < top), "n>100M")


def card_data(cfg: BuildConfig, manifest: dict, card: dict):
    """The Hub card's YAML: licences of what was published, tasks, size, and `configs` + features so that
    `datasets.load_dataset(OUT)` yields the splits with audio kept as FLAC bytes."""
    from huggingface_hub import DatasetCardData
    from bestiary.schemas.sample import hf_yaml_features
    published = sorted(k.lower() for k in _part(card, "licence") if k != "unknown")
    splits = manifest["splits"]
    total = sum(v["samples"] for v in splits.values())
    return DatasetCardData(
        pretty_name=f"bestiary {io.basename(cfg.out.rstrip('/')) or 'dataset'}",
        license=published or ["other"], task_categories=["audio-classification", "zero-shot-classification",
                                                         "image-classification", "feature-extraction"],
        size_categories=[size_category(total)], tags=["bioacoustics", "biodiversity", "webdataset", "bestiary"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"shards/{s}-*.tar"} for s in sorted(splits)]}],
        dataset_info={"features": hf_yaml_features(),
                      "splits": [{"name": s, "num_examples": v["samples"], "num_bytes": v["bytes"]}
                                 for s, v in sorted(splits.items())]})


def _citation(cfg: BuildConfig, manifest: dict) -> str:
    fp = manifest["config_fingerprint"]
    sources = sorted({next((a for a in ARCHIVES if s.name.startswith(a)), s.name) for s in cfg.sources})
    cite = [ARCHIVES[s] for s in sources if s in ARCHIVES]
    from bestiary import __version__
    return ("```bibtex\n"
            f"@misc{{bestiary_{fp[:12]},\n"
            f"  title        = {{A tri-modal (sound, image, text) animal dataset built with bestiary}},\n"
            f"  howpublished = {{bestiary {__version__}, config fingerprint {fp}}},\n"
            f"  note         = {{Recordings and images from {', '.join(sources)}; see attribution/}}\n"
            "}\n```\n\n" + ("Cite the archives too: " + "; ".join(cite) + "." if cite else ""))


def _load_snippets(manifest: dict) -> str:
    train = sorted(s["file"] for s in manifest["shards"] if s["split"] == "train")
    pattern = train[0] if len(train) == 1 else "{" + ",".join(train) + "}" if train else "train-*.tar"
    return ("With Hugging Face `datasets` (this card's `configs` name the splits and the features; audio stays "
            "FLAC bytes, decode it with soundfile):\n\n```python\nfrom datasets import load_dataset\n"
            "import io, soundfile as sf\n\nds = load_dataset(\"OUT\")                 # train, val, test, unseen\n"
            "x = ds[\"train\"][0]\nwave, rate = sf.read(io.BytesIO(x[\"flac\"]))\n"
            "print(x[\"json\"][\"taxon\"][\"accepted_name\"], x[\"txt\"])\n```\n\n"
            "With webdataset:\n\n```python\nimport webdataset as wds\n\n"
            f"ds = wds.WebDataset(\"OUT/shards/{pattern}\", shardshuffle=False).decode()\n"
            "for sample in ds:\n    sample[\"flac\"], sample[\"jpg\"], sample[\"json\"], sample[\"txt\"]\n```\n\n"
            "After incremental runs, some samples are superseded: a shard's entry in `shards/manifest.json` "
            "counts them (`deleted`) and names the JSON list of their keys (`tombstones`, beside the manifest); "
            "bestiary's loader skips them, `load_dataset` does not.")


def write_card(cfg: BuildConfig, manifest: dict, stats: dict, card: dict) -> str:
    from huggingface_hub import DatasetCard
    plots = _plots(cfg, card, stats)
    acc = stats["accounting"]
    licences = _part(card, "crawled_licence")
    published = _part(card, "licence")
    sources = _part(card, "source")
    people = _part(card, "people")
    splits = manifest["splits"]
    body = "\n\n".join([
        "# bestiary dataset card",
        f"Built by bestiary from {len(cfg.sources)} source(s); config fingerprint `{manifest['config_fingerprint']}`. "
        f"Samples are {cfg.media.clip_seconds:g} s mono FLAC clips at {cfg.media.sample_rate} Hz, each with a "
        "caption and a JSON record (licence and attribution included), and a paired JPEG image where its species "
        f"has one in its split: {stats['shard']['samples_with_image']} audio-image-text samples and "
        f"{stats['shard']['audio_text_samples']} audio-text samples (no `jpg`; the json's `image` is null)"
        + (" (images required: recordings without one are rejected as `no_image`)." if cfg.shards.require_image
           else "."),
        "## Loading\n" + _load_snippets(manifest),
        "## Splits\n" + _table(["split", "shards", "samples", "with image", "species", "MB"],
                               [[k, v["shards"], v["samples"], v.get("samples_with_image"), len(v["species"]),
                                 round(v["bytes"] / 1e6, 1)] for k, v in splits.items()]),
        f"Audio in samples: {stats['shard']['audio_hours']} h. The `unseen` split holds species absent from "
        "train/val/test (chosen by a hash of the accepted taxon id), for zero-shot evaluation.",
        "## Records\n" + _table(["what", "count"], [
            ["audio records crawled", acc["records_crawled"]], ["recordings in samples", acc["recordings_in_samples"]],
            ["records rejected", acc["records_rejected"]], ["balanced", acc["balanced"]],
            ["images crawled", stats["images"]["crawled"]], ["images paired", stats["images"]["paired_in_samples"]],
            ["images unused", stats["images"]["unused"]], ["images rejected", stats["images"]["rejected"]]]),
        "## Rejects by reason\n" + _table(["stage/reason", "count"], [[k, v] for k, v in stats["rejects_by_reason"].items()]),
        "## Taxonomy\n" + _taxonomy(stats.get("enrich", {})),
        "## Licences\nEach sample's `license` is the pair's: every condition of its audio's and its image's "
        "licences (both are in the sample's json with their URLs). No-Derivatives works are not published "
        "(clips are adaptations) unless the config opts in with the rights holders' permission.\n\n"
        + _table(["licence of published recordings (with their image)", "recordings"], sorted(published.items()))
        + "\n\n" + _table(["licence of crawled audio", "records"], sorted(licences.items())),
        "## Attribution\nEvery recordist and photographer of a published work, with the work, its source and its "
        "licence, is in `attribution/` (Parquet; e.g. `duckdb -c \"select person, role, count(*) from "
        "'attribution/*.parquet' group by all\"`): "
        + ", ".join(f"{n} {role}s" for role, n in sorted(people.items())) + ".",
        "## Pairing\nHow each published recording's image was chosen (`same_observation`: the recording's own "
        "observation; `same_species`: another observation of the species in the same split; `none`: no image of "
        "the species in the split, an audio-text sample):\n\n"
        + _table(["pairing", "recordings"], sorted(_part(card, "pairing").items())),
        "## Sources\n" + _table(["source", "audio records"], sorted(sources.items())),
        "## Plots\n" + "\n".join(f"![{p[:-4].replace('_', ' ')}](card/{p})" for p in plots),
        "## Citation\n" + _citation(cfg, manifest),
    ]) + "\n"
    text = str(DatasetCard(f"---\n{card_data(cfg, manifest, card).to_yaml()}\n---\n\n{body}"))
    if not text.endswith("\n"):
        text += "\n"
    io.write_bytes(io.join(cfg.out, "README.md"), text.encode())
    return text
