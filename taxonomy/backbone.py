"""GBIF backbone (`Taxon.tsv`): stream it against the names a catalog holds, then resolve those names.

Two streaming passes, never the whole file in memory:
1. rows whose canonical name is a wanted name, plus the species of the wanted
   genera and epithets (the candidates a misspelled name is fuzzy-matched to);
2. the accepted rows those synonyms point to, and the higher taxa (genus to
   kingdom) of every matched row, for lineage ids.
`Backbone` indexes the few rows found and resolves names over them in one process (tests, benchmarks);
the steps of a resolution are pure functions (`exact_rows`, `fuzzy_top`, `fuzzy_pick`, `settle`,
`lineage`), which the Beam stage runs as keyed joins instead (pipelines/enrich.py).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process

from bestiary.schemas.records import TAXON_RANKS
from bestiary.taxonomy import tables
from bestiary.taxonomy.names import ParsedName

COLUMNS = ["taxonID", "acceptedNameUsageID", "parentNameUsageID", "scientificName", "canonicalName",
           "genericName", "specificEpithet", "taxonRank", "taxonomicStatus",
           "kingdom", "phylum", "class", "order", "family", "genus"]
HIGHER = ("kingdom", "phylum", "class", "order", "family", "genus")


@dataclass
class Wanted:
    """What a pass looks for; plain sets so Beam can pickle it into a side input."""
    keys: set[str] = field(default_factory=set)         # lower-case canonical species names
    genera: set[str] = field(default_factory=set)       # fuzzy candidates: species of these genera ...
    epithets: set[str] = field(default_factory=set)     # ... or with these epithets
    ids: set[str] = field(default_factory=set)          # taxonIDs (accepted usages of synonyms)
    higher: set[str] = field(default_factory=set)       # names of higher taxa, for lineage ids
    kingdoms: tuple[str, ...] = ("Animalia",)           # fuzzy candidates come from these only

    @classmethod
    def for_names(cls, names: list[ParsedName], kingdoms: tuple[str, ...] = ("Animalia",)) -> "Wanted":
        sp = [n for n in names if n.kind == "species"]
        return cls(keys={n.key for n in sp}, genera={n.genus for n in sp}, epithets={n.epithet for n in sp},
                   kingdoms=tuple(kingdoms))


def predicate(want: Wanted):
    """A vectorised row filter for `tables.scan`."""
    keys, ids = pa.array(sorted(want.keys), pa.string()), pa.array(sorted(want.ids), pa.string())
    genera, epithets = pa.array(sorted(want.genera), pa.string()), pa.array(sorted(want.epithets), pa.string())
    higher = pa.array(sorted(want.higher), pa.string())
    kingdoms = pa.array(sorted(want.kingdoms), pa.string())

    def mask(t: pa.Table) -> pa.Array:
        rank = pc.utf8_lower(t["taxonRank"])
        species = pc.equal(rank, "species")
        m = pc.is_in(pc.utf8_lower(t["canonicalName"]), value_set=keys)
        m = pc.or_(m, pc.is_in(t["taxonID"], value_set=ids))
        block = pc.or_(pc.is_in(t["genericName"], value_set=genera), pc.is_in(t["specificEpithet"], value_set=epithets))
        m = pc.or_(m, pc.and_(pc.and_(species, block), pc.is_in(t["kingdom"], value_set=kingdoms)))
        m = pc.or_(m, pc.and_(pc.invert(species), pc.is_in(t["canonicalName"], value_set=higher)))
        return pc.fill_null(m, False)
    return mask


def scan_rows(path: str, want: Wanted, start: int = 0, end: int | None = None, counts: dict | None = None) -> list[dict]:
    rows: list[dict] = []
    for t in tables.scan(path, predicate(want), COLUMNS, start, end, counts=counts):
        rows.extend(t.to_pylist())
    return rows


def status(row: dict) -> str:
    s = (row.get("taxonomicStatus") or "").lower()
    return "synonym" if "synonym" in s else s  # heterotypic / homotypic / proparte synonym


@dataclass(frozen=True)
class Match:
    """How one looked-up name ended: an accepted species, or a reason it did not."""
    taxon_id: str | None
    method: str                  # exact | synonym | fuzzy | fuzzy_synonym | unresolved
    score: float | None = None
    matched_name: str | None = None
    reason: str | None = None


class Backbone:
    """An index over the backbone rows one build needs."""

    def __init__(self, rows: list[dict]):
        self.by_id: dict[str, dict] = {}
        self.by_key: dict[str, list[dict]] = defaultdict(list)
        self.higher: dict[tuple[str, str, str], str] = {}  # (kingdom, rank, name) -> accepted id
        self._by_word: dict[str, set[str]] | None = None    # genus or epithet -> species keys, built when needed
        self.add(rows)

    @property
    def by_word(self) -> dict[str, set[str]]:
        if self._by_word is None:
            self._by_word = defaultdict(set)
            for key in self.by_key:
                words = key.split()
                if len(words) == 2:
                    self._by_word["g:" + words[0]].add(key)
                    self._by_word["e:" + words[1]].add(key)
        return self._by_word

    def add(self, rows: list[dict]) -> None:
        self._by_word = None
        for r in rows:
            if r["taxonID"] in self.by_id:
                continue  # both passes may return a row
            self.by_id[r["taxonID"]] = r
            rank = (r.get("taxonRank") or "").lower()
            if rank == "species":
                self.by_key[(r.get("canonicalName") or "").lower()].append(r)
            elif rank in HIGHER and status(r) == "accepted":
                self.higher[(r.get("kingdom") or "", rank, r.get("canonicalName") or "")] = r["taxonID"]

    def lineage(self, taxon_id: str) -> dict:
        """Names and ids from kingdom to species of an accepted species."""
        row = self.by_id[taxon_id]
        return lineage(row, {r: self.higher.get((row.get("kingdom") or "", r, row.get(r) or "")) for r in HIGHER})

    def resolve(self, name: ParsedName, kingdoms: tuple[str, ...] = ("Animalia",), threshold: float | None = 90.0) -> Match:
        """`threshold` None: exact names and synonyms only."""
        if name.kind != "species":
            return Match(None, "unresolved", reason=name.kind)
        hit = exact_rows(self.by_key.get(name.key, []), kingdoms, fuzzy=threshold is not None)
        if isinstance(hit, Match):
            return hit
        method, score, matched, ours = "exact", None, name.canonical, hit
        if ours is None:
            block = self.by_word.get("g:" + name.genus.lower(), set()) | self.by_word.get("e:" + name.epithet, set())
            choices = {k: [r for r in self.by_key[k] if r.get("kingdom") in kingdoms] for k in block}
            picked = fuzzy_pick(fuzzy_top(name.key, {k: rows for k, rows in choices.items() if rows}, threshold))
            if isinstance(picked, Match):
                return picked
            method, (score, matched, ours) = "fuzzy", picked
        return settle(ours, self.by_id, method, score, matched)


# ---------------------------------------------------------------- one name's resolution, step by step
# Pure functions: `Backbone.resolve` runs them over an index in memory; the Beam stage runs the same
# steps as keyed joins (the name's rows, its genus' and epithet's species, its synonyms' accepted rows).

def exact_rows(rows: list[dict], kingdoms: tuple[str, ...], fuzzy: bool = True) -> Match | list[dict] | None:
    """The rows under a name's key -> the ones in our kingdoms; a Match when the name ends here;
    None when a fuzzy match comes next."""
    ours = [r for r in rows if r.get("kingdom") in kingdoms]
    if rows and not ours:  # a homonym in another kingdom is not our animal
        return Match(None, "unresolved", matched_name=rows[0]["canonicalName"],
                     reason=f"other_kingdom:{rows[0].get('kingdom')}")
    if not ours and not fuzzy:
        return Match(None, "unresolved", reason="no_match")
    return ours or None


def fuzzy_top(key: str, choices: dict[str, list[dict]], threshold: float) -> list[tuple[float, str, list[dict]]]:
    """The best two (score, species key, rows) of the candidates at or above the threshold."""
    best = process.extract(key, sorted(choices), scorer=fuzz.ratio, score_cutoff=threshold, limit=2)
    return [(float(score), k, choices[k]) for k, score, _ in best]


def fuzzy_pick(tops: list[tuple[float, str, list[dict]]]) -> Match | tuple[float, str, list[dict]]:
    """The candidates' best (from one or several blocks) -> (score, matched name, rows), or why none."""
    best = sorted({k: (s, k, rows) for s, k, rows in tops}.values(), key=lambda t: (-t[0], t[1]))[:2]
    if not best:
        return Match(None, "unresolved", reason="no_match")
    if len(best) == 2 and best[1][0] == best[0][0]:
        return Match(None, "unresolved", best[0][0], best[0][1], reason="fuzzy_ambiguous")
    score, _, rows = best[0]
    return round(score, 1), rows[0]["canonicalName"], rows


