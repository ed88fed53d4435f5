"""The sample archive's taxonomy: real species in a real tree (class to species).

Ids are generated (stable, but not the archives' real ids); names and the tree
are real.  Each family carries a sound band and an image palette, each genus a
call pattern and a shape, so media follow the tree.  The demo's world is the 34
species below; `world.draw_world` draws bigger ones from a real taxonomy table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# family: (class, order, band_lo_hz, band_hi_hz, hue 0-360)
FAMILIES = {
    "Paridae": ("Aves", "Passeriformes", 2600, 5200, 210),
    "Turdidae": ("Aves", "Passeriformes", 1300, 2800, 30),
    "Fringillidae": ("Aves", "Passeriformes", 5200, 8800, 55),
    "Strigidae": ("Aves", "Strigiformes", 250, 900, 280),
    "Hylidae": ("Amphibia", "Anura", 900, 2400, 120),
}
# genus: (family, call pattern, shape)
GENERA = {
    "Parus": ("Paridae", "whistle", "circle"),
    "Cyanistes": ("Paridae", "trill", "triangle"),
    "Poecile": ("Paridae", "sweep_down", "square"),
    "Periparus": ("Paridae", "warble", "diamond"),
    "Turdus": ("Turdidae", "warble", "circle"),
    "Catharus": ("Turdidae", "sweep_up", "triangle"),
    "Sialia": ("Turdidae", "whistle", "square"),
    "Fringilla": ("Fringillidae", "trill", "circle"),
    "Spinus": ("Fringillidae", "sweep_down", "diamond"),
    "Haemorhous": ("Fringillidae", "warble", "square"),
    "Strix": ("Strigidae", "harmonic", "circle"),
    "Bubo": ("Strigidae", "sweep_down", "square"),
    "Athene": ("Strigidae", "trill", "triangle"),
    "Hyla": ("Hylidae", "buzz", "circle"),
    "Dryophytes": ("Hylidae", "trill", "diamond"),
    "Pseudacris": ("Hylidae", "sweep_up", "triangle"),
}
# (scientific name, common name, eBird-style code or None)
SPECIES = [
    ("Parus major", "Great Tit", "gretit1"),
    ("Parus monticolus", "Green-backed Tit", "grbtit1"),
    ("Cyanistes caeruleus", "Eurasian Blue Tit", "blutit"),
    ("Cyanistes cyanus", "Azure Tit", "azutit2"),
    ("Poecile atricapillus", "Black-capped Chickadee", "bkcchi"),
    ("Poecile carolinensis", "Carolina Chickadee", "carchi"),
    ("Poecile palustris", "Marsh Tit", "martit2"),
    ("Periparus ater", "Coal Tit", "coatit2"),
    ("Turdus merula", "Eurasian Blackbird", "eurbla"),
    ("Turdus philomelos", "Song Thrush", "sonthr1"),
    ("Turdus migratorius", "American Robin", "amerob"),
    ("Turdus viscivorus", "Mistle Thrush", "misthr1"),
    ("Catharus guttatus", "Hermit Thrush", "herthr"),
    ("Catharus ustulatus", "Swainson's Thrush", "swathr"),
    ("Sialia sialis", "Eastern Bluebird", "easblu"),
    ("Sialia mexicana", "Western Bluebird", "wesblu"),
    ("Fringilla coelebs", "Common Chaffinch", "comcha"),
    ("Fringilla montifringilla", "Brambling", "brambl"),
    ("Spinus spinus", "Eurasian Siskin", "eursis"),
    ("Spinus tristis", "American Goldfinch", "amegfi"),
    ("Spinus pinus", "Pine Siskin", "pinsis"),
    ("Haemorhous mexicanus", "House Finch", "houfin"),
    ("Haemorhous purpureus", "Purple Finch", "purfin"),
    ("Strix aluco", "Tawny Owl", "tawowl1"),
    ("Strix varia", "Barred Owl", "brdowl"),
    ("Bubo bubo", "Eurasian Eagle-Owl", "eueowl1"),
    ("Bubo virginianus", "Great Horned Owl", "grhowl"),
    ("Athene noctua", "Little Owl", "litowl1"),
    ("Hyla arborea", "European Tree Frog", None),
    ("Dryophytes versicolor", "Gray Treefrog", None),
    ("Dryophytes chrysoscelis", "Cope's Gray Treefrog", None),
    ("Dryophytes cinereus", "Green Treefrog", None),
    ("Pseudacris crucifer", "Spring Peeper", None),
    ("Pseudacris regilla", "Pacific Treefrog", None),
]
# iNaturalist's real ids for the upper ranks; lower ranks get generated ids.
INAT_UPPER = {"Life": 48460, "Animalia": 1, "Chordata": 2, "Aves": 3, "Amphibia": 20978, "Mammalia": 40151}
GBIF_UPPER = {"Animalia": 1, "Chordata": 44, "Aves": 212, "Amphibia": 131, "Mammalia": 359}


@dataclass(frozen=True)
class Species:
    index: int
    name: str
    common: str
    code: str | None
    genus: str
    family: str
    order: str
    klass: str
    pattern: str
    shape: str
    band: tuple[int, int]
    hue: int
    inat_id: int
    gbif_key: int
    position: float = 0.5                      # where it sits inside its genus, 0..1: siblings differ, stay close
    inat_higher: tuple[int, ...] = ()          # iNaturalist ids, kingdom to genus
    gbif_higher: tuple[int, ...] = ()          # GBIF keys, kingdom to genus

    @property
    def epithet(self) -> str:
        return self.name.split()[1]

    @property
    def group(self) -> str:
        return {"Aves": "birds", "Amphibia": "frogs", "Mammalia": "land mammals"}.get(self.klass, "birds")

    def gbif_keys(self) -> dict[str, int]:
        """Name -> GBIF key for its lineage (the species included)."""
        names = [n for _, n in lineage(self)]
        return dict(zip(names, list(self.gbif_higher) + [self.gbif_key]))


def _ids(names: list[str], start: int) -> dict[str, int]:
    return {n: start + i for i, n in enumerate(names)}


@dataclass
class World:
    """Families (class, order, band lo, band hi, hue), genera (family, call pattern, shape) and species
    (scientific name, common name, eBird code or None): the tree the archive's media follow."""
    families: dict[str, tuple[str, str, int, int, int]]
    genera: dict[str, tuple[str, str, str]]
    rows: list[tuple[str, str, str | None]]
    name: str = "demo"
    species: list[Species] = field(init=False)
    inat_ids: dict[str, int] = field(init=False)
    gbif_keys: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        orders = sorted({v[1] for v in self.families.values()})
        families, genera = sorted(self.families), sorted(self.genera)
        self.inat_ids = {**INAT_UPPER, **_ids(orders, 910000), **_ids(families, 920000), **_ids(genera, 930000)}
        big = len(families) >= 100 or len(genera) >= 100   # the demo's ranges hold 100 of each
        self.gbif_keys = {**GBIF_UPPER, **_ids(orders, 7000100), **_ids(families, 7001000 if big else 7000200),
                          **_ids(genera, 7010000 if big else 7000300)}
        siblings: dict[str, list[str]] = {}
        for name, _, _ in self.rows:
            siblings.setdefault(name.split()[0], []).append(name)
        out = []
        for i, (name, common, code) in enumerate(self.rows):
            genus = name.split()[0]
            family, pattern, shape = self.genera[genus]
            klass, order, lo, hi, hue = self.families[family]
            sib = siblings[genus]
            upper = ["Animalia", "Chordata", klass, order, family, genus]
            out.append(Species(i, name, common, code, genus, family, order, klass, pattern, shape, (lo, hi), hue,
                               940000 + i, 7100000 + i, (sib.index(name) + 0.5) / len(sib),
                               tuple(self.inat_ids[n] for n in upper), tuple(self.gbif_keys[n] for n in upper)))
        self.species = out

    def genus_species(self, genus: str) -> Species | None:
        """A species of this genus (its lineage above the species is the genus's)."""
        return next((s for s in self.species if s.genus == genus), None)


DEMO = World(FAMILIES, GENERA, SPECIES)
ORDERS = sorted({v[1] for v in FAMILIES.values()})
INAT_IDS = DEMO.inat_ids
GBIF_KEYS = DEMO.gbif_keys


def all_species() -> list[Species]:
    """The demo world's species."""
    return DEMO.species


def lineage(sp: Species) -> list[tuple[str, str]]:
    """(rank, name) from kingdom to species."""
    return [("kingdom", "Animalia"), ("phylum", "Chordata"), ("class", sp.klass), ("order", sp.order),
            ("family", sp.family), ("genus", sp.genus), ("species", sp.name)]
