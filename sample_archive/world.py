"""Bigger sample worlds for benchmarks: N species drawn with their real tree from a real taxonomy table, and
how hard their media are.

`draw_world(rows, n)` picks about n/10 families and about n/3 genera of an
eBird/Clements table (the raw eBird CSV or birdnames' processed one; both are
in ../shared/fixtures/taxonomy), keeping every name, common name, code and rank
as the table has them.  Each family gets a sound band and a hue spaced so that
families stay apart, each genus a call pattern and a shape, so media still
follow the tree; `Difficulty` adds what field recordings and photos have
(noise, a second species, distance, individual variation, weak visual cues).
`write_taxonomy(world, folder)` writes the backbone and eBird files a build of
that world resolves names with.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collections.abc import Callable

from bestiary.sample_archive.species import Species, World, lineage

PATTERNS = ("whistle", "sweep_down", "sweep_up", "trill", "warble", "harmonic", "buzz")
SHAPES = ("circle", "square", "triangle", "diamond")


@dataclass(frozen=True)
class Difficulty:
    """0 everywhere is the demo's clean media.  Each knob is drawn per recording or photo, up to its value."""
    noise: float = 0.0       # background noise, as a share of the calls' peak level (0.6: calls about 4 dB above it)
    overlap: float = 0.0     # the chance a recording also holds phrases of another species of its class
    distance: float = 0.0    # up to this share of recordings far away: quieter and duller (low-passed)
    recorder: float = 0.0    # how strongly each recordist's own kit colours the sound (high-pass, level, clipping)
    variation: float = 0.0   # individual spread of pitch and tempo (0.06: +-6 %)
    image_cues: float = 1.0  # 1: species colour and stripes as drawn; toward 0 they fade into the family palette

    def any(self) -> bool:
        return self != Difficulty()


PRESETS = {"clean": Difficulty(),
           "field": Difficulty(noise=0.5, overlap=0.3, distance=0.5, recorder=0.5, variation=0.06, image_cues=0.5),
           "hard": Difficulty(noise=0.8, overlap=0.5, distance=0.7, recorder=1.0, variation=0.1, image_cues=0.25)}