def accepted_ids(rows: list[dict]) -> tuple[set[str], bool]:
    """Accepted ids the rows stand for, and whether any came through a synonym."""
    acc = {r["taxonID"] for r in rows if status(r) == "accepted"}
    if acc:
        return acc, False
    syn = {r.get("acceptedNameUsageID") for r in rows if status(r) == "synonym" and r.get("acceptedNameUsageID")}
    if syn:
        return syn, True
    return {r["taxonID"] for r in rows if status(r) == "doubtful"}, False


def settle(ours: list[dict], present: Container[str], method: str, score: float | None, matched: str | None) -> Match:
    """The matched rows -> one accepted species, if exactly one of the ids they stand for is in the backbone."""
    ids, via_synonym = accepted_ids(ours)
    ids = {i for i in ids if i in present}
    if len(ids) != 1:
        return Match(None, "unresolved", score, matched, reason="ambiguous" if ids else "accepted_usage_missing")
    if via_synonym:
        method = "synonym" if method == "exact" else "fuzzy_synonym"
    return Match(ids.pop(), method, score, matched)


def lineage(row: dict, higher_ids: dict[str, str | None]) -> dict:
    """An accepted species' row and its higher taxa's ids -> names and ids from kingdom to species."""
    out = {r: row.get(r) or None for r in HIGHER}
    out["species"] = row.get("canonicalName")
    out.update({f"{r}_id": higher_ids.get(r) for r in HIGHER})
    out["species_id"] = row["taxonID"]
    return out


