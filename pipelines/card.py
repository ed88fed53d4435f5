"""The dataset card: OUT/README.md with counts per split, species, hours, licences and sources."""
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
                     _table(["name [reason]", "records"], list(unresolved.items())[:30]))
    coverage = enrich.get("trait_coverage") or {}
    if coverage:
        parts.append(_table(["trait", "species with a value"], [[t, f"{100 * v:.0f}%"] for t, v in coverage.items()]))
        parts.append(f"Trait rows joined per table: {enrich.get('trait_rows_joined')}; conflicts between tables "
                     f"(the earlier table kept): {enrich.get('trait_conflicts_by_trait') or 'none'}.")
    return "\n\n".join(parts)


def write_card(cfg: BuildConfig, manifest: dict, stats: dict, card: dict) -> str:
    plots = _plots(cfg, card, stats)
    acc = stats["accounting"]
    licences = _part(card, "crawled_licence")
    sources = _part(card, "source")
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
            ["records rejected", acc["records_rejected"]], ["balanced", acc["balanced"]],
            ["images crawled", stats["images"]["crawled"]], ["images paired", stats["images"]["paired_in_samples"]],
            ["images unused", stats["images"]["unused"]], ["images rejected", stats["images"]["rejected"]]]),
        "## Rejects by reason\n" + _table(["stage/reason", "count"], [[k, v] for k, v in stats["rejects_by_reason"].items()]),
        "## Taxonomy\n" + _taxonomy(stats.get("enrich", {})),
        "## Licences of crawled audio\n" + _table(["licence", "records"], sorted(licences.items())),
        "## Sources\n" + _table(["source", "audio records"], sorted(sources.items())),
        "## Plots\n" + "\n".join(f"![{p[:-4].replace('_', ' ')}](card/{p})" for p in plots),
    ]) + "\n"
    io.write_bytes(io.join(cfg.out, "README.md"), text.encode())
    return text
