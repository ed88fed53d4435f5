"""Scientific names as archives write them, parsed into what a backbone can be searched for.

Pure functions.  A name parses into genus, epithet, infraspecific epithet and
authorship, and a kind: `species` (a binomial, perhaps with a subspecies),
`genus` (one word), `spuh` ("Strix sp."), `hybrid` ("A b x A c"), `slash`
("A b/c"), `uncertain` ("A cf. b") or `empty`.  Only `species` names may make
species-level samples; the rest keep their kind as the reason.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

NOT_SPECIES_KINDS = ("genus", "spuh", "hybrid", "slash", "uncertain", "empty", "unparsable")
_RANK_MARKERS = {"subsp.", "ssp.", "subsp", "ssp", "var.", "var", "f.", "forma", "morph"}
_SPUH = {"sp.", "sp", "spp.", "spp", "species", "indet.", "indet"}
_UNCERTAIN = {"cf.", "cf", "aff.", "aff", "?"}
_EPITHET = re.compile(r"[a-z][a-z\-]+")
_GENUS = re.compile(r"[A-Z][a-z\-]+")


@dataclass(frozen=True)
class ParsedName:
    kind: str
    genus: str | None = None
    epithet: str | None = None
    infraspecific: str | None = None
    authorship: str | None = None

    @property
    def canonical(self) -> str | None:
        """'Genus epithet' for species, 'Genus' for genus-only names."""
        if self.kind == "species":
            return f"{self.genus} {self.epithet}"
        return self.genus if self.kind == "genus" else None

    @property
    def key(self) -> str | None:
        return self.canonical.lower() if self.canonical else None


def fold(text: str) -> str:
    """Unicode to the ASCII that Latin names use: NFKD, combining marks dropped, odd spaces made plain."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[\u00a0\u2000-\u200b\u202f\u205f\u3000\ufeff]", " ", text)
    return text.replace("\u00d7", " x ")  # the multiplication sign marks hybrids


def parse_name(raw: str | None) -> ParsedName:
    """Parse one scientific name; never raises."""
    if raw is None or not str(raw).strip():
        return ParsedName("empty")
    text = fold(str(raw)).strip()
    words = text.split()
    lower = [w.lower().strip("()") for w in words]
    first = words[0].split("/")[0].capitalize()
    # the order matters on real eBird rows: 'A b x C d/e' is a hybrid, 'A/B sp.' and 'Anatidae (goose sp.)' spuhs
    if "x" in lower[1:] or "hybrid" in lower:
        return ParsedName("hybrid", genus=first)
    if any(w in _SPUH for w in lower[1:]):
        return ParsedName("spuh", genus=first)
    if "/" in text:
        return ParsedName("slash", genus=first)
    genus = words[0]
    if genus.islower() and _EPITHET.fullmatch(genus):
        genus = genus.capitalize()  # 'parus major': archives lower-case names too
    if not _GENUS.fullmatch(genus):
        return ParsedName("unparsable")
    if len(words) == 1:
        return ParsedName("genus", genus=genus)
    second = lower[1]
    if second in _UNCERTAIN:
        return ParsedName("uncertain", genus=genus)
    if second.startswith("(") and _GENUS.fullmatch(words[1].strip("()")):  # a subgenus: 'Parus (Parus) major'
        return parse_name(" ".join([genus] + words[2:]))
    if not _EPITHET.fullmatch(words[1]):  # 'Strix Linnaeus, 1758': a genus with its author
        return ParsedName("genus", genus=genus, authorship=" ".join(words[1:]))
    rest = words[2:]
    infra = None
    if rest and rest[0].lower() in _RANK_MARKERS:
        rest = rest[1:]
    if rest and _EPITHET.fullmatch(rest[0]) and rest[0] not in {"ex", "et", "in"}:
        infra, rest = rest[0], rest[1:]
    return ParsedName("species", genus=genus, epithet=words[1], infraspecific=infra,
                      authorship=" ".join(rest) or None)


def name_key(raw: str | None) -> str | None:
    """The lookup key: 'parus major' for 'Parus major major (Linnaeus, 1758)'; None when not a species."""
    return parse_name(raw).key if parse_name(raw).kind == "species" else None
