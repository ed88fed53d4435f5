"""Real recordings from PyPI packages and a backbone of their real lineage, for the tests that need them.

pykanto 0.1.8 (MIT; great tit segments recorded by Nilo Merino Recalde, Bengalese finch songs from
Tachibana, Koumura & Okanoya 2015, Xeno-canto storm petrels) and vocalpy 0.10.3 (BSD-3-Clause; zebra finch
calls from Elie & Theunissen 2020 and songs from Sound Analysis Pro, a Bengalese finch song from Nicholson
et al. 2017, deer-mouse pup calls from Jourjine et al. 2023) are fetched as wheels from the package index
and unpacked.  The lineage rows come from ../shared/fixtures: eBird/Clements 2024 for birds, Ernest's
(2003) mammal life histories for mammals.
"""
from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import fixture_path


def wheel_files(name: str, version: str, where: Path, suffixes: tuple[str, ...] = (".wav", ".json", ".WAV",
                                                                                     ".JSON")) -> dict[str, bytes]:
    """Every file of a wheel whose name ends in one of `suffixes`, by its path in the wheel."""
    where.mkdir(parents=True, exist_ok=True)
    if not list(where.glob(f"{name}-{version}-*.whl")):
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}",
                            "-d", str(where)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(where.glob(f"{name}-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(suffixes)}


BACKBONE_HEADER = ["taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID",
                   "scientificName", "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet",
                   "infraspecificEpithet", "taxonRank", "nameAccordingTo", "namePublishedIn", "taxonomicStatus",
                   "nomenclaturalStatus", "taxonRemarks", "kingdom", "phylum", "class", "order", "family", "genus"]


def lineages(species: list[str]) -> dict[str, dict]:
    """Kingdom-to-genus names of each species, read from the real taxonomy tables in the fixtures."""
    want, out = set(species), {}
    with open(fixture_path("taxonomy", "ebird_2024_taxonomy.csv"), newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["scientific_name"] in want:
                out[r["scientific_name"]] = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Aves",
                                             "order": r["ebird_order"], "family": r["ebird_family"],
                                             "genus": r["genus"]}
    with open(fixture_path("traits", "mammal_lifehistories_v2.txt"), newline="", encoding="latin-1") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            name = f"{r['Genus']} {r['species']}"
            if name in want:
                out[name] = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia", "order": r["order"],
                             "family": r["family"], "genus": r["Genus"]}
    return out


def write_backbone(path: Path, species: list[str]) -> dict[str, dict]:
    """A GBIF-backbone-shaped Taxon.tsv holding these species and their higher taxa (ids numbered here; the
    names are the tables')."""
    found = lineages(species)
    ids: dict[tuple, int] = {}
    rows = []
    ranks = ("kingdom", "phylum", "class", "order", "family", "genus")

    def add(rank: str, name: str, lineage: dict, parent: int | None) -> int:
        key = (rank, name)
        if key in ids:
            return ids[key]
        ids[key] = 9_000_000 + len(ids)
        genus, _, epithet = name.partition(" ")
        row = {h: "" for h in BACKBONE_HEADER}
        upto = ranks if rank == "species" else ranks[: ranks.index(rank) + 1]   # a row names its own lineage
        row.update(taxonID=str(ids[key]), parentNameUsageID=str(parent or ""), scientificName=name,
                   canonicalName=name, genericName=genus if rank in ("genus", "species") else "",
                   specificEpithet=epithet, taxonRank=rank, taxonomicStatus="accepted",
                   **{r: lineage[r] for r in upto})
        rows.append(row)
        return ids[key]

    for name, lineage in sorted(found.items()):
        parent = None
        for r in ranks:
            parent = add(r, lineage[r], lineage, parent)
        add("species", name, lineage, parent)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, BACKBONE_HEADER, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        w.writeheader()
        w.writerows(rows)
    return found