def higher_key(kingdom: str | None, rank: str, name: str | None) -> str:
    """What a higher taxon is known by: its kingdom, rank and name."""
    return f"{kingdom or ''}|{rank}|{name or ''}"


def second_pass(rows: list[dict] | Backbone, names: list[ParsedName], kingdoms: tuple[str, ...],
                threshold: float | None) -> Wanted:
    """After pass 1: the accepted usages and higher taxa the matches need."""
    bb = rows if isinstance(rows, Backbone) else Backbone(rows)
    want = Wanted()
    for n in names:
        m = bb.resolve(n, kingdoms, threshold)
        hit_rows = bb.by_key.get((m.matched_name or "").lower(), [])
        for r in hit_rows:
            if r.get("acceptedNameUsageID"):
                want.ids.add(r["acceptedNameUsageID"])
            want.higher.update(r[h] for h in HIGHER if r.get(h))
        if m.taxon_id is None and m.reason == "accepted_usage_missing":
            want.ids.update(r.get("acceptedNameUsageID") for r in hit_rows if r.get("acceptedNameUsageID"))
    return want


def resolve_all(path: str, names: list[ParsedName], kingdoms: tuple[str, ...] = ("Animalia",),
                threshold: float | None = 90.0, counts: dict | None = None) -> tuple[Backbone, dict[str, Match]]:
    """Both passes in this process (the Beam stage runs them as ranges over workers)."""
    bb = Backbone(scan_rows(path, Wanted.for_names(names, kingdoms), counts=counts))
    bb.add(scan_rows(path, second_pass(bb, names, kingdoms, threshold)))
    return bb, {n.key: bb.resolve(n, kingdoms, threshold) for n in names if n.key}


TAXON_COLUMNS = ("taxon_id", "accepted_name", "rank", *TAXON_RANKS, *(f"{r}_id" for r in TAXON_RANKS))
