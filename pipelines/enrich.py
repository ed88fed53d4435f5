"""Enrich stage: each record's name -> an accepted species with its lineage.

For now lineage comes from GBIF's species match (when `taxonomy.gbif_base_url`
is set) or from iNaturalist's own taxa API (ancestors).  Only species-level
matches make samples; anything else is kept in the catalog and rejected for
samples with a reason.
"""
from __future__ import annotations

import re

import apache_beam as beam

from bestiary.connectors import gbif
from bestiary.connectors.http import FetchError, HttpClient, policy_from
from bestiary.pipelines import io
from bestiary.pipelines.cache import cached_json
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import TAXON_RANKS

_AUTHOR = re.compile(r"\s*\(?[A-Z][a-zA-Z'\-. ]+,?\s*\d{4}\)?\s*$")


def name_key(scientific_name: str | None) -> str | None:
    """'Parus major major (Linnaeus, 1758)' -> 'parus major'; genus-only names keep one word."""
    if not scientific_name:
        return None
    name = _AUTHOR.sub("", scientific_name.strip())
    words = [w for w in re.split(r"\s+", name) if w]
    if not words:
        return None
    return " ".join(words[:2]).lower()


def is_species_name(key: str | None) -> bool:
    """Two plain words: not 'sp.', not a hybrid ('x'), not a slash or a spuh."""
    if not key:
        return False
    words = key.split()
    return len(words) == 2 and all(re.fullmatch(r"[a-z][a-z\-]+", w) for w in words) and words[1] not in {"sp", "spp"}


def resolve_gbif(client: HttpClient, base_url: str, key: str, cache: str) -> dict | None:
    url, params = gbif.match_request(base_url, key)
    return gbif.parse_match(cached_json(client, cache, url, params))


def resolve_inat(client: HttpClient, base_url: str, key: str, cache: str) -> dict | None:
    """iNaturalist's taxa search; the ancestors give the lineage."""
    body = cached_json(client, cache, f"{base_url}/v1/taxa", {"q": key, "rank": "species", "is_active": "true"})
    hit = next((t for t in body.get("results", []) if str(t.get("name", "")).lower() == key), None)
    if hit is None:
        return None
    out = {"taxon_id": f"inat:{hit['id']}", "rank": hit.get("rank"), "accepted_name": hit["name"],
           "common_name": hit.get("preferred_common_name")}
    for anc in hit.get("ancestors", []) + [hit]:
        if anc.get("rank") in TAXON_RANKS:
            out[anc["rank"]] = anc["name"]
            out[f"{anc['rank']}_id"] = f"inat:{anc['id']}"
    return out


class ResolveName(beam.DoFn):
    """name key -> taxon row (or a row with method 'unresolved' and the reason)."""

    def __init__(self, cfg: BuildConfig):
        self.gbif_url = cfg.taxonomy.gbif_base_url
        inat = [s for s in cfg.sources if s.name == "inaturalist"]
        self.inat_url = inat[0].base_url if inat else None
        self.policy = policy_from(cfg.http, cfg.sources)
        self.cache = io.join(cfg.out, "cache", "taxonomy")

    def setup(self) -> None:
        self.client = HttpClient(self.policy)

    def process(self, item: tuple[str, str | None]):
        key, common = item
        row = {"name_key": key, "common_name": common}
        if not is_species_name(key):
            yield {**row, "method": "unresolved", "rank": "not_species_level"}
            return
        try:
            if self.gbif_url:
                hit, method = resolve_gbif(self.client, self.gbif_url, key, self.cache), "gbif_match"
            elif self.inat_url:
                hit, method = resolve_inat(self.client, self.inat_url, key, self.cache), "inat_taxa"
            else:
                hit, method = None, "no_taxonomy_source"
        except FetchError as err:
            yield {**row, "method": "unresolved", "rank": err.reason}
            return
        if not hit or hit.get("rank") != "species" or not hit.get("species"):
            yield {**row, "method": "unresolved", "rank": (hit or {}).get("rank") or "no_match"}
            return
        out = {**row, **{k: v for k, v in hit.items() if k in TAXON_FIELD_NAMES}, "method": method}
        out["accepted_name"] = hit.get("species") or hit.get("accepted_name")
        out["taxon_id"] = hit.get("species_id") or hit.get("taxon_id")
        out["common_name"] = hit.get("common_name") or common
        yield out


TAXON_FIELD_NAMES = {"taxon_id", "accepted_name", "rank", *TAXON_RANKS, *(f"{r}_id" for r in TAXON_RANKS)}
