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


HABITATS = ("forest", "grassland", "desert", "wetland", "mountain", "urban")
LOCOMOTION = ("arboreal", "aquatic", "terrestrial", "fossorial", "aerial")
CLIMATES = ("tropical", "subtropical", "temperate", "boreal", "polar")


def _flags(traits: dict, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if traits.get(n) is True]


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def trait_sentence(traits: dict) -> str | None:
    """One sentence from the known traits (AnimalCLAP's vocabulary); unknown traits are left out, never guessed.

    `traits` maps lower-case trait names to a category (`diet`, `activity`, `locomotion`, `social`),
    a yes/no (`predator`, `migratory`) or flags (`forest` … `urban`, `arboreal` … `aerial`,
    `tropical` … `polar`)."""
    parts = []
    lead = " ".join(str(traits[k]).lower() for k in ("activity", "social") if traits.get(k))
    diet = traits.get("diet")
    if lead or diet:
        phrase = f"{lead + ' ' if lead else ''}{str(diet).lower() if diet else 'species'}"
        parts.append(f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}")
    habitats = _flags(traits, HABITATS)
    if habitats:
        parts.append(f"found in {_join(habitats)} habitats")
    moves = _flags(traits, LOCOMOTION) or ([str(traits["locomotion"]).lower()] if traits.get("locomotion") else [])
    if moves:
        parts.append(f"{_join(moves)} in its movement")
    climates = _flags(traits, CLIMATES)
    if climates:
        parts.append(f"of {_join(climates)} climates")
    if traits.get("migratory") is not None:
        parts.append("migratory" if traits["migratory"] else "not migratory")
    if traits.get("predator") is not None:
        parts.append("a predator" if traits["predator"] else "not a predator")
    return (", ".join(parts)) if parts else None


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


def all_captions(fields: dict[str, str], key: str, traits: dict | None = None) -> list[dict[str, str]]:
    """The five kinds, plus a `traits` caption when traits are known."""
    out = [{"kind": k, "text": caption(k, fields, key)} for k in KINDS]
    sentence = trait_sentence(traits or {})
    if sentence:
        out.append({"kind": "traits", "text": f"The sound of a {fields['common']}, {sentence}."})
    return out


def class_prompt(kind: str, fields: dict[str, str]) -> str:
    """The zero-shot text for a class: the canonical phrasing of a text type."""
    return caption(kind, fields, key="")
