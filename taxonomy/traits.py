"""Trait tables -> bestiary's trait vocabulary, by declarative mapping files.

A mapping (YAML) names the table's name columns and, for each trait, one rule
over its columns.  No code per table: AVONET, EltonTraits, AmphiBIO and
PanTHERIA ship as mappings in `mappings/`, and a user's own CSV needs only a
new file.  Missing markers (`NA`, `-999`, empty) stay missing, never 0.

Rules (one per trait; `column` or `columns`/`sum` say what they read):
  map:      {raw value: output}; `else:` gives the output for any other present value
  between:  [lo, hi] on a number (`abs: true` first): true inside, false outside
  at_least: a number threshold (with `sum: [columns]` it applies to their sum)
  first:    {column: output}: the output of the first column that is 1 (none is 1: missing)
  largest:  {column: output}: the output of the column with the largest number (all missing: missing)
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bestiary.taxonomy.names import parse_name

CATEGORIES = {
    "diet": ("carnivore", "piscivore", "insectivore", "herbivore", "frugivore", "granivore", "nectarivore",
             "omnivore", "scavenger"),
    "activity": ("diurnal", "nocturnal", "crepuscular"),
    "locomotion": ("aerial", "arboreal", "terrestrial", "aquatic", "fossorial", "generalist"),
    "social": ("solitary", "pair", "group"),
}
YES_NO = ("predator", "migratory")
FLAGS = ("arboreal", "aquatic", "terrestrial", "fossorial", "aerial",
         "forest", "grassland", "desert", "wetland", "mountain", "urban",
         "tropical", "subtropical", "temperate", "boreal", "polar")
TRAITS = (*CATEGORIES, *YES_NO, *FLAGS)   # AnimalCLAP's 22
BUILTIN = Path(__file__).parent / "mappings"


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class Mapping:
    name: str
    names: tuple[str, ...]                # name columns, or '{Genus} {species}' templates, tried in order
    rules: dict[str, dict]
    missing: frozenset[str] = frozenset({"", "NA", "N/A", "-999", "-999.0", "-999.00"})
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    citation: str = ""
    columns: frozenset[str] = field(default_factory=frozenset)


def load_mapping(spec: str) -> Mapping:
    """A built-in mapping by name ('avonet') or a YAML file path; checked against the vocabulary."""
    path = BUILTIN / f"{spec}.yaml" if (BUILTIN / f"{spec}.yaml").exists() else Path(spec)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in BUILTIN.glob("*.yaml")))
        raise MappingError(f"no trait mapping {spec!r} (built-in: {known}; or give a YAML path)")
    doc = yaml.safe_load(path.read_text())
    rules = doc.get("traits") or {}
    for trait, rule in rules.items():
        if trait not in TRAITS:
            raise MappingError(f"{path.name}: {trait!r} is not a trait (vocabulary: {', '.join(TRAITS)})")
        allowed = CATEGORIES.get(trait, (True, False))
        outs = [*(rule.get("map") or {}).values(), *(rule.get("first") or {}).values(),
                *(rule.get("largest") or {}).values()]
        if "else" in rule:
            outs.append(rule["else"])
        bad = [o for o in outs if o not in allowed]
        if bad:
            raise MappingError(f"{path.name}: {trait} cannot be {bad[0]!r} (allowed: {', '.join(map(str, allowed))})")
    used = set()
    for rule in rules.values():
        used.update([rule["column"]] if "column" in rule else [])
        used.update(rule.get("sum") or [])
        used.update(rule.get("first") or {})
        used.update(rule.get("largest") or {})
    missing = doc.get("missing")
    return Mapping(doc.get("table", path.stem), tuple(doc["names"]), rules,
                   frozenset(map(str, missing)) if missing is not None else Mapping.missing,
                   doc.get("delimiter", ","), doc.get("encoding", "utf-8-sig"), doc.get("citation", ""),
                   frozenset(used))


def read_table(path: str, mapping: Mapping) -> list[dict]:
    """The rows of a trait table (small: thousands of species); CR, LF or CRLF line ends."""
    from bestiary.pipelines import io as fio   # here, not above: the trait vocabulary must import without Beam
    text = fio.read_bytes(path).decode(mapping.encoding, errors="replace")
    rows = list(csv.DictReader(io.StringIO(text, newline=None), delimiter=mapping.delimiter))
    if rows:
        absent = [c for c in sorted(mapping.columns) if c not in rows[0]]
        if absent:
            raise MappingError(f"{path}: mapping {mapping.name} needs columns that are not there: {', '.join(absent)}")
    return rows


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def apply_rule(rule: dict, row: dict, missing: frozenset[str]):
    """One trait's value for one row, or None when the table does not say."""
    def get(col: str) -> str | None:
        v = (row.get(col) or "").strip()
        if v in missing or (_number(v) is not None and _number(v) in numeric_missing):
            return None  # '-999.00' is PanTHERIA's '-999'
        return v

    numeric_missing = {n for n in map(_number, missing) if n is not None}
    if "first" in rule:
        return next((out for c, out in rule["first"].items() if _number(get(c) or "") == 1), None)
    if "largest" in rule:
        nums = [(_number(get(c) or ""), i, out) for i, (c, out) in enumerate(rule["largest"].items())]
        nums = [(-n, i, out) for n, i, out in nums if n is not None]
        return min(nums)[2] if nums else None
    if "sum" in rule:
        nums = [_number(get(c) or "") for c in rule["sum"]]
        if any(n is None for n in nums):
            return None
        value = sum(nums)
    else:
        raw = get(rule["column"])
        if raw is None:
            return None
        if "map" in rule:
            table = {str(k): v for k, v in rule["map"].items()}
            num = _number(raw)
            if raw not in table and num is not None and num.is_integer():
                raw = str(int(num))  # '3.00' -> '3'
            return table.get(raw, rule.get("else"))
        value = _number(raw)
        if value is None:
            return None
    if rule.get("abs"):
        value = abs(value)
    if "between" in rule:
        lo, hi = rule["between"]
        return lo <= value < hi
    if "at_least" in rule:
        return value >= rule["at_least"]
    raise MappingError(f"rule {rule} says nothing to do with its value")