def read_table(data: bytes) -> list[dict]:
    """Species rows {scientific_name, common_name, code, order, family, genus} of an eBird/Clements CSV: the
    raw file (SCI_NAME, PRIMARY_COM_NAME, SPECIES_CODE, ORDER, FAMILY 'Paridae (Tits, ...)', CATEGORY) or
    birdnames' processed one (scientific_name, ebird_common_name, ebird_ebird_code, ebird_order,
    ebird_family, genus)."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    out = []
    for r in reader:
        if "SCI_NAME" in r:
            if (r.get("CATEGORY") or "species") != "species":
                continue
            name = r["SCI_NAME"].strip()
            out.append({"scientific_name": name, "common_name": r["PRIMARY_COM_NAME"].strip(),
                        "code": r["SPECIES_CODE"].strip(), "order": r["ORDER"].strip(),
                        "family": r["FAMILY"].split(" (")[0].strip(), "genus": name.split()[0]})
        else:
            out.append({"scientific_name": r["scientific_name"].strip(), "common_name": r["ebird_common_name"].strip(),
                        "code": r["ebird_ebird_code"].strip(), "order": r["ebird_order"].strip(),
                        "family": r["ebird_family"].strip(), "genus": r["genus"].strip()})
    return [r for r in out if len(r["scientific_name"].split()) == 2 and r["family"] and r["order"]]


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "little")


def draw_world(rows: list[dict], n_species: int, seed: int = 0, per_genus: int = 5,
               per_family: int = 10, prefer: set[str] | frozenset = frozenset()) -> World:
    """About n_species species of about n/per_family families and about n/3 genera (up to per_genus from a
    genus per round: many genera hold fewer), drawn with the seed;
    names and ranks as the table has them.  Families in `prefer` (those a trait table covers) are drawn first."""
    rng = np.random.default_rng(seed)
    by_family: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        by_family.setdefault(r["family"], {}).setdefault(r["genus"], []).append(r)
    # families that can give their share: enough species over at least two genera
    want_each = -(-n_species // max(1, round(n_species / per_family)))   # the most one family is asked for
    able = sorted(f for f, g in by_family.items() if len(g) >= 2 and sum(len(v) for v in g.values()) >= want_each)
    n_families = max(1, min(len(able), round(n_species / per_family)))
    first = [f for f in able if f in prefer][:n_families]
    rest = [f for f in able if f not in first]
    chosen = sorted(first + [rest[i] for i in sorted(rng.choice(len(rest), n_families - len(first), replace=False))])
    picked: list[dict] = []
    for fi, fam in enumerate(chosen):
        want = n_species // n_families + (1 if fi < n_species % n_families else 0)
        genera = sorted(by_family[fam])
        pools = {g: [by_family[fam][g][i] for i in rng.permutation(len(by_family[fam][g]))] for g in genera}
        order = [genera[i] for i in rng.permutation(len(genera))]
        got: list[dict] = []
        # round by round, up to per_genus from each genus in a drawn order: about want / per_genus genera
        while len(got) < want and any(pools[g] for g in order):
            for g in order:
                take = min(per_genus, want - len(got), len(pools[g]))
                got += pools[g][:take]
                pools[g] = pools[g][take:]
                if len(got) >= want:
                    break
        picked += got
    picked.sort(key=lambda r: (r["family"], r["scientific_name"]))
    fams = sorted({r["family"] for r in picked})
    # bands: families spread over 0.3-9 kHz on a log scale, each about an octave wide; hues spread round
    # the colour wheel; both in a seeded order so neighbours in the tree are not neighbours in sound
    slots = rng.permutation(len(fams))
    families = {}
    for f, slot in zip(fams, slots):
        row = next(r for r in picked if r["family"] == f)
        lo = 300 * (9000 / 600) ** (slot / max(1, len(fams) - 1))
        families[f] = ("Aves", row["order"], int(lo), int(min(16000, lo * 2)), int(360 * slot / len(fams)) % 360)
    genera = {}
    for r in picked:
        h = _hash("genus", r["genus"])
        genera.setdefault(r["genus"], (r["family"], PATTERNS[h % len(PATTERNS)], SHAPES[(h >> 8) % len(SHAPES)]))
    return World(families, genera, [(r["scientific_name"], r["common_name"], r["code"] or None) for r in picked],
                 name=f"drawn-{len(picked)}-seed{seed}")


def trait_families(avonet: bytes) -> set[str]:
    """The families an AVONET table has rows for (its `Family1` column)."""
    reader = csv.DictReader(io.StringIO(avonet.decode("utf-8-sig"), newline=""))
    return {r.get("Family1", "").strip() for r in reader} - {""}


def backbone_lines(world: World, authors: dict[str, str] | None = None,
                   after_species: Callable[[Species, dict], list[str]] | None = None) -> list[str]:
    """A GBIF-backbone-format Taxon.tsv of the world: its higher taxa in key order, then its species (with
    `authors` where given; `after_species(species, lineage)` adds rows after each, such as a subspecies).
    Ids are the world's, names and ranks the table's."""
    from bestiary.sample_archive.taxonomy_data import BACKBONE_DATASET, COLUMNS, _row
    lines = ["\t".join(COLUMNS)]
    higher: dict[str, tuple[str, str | None, dict]] = {}
    for sp in world.species:
        chain: dict[str, str] = {}
        parent = None
        for rank, name in lineage(sp)[:-1]:
            chain[rank] = name
            higher.setdefault(name, (rank, parent, dict(chain)))
            parent = name
    for name, (rank, parent, chain) in sorted(higher.items(), key=lambda kv: world.gbif_keys[kv[0]]):
        lines.append(_row(taxonID=world.gbif_keys[name], datasetID=BACKBONE_DATASET, scientificName=name,
                          parentNameUsageID=world.gbif_keys[parent] if parent else "", canonicalName=name,
                          genericName=name if rank == "genus" else "", taxonRank=rank, taxonomicStatus="accepted",
                          **chain))
    for sp in world.species:
        lin = higher[sp.genus][2]
        author = (authors or {}).get(sp.name, "")
        lines.append(_row(taxonID=sp.gbif_key, datasetID=BACKBONE_DATASET, parentNameUsageID=world.gbif_keys[sp.genus],
                          scientificName=f"{sp.name} {author}".strip(), scientificNameAuthorship=author,
                          canonicalName=sp.name, genericName=sp.genus, specificEpithet=sp.epithet,
                          taxonRank="species", taxonomicStatus="accepted", **lin))
        lines += after_species(sp, lin) if after_species else []
    return lines


EBIRD_HEADER = ["TAXON_ORDER", "CATEGORY", "SPECIES_CODE", "TAXON_CONCEPT_ID", "PRIMARY_COM_NAME", "SCI_NAME",
                "ORDER", "FAMILY", "SPECIES_GROUP", "REPORT_AS"]


def ebird_lines(world: World) -> str:
    """The world's birds in the eBird taxonomy's CSV format (codes -> names for the Macaulay-style archive)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EBIRD_HEADER)
    for i, sp in enumerate(s for s in world.species if s.code):
        w.writerow([i + 1, "species", sp.code, "", sp.common, sp.name, sp.order, sp.family, "", ""])
    return buf.getvalue()


def write_taxonomy(world: World, folder: str | Path, avonet: str | Path | None = None) -> dict[str, str]:
    """Taxon.tsv and ebird_taxonomy.csv for the world in `folder`; with an AVONET table, its rows for the
    world's species too (avonet.csv: real trait values where the table has the species).  The paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Taxon.tsv").write_text("\n".join(backbone_lines(world)) + "\n")
    (folder / "ebird_taxonomy.csv").write_text(ebird_lines(world))
    out = {"backbone": str(folder / "Taxon.tsv"), "ebird": str(folder / "ebird_taxonomy.csv")}
    if avonet is not None and Path(avonet).exists():
        names = {s.name for s in world.species}
        lines = Path(avonet).read_bytes().split(b"\n")
        keep = [lines[0]] + [ln for ln in lines[1:] if ln.split(b",")[1:2] and ln.split(b",")[1].decode() in names]
        (folder / "avonet.csv").write_bytes(b"\n".join(keep) + b"\n")
        out["avonet"] = str(folder / "avonet.csv")
    return out
