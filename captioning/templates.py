"""Template captions: AnimalCLAP's five text types, several phrasings each, chosen by key.

The five types: common name, scientific name, taxonomy (class, order,
family, genus, species), scientific + common, taxonomy + common.  The
phrasing is picked from a hash of the sample key, so a rebuild writes the
same text and different samples of a species read differently.
"""
from __future__ import annotations

import hashlib

KINDS = ("common", "scientific", "taxonomy", "scientific_common", "taxonomy_common")

PHRASINGS = {
    "common": ["The sound of a {common}.", "A {common} calling.", "Audio recording of a {common}.",
               "{common} vocalization."],
    "scientific": ["The sound of {scientific}.", "{scientific} calling.", "A recording of {scientific}."],
    "taxonomy": ["{taxonomy}.", "An animal of {taxonomy}.", "Taxonomy: {taxonomy}."],
    "scientific_common": ["The sound of a {common} ({scientific}).", "{scientific}, the {common}, calling.",
                          "A recording of {scientific}, commonly called {common}."],
    "taxonomy_common": ["{taxonomy}, the {common}.", "A {common}: {taxonomy}.",
                        "The sound of a {common}, {taxonomy}."],
}


def _pick(options: list[str], key: str, kind: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{key}|{kind}".encode()).digest()[:4], "big")
    return options[h % len(options)]


def taxonomy_text(lineage: dict[str, str | None]) -> str:
    """'class Aves, order Passeriformes, family Paridae, genus Parus, species Parus major'."""
    parts = [f"{rank} {lineage[rank]}" for rank in ("class", "order", "family", "genus", "species") if lineage.get(rank)]
    return ", ".join(parts)


def fields_for(scientific: str, common: str | None, lineage: dict[str, str | None]) -> dict[str, str]:
    return {"scientific": scientific, "common": common or scientific, "taxonomy": taxonomy_text(lineage)}


def caption(kind: str, fields: dict[str, str], key: str = "") -> str:
    """One caption of `kind`; with an empty key the first (canonical) phrasing."""
    if kind not in PHRASINGS:
        raise ValueError(f"unknown caption kind {kind!r} (known: {', '.join(KINDS)})")
    options = PHRASINGS[kind]
    template = options[0] if not key else _pick(options, key, kind)
    text = template.format(**fields)
    return text[0].upper() + text[1:]


def all_captions(fields: dict[str, str], key: str) -> list[dict[str, str]]:
    return [{"kind": k, "text": caption(k, fields, key)} for k in KINDS]


def class_prompt(kind: str, fields: dict[str, str]) -> str:
    """The zero-shot text for a class: the canonical phrasing of a text type."""
    return caption(kind, fields, key="")