def row_names(row: dict, mapping: Mapping) -> list[str]:
    """The row's name keys, in the mapping's order ('{Genus} {species}' templates joined first)."""
    out = []
    for spec in mapping.names:
        raw = spec.format(**{k: (v or "") for k, v in row.items() if k}) if "{" in spec else row.get(spec)
        key = parse_name(raw).key if parse_name(raw).kind == "species" else None
        if key and key not in out:
            out.append(key)
    return out


def row_traits(row: dict, mapping: Mapping) -> dict:
    out = {}
    for trait, rule in mapping.rules.items():
        v = apply_rule(rule, row, mapping.missing)
        if v is not None:
            out[trait] = v
    return out


@dataclass
class TraitJoin:
    traits: dict[str, dict] = field(default_factory=dict)      # taxon_id -> {trait: value}
    sources: dict[str, dict] = field(default_factory=dict)     # taxon_id -> {trait: table}
    conflicts: list[dict] = field(default_factory=list)
    matched: dict[str, int] = field(default_factory=dict)      # table -> rows joined to a taxon


def join_traits(tables: list[tuple[Mapping, list[dict]]], accepted: dict[str, str], wanted: set[str]) -> TraitJoin:
    """Traits of the wanted taxa.  `accepted` maps a name key (accepted name or synonym) to its accepted
    taxon id, so a table's own taxonomy (EltonTraits' 'Carduelis spinus') meets today's names.  Earlier
    tables win; a different value from a later one is a conflict, reported."""
    out = TraitJoin()
    for mapping, rows in tables:
        joined = 0
        for row in rows:
            taxon = next((accepted[k] for k in row_names(row, mapping) if k in accepted), None)
            if taxon is None or taxon not in wanted:
                continue
            joined += 1
            have, src = out.traits.setdefault(taxon, {}), out.sources.setdefault(taxon, {})
            for trait, value in row_traits(row, mapping).items():
                if trait not in have:
                    have[trait], src[trait] = value, mapping.name
                elif have[trait] != value:
                    out.conflicts.append({"taxon_id": taxon, "trait": trait, "kept": have[trait], "kept_from": src[trait],
                                          "other": value, "other_from": mapping.name})
        out.matched[mapping.name] = joined
    return out
