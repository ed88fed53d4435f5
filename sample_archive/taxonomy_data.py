"""The sample archive's taxonomy and trait files, written to `sample_archive/data/` (committed).

- `Taxon.tsv`: a GBIF-backbone-format slice: the sample species with their real
  lineage, real synonyms (the older names EltonTraits and some archives still
  use), a cross-kingdom homonym (Prunella, a plant genus and a bird genus).
- `ebird_taxonomy.csv`, `avonet.csv`, `eltontraits_birds.txt`: the real rows for
  the sample's birds, copied byte for byte from ../shared/fixtures (see README).
- `amphibio.csv`: AmphiBIO-format rows for the sample's six frogs, written here
  (no real AmphiBIO rows were at hand): plausible values, labelled synthetic.

`python -m bestiary.sample_archive.taxonomy_data [FIXTURES]` rewrites them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bestiary.sample_archive.species import DEMO, all_species, lineage

DATA = Path(__file__).parent / "data"
COLUMNS = ["taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID",
           "scientificName", "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet",
           "infraspecificEpithet", "taxonRank", "nameAccordingTo", "namePublishedIn", "taxonomicStatus",
           "nomenclaturalStatus", "taxonRemarks", "kingdom", "phylum", "class", "order", "family", "genus"]
BACKBONE_DATASET = "d7dddbf4-2cf0-4f39-9b2a-bb099caae36c"
# older name -> accepted name (real synonymy)
SYNONYMS = {
    "Parus caeruleus": "Cyanistes caeruleus", "Parus cyanus": "Cyanistes cyanus",
    "Parus atricapillus": "Poecile atricapillus", "Parus carolinensis": "Poecile carolinensis",
    "Parus palustris": "Poecile palustris", "Parus ater": "Periparus ater",
    "Carduelis spinus": "Spinus spinus", "Carduelis tristis": "Spinus tristis", "Carduelis pinus": "Spinus pinus",
    "Carpodacus mexicanus": "Haemorhous mexicanus", "Carpodacus purpureus": "Haemorhous purpureus",
    "Hyla versicolor": "Dryophytes versicolor", "Hyla chrysoscelis": "Dryophytes chrysoscelis",
    "Hyla cinerea": "Dryophytes cinereus",
}
AUTHORS = {"Parus major": "Linnaeus, 1758", "Turdus merula": "Linnaeus, 1758", "Strix aluco": "Linnaeus, 1758",
           "Bubo bubo": "(Linnaeus, 1758)", "Athene noctua": "(Scopoli, 1769)", "Fringilla coelebs": "Linnaeus, 1758",
           "Hyla arborea": "(Linnaeus, 1758)", "Turdus migratorius": "Linnaeus, 1766"}
# AmphiBIO columns this table fills (a subset of the real 38, same names)
AMPHIBIO_COLUMNS = ["id", "Order", "Family", "Genus", "Species", "Fos", "Ter", "Aqu", "Arb", "Leaves", "Flowers",
                    "Seeds", "Fruits", "Arthro", "Vert", "Diu", "Noc", "Crepu", "Body_mass_g"]
FROG_TRAITS = {  # Ter, Aqu, Arb, Arthro, Noc, Diu, mass (g)
    "Hyla arborea": (1, 1, 1, 1, 1, "NA", 7.0), "Dryophytes versicolor": (1, 1, 1, 1, 1, "NA", 8.0),
    "Dryophytes chrysoscelis": (1, 1, 1, 1, 1, "NA", 7.5), "Dryophytes cinereus": ("NA", 1, 1, 1, 1, "NA", 5.0),
    "Pseudacris crucifer": (1, 1, "NA", 1, 1, 1, 3.2), "Pseudacris regilla": (1, 1, "NA", 1, 1, 1, 4.0),
}


def _row(**kw) -> str:
    return "\t".join(str(kw.get(c, "") or "") for c in COLUMNS)


def _subspecies(sp, lin: dict) -> list[str]:
    """A subspecies row after Parus major: trinomials resolve to their species."""
    if sp.name != "Parus major":
        return []
    return [_row(taxonID=7190001, datasetID=BACKBONE_DATASET, parentNameUsageID=sp.gbif_key,
                 scientificName="Parus major major Linnaeus, 1758", canonicalName="Parus major major",
                 genericName="Parus", specificEpithet="major", infraspecificEpithet="major",
                 taxonRank="subspecies", taxonomicStatus="accepted", **lin)]


def backbone_lines() -> list[str]:
    """The demo world's backbone (world.backbone_lines) with authors, a subspecies, real synonyms and a
    cross-kingdom homonym."""
    from bestiary.sample_archive.world import backbone_lines as world_lines
    lines = world_lines(DEMO, AUTHORS, _subspecies)
    by_name = {s.name: s for s in DEMO.species}
    chain = {sp.genus: {r: n for r, n in lineage(sp)[:-1]} for sp in DEMO.species}
    for i, (old, new) in enumerate(sorted(SYNONYMS.items())):
        sp = by_name[new]
        g, e = old.split()
        lines.append(_row(taxonID=8000000 + i, datasetID=BACKBONE_DATASET, parentNameUsageID=sp.gbif_key,
                          acceptedNameUsageID=sp.gbif_key, scientificName=old, canonicalName=old, genericName=g,
                          specificEpithet=e, taxonRank="species", taxonomicStatus="heterotypic synonym", **chain[sp.genus]))
    # Prunella: a plant genus and a bird genus (a homonym across kingdoms; the guard keeps the animal)
    plant = {"kingdom": "Plantae", "phylum": "Tracheophyta", "class": "Magnoliopsida", "order": "Lamiales",
             "family": "Lamiaceae", "genus": "Prunella"}
    lines.append(_row(taxonID=6, datasetID=BACKBONE_DATASET, scientificName="Plantae", canonicalName="Plantae",
                      taxonRank="kingdom", taxonomicStatus="accepted", kingdom="Plantae"))
    lines.append(_row(taxonID=3144185, datasetID=BACKBONE_DATASET, scientificName="Prunella L.", canonicalName="Prunella",
                      genericName="Prunella", taxonRank="genus", taxonomicStatus="accepted", **plant))
    lines.append(_row(taxonID=5341300, datasetID=BACKBONE_DATASET, parentNameUsageID=3144185,
                      scientificName="Prunella vulgaris L.", canonicalName="Prunella vulgaris", genericName="Prunella",
                      specificEpithet="vulgaris", taxonRank="species", taxonomicStatus="accepted", **plant))
    return lines


def amphibio_lines() -> list[str]:
    lines = [",".join(AMPHIBIO_COLUMNS)]
    for i, sp in enumerate(s for s in all_species() if s.klass == "Amphibia"):
        ter, aqu, arb, arthro, noc, diu, mass = FROG_TRAITS[sp.name]
        vals = {"id": f"Anf{i + 1:04d}", "Order": sp.order, "Family": sp.family, "Genus": sp.genus, "Species": sp.name,
                "Fos": "NA", "Ter": ter, "Aqu": aqu, "Arb": arb, "Leaves": "NA", "Flowers": "NA", "Seeds": "NA",
                "Fruits": "NA", "Arthro": arthro, "Vert": "NA", "Diu": diu, "Noc": noc, "Crepu": "NA", "Body_mass_g": mass}
        lines.append(",".join(str(vals[c]) for c in AMPHIBIO_COLUMNS))
    return lines


def _copy_rows(src: Path, dst: Path, keep) -> None:
    """Header + the rows `keep(line)` accepts, bytes as in the source (line ends included)."""
    lines = src.read_bytes().split(b"\n")
    lines = [ln + b"\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])  # EltonTraits ends rows in CR CR LF
    dst.write_bytes(b"".join([lines[0]] + [ln for ln in lines[1:] if keep(ln.decode("utf-8", "replace"))]))


def write(fixtures: Path | None = None) -> None:
    DATA.mkdir(exist_ok=True)
    (DATA / "Taxon.tsv").write_text("\n".join(backbone_lines()) + "\n")
    (DATA / "amphibio.csv").write_text("\n".join(amphibio_lines()) + "\n")
    if fixtures is None:
        return
    birds = [s for s in all_species() if s.klass == "Aves"]
    names = {s.name for s in birds} | {old for old, new in SYNONYMS.items() if not old.startswith("Hyla")}
    codes = {s.code for s in birds} | {"chicka1", "x00195", "gretit3"}
    _copy_rows(fixtures / "taxonomy/ebird_taxonomy_v2025_7families.csv", DATA / "ebird_taxonomy.csv",
               lambda ln: ln.split(",")[2] in codes)
    _copy_rows(fixtures / "traits/avonet_birdlife_7families.csv", DATA / "avonet.csv",
               lambda ln: ln.split(",")[1] in names)
    _copy_rows(fixtures / "traits/eltontraits_BirdFuncDat_7families.txt", DATA / "eltontraits_birds.txt",
               lambda ln: len(ln.split("\t")) > 7 and ln.split("\t")[7] in names)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else None)


# ---------------------------------------------------------------- a backbone of a million rows, for scale tests

_SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "re", "si", "to", "vu", "xa",
              "ze", "cho", "pla", "tri", "ster", "gon", "phy", "rhi", "lo", "mi", "na", "or", "ul", "en"]
# real rows from GBIF answers (../shared/fixtures/gbif): the American toad and its synonyms, and a real
# species-level homonym across kingdoms (Orestias elegans: a killifish and an orchid)
REAL_ROWS = [
    dict(taxonID=2422872, canonicalName="Anaxyrus americanus", scientificName="Anaxyrus americanus (Holbrook, 1836)",
         genericName="Anaxyrus", specificEpithet="americanus", taxonRank="species", taxonomicStatus="accepted",
         kingdom="Animalia", phylum="Chordata", **{"class": "Amphibia"}, order="Anura", family="Bufonidae", genus="Anaxyrus"),
    dict(taxonID=5217021, acceptedNameUsageID=2422872, canonicalName="Bufo americanus",
         scientificName="Bufo americanus Holbrook, 1836", genericName="Bufo", specificEpithet="americanus",
         taxonRank="species", taxonomicStatus="synonym", kingdom="Animalia", phylum="Chordata", **{"class": "Amphibia"},
         order="Anura", family="Bufonidae", genus="Anaxyrus"),
    dict(taxonID=2422857, canonicalName="Anaxyrus", scientificName="Anaxyrus Tschudi, 1845", taxonRank="genus",
         taxonomicStatus="accepted", kingdom="Animalia", phylum="Chordata", **{"class": "Amphibia"}, order="Anura",
         family="Bufonidae", genus="Anaxyrus"),
    dict(taxonID=6727, canonicalName="Bufonidae", taxonRank="family", taxonomicStatus="accepted", kingdom="Animalia",
         phylum="Chordata", **{"class": "Amphibia"}, order="Anura", family="Bufonidae"),
    dict(taxonID=952, canonicalName="Anura", taxonRank="order", taxonomicStatus="accepted", kingdom="Animalia",
         phylum="Chordata", **{"class": "Amphibia"}, order="Anura"),
    dict(taxonID=2347046, canonicalName="Orestias elegans", scientificName="Orestias elegans Garman, 1895",
         genericName="Orestias", specificEpithet="elegans", taxonRank="species", taxonomicStatus="accepted",
         kingdom="Animalia", phylum="Chordata", **{"class": "Actinopterygii"}, order="Cyprinodontiformes",
         family="Cyprinodontidae", genus="Orestias"),
    dict(taxonID=2801263, canonicalName="Orestias elegans", scientificName="Orestias elegans Ridl.",
         genericName="Orestias", specificEpithet="elegans", taxonRank="species", taxonomicStatus="accepted",
         kingdom="Plantae", phylum="Tracheophyta", **{"class": "Liliopsida"}, order="Asparagales",
         family="Orchidaceae", genus="Orestias"),
    dict(taxonID=2480728, canonicalName="Gyps rueppelli", scientificName="Gyps rueppelli (Brehm, 1852)",
         genericName="Gyps", specificEpithet="rueppelli", taxonRank="species", taxonomicStatus="accepted",
         kingdom="Animalia", phylum="Chordata", **{"class": "Aves"}, order="Accipitriformes", family="Accipitridae",
         genus="Gyps"),
]


def write_big_backbone(path: str | Path, rows: int = 1_000_000, seed: int = 0) -> int:
    """The sample slice and the real rows above, among `rows` generated name usages (animals, plants and
    fungi; a tenth synonyms) in the dump's format.  Returns the number of rows written."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syl = np.array(_SYLLABLES)
    n_genera = max(1, rows // 20)
    genera = ["".join(syl[rng.integers(0, len(syl), 3)]).capitalize() + "us" for _ in range(n_genera)]
    kingdoms = np.array(["Animalia", "Plantae", "Fungi"])
    written = 0
    with open(path, "w") as fh:
        lines = backbone_lines()
        fh.write("\n".join(lines) + "\n")
        for r in REAL_ROWS:
            fh.write(_row(datasetID=BACKBONE_DATASET, **r) + "\n")
        written = len(lines) - 1 + len(REAL_ROWS)
        base = 20_000_000
        for start in range(0, rows - written, 50_000):
            n = min(50_000, rows - written - start)
            g = rng.integers(0, n_genera, n)
            ep = ["".join(p) for p in syl[rng.integers(0, len(syl), (n, 3))]]
            kd = kingdoms[rng.integers(0, 3, n)]
            syn = rng.random(n) < 0.1
            out = []
            for i in range(n):
                tid = base + start + i
                genus = genera[g[i]]
                acc = tid - 1 if syn[i] and i > 0 else ""
                out.append(_row(taxonID=tid, datasetID=BACKBONE_DATASET, parentNameUsageID=base - 1 - g[i],
                                acceptedNameUsageID=acc, scientificName=f"{genus} {ep[i]} Auct., 1900",
                                canonicalName=f"{genus} {ep[i]}", genericName=genus, specificEpithet=ep[i],
                                taxonRank="species", taxonomicStatus="synonym" if acc else "accepted",
                                kingdom=kd[i], genus=genus))
            fh.write("\n".join(out) + "\n")
        written = rows
    return written
