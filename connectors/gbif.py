"""GBIF species match (v1): the lineage of a name."""
from __future__ import annotations

from bestiary.schemas.records import TAXON_RANKS


def match_request(base_url: str, name: str) -> tuple[str, dict]:
    return f"{base_url}/v1/species/match", {"name": name, "kingdom": "Animalia", "strict": "false", "verbose": "true"}


def parse_match(body: dict) -> dict | None:
    """Lineage names and keys of the accepted usage, or None when nothing matched.

    For a synonym GBIF gives the accepted name's lineage with `acceptedUsageKey`;
    `confidence` 100 on a NONE match means nothing.
    """
    if not isinstance(body, dict) or body.get("matchType") in (None, "NONE") or "usageKey" not in body:
        return None
    out = {
        "taxon_id": str(body.get("acceptedUsageKey") or body["usageKey"]),
        "rank": str(body.get("rank", "")).lower(),
        "status": body.get("status"),
        "match_type": body.get("matchType"),
        "confidence": body.get("confidence"),
        "accepted_name": body.get("species") if body.get("synonym") else body.get("canonicalName"),
    }
    for r in TAXON_RANKS:
        out[r] = body.get(r)
        key = body.get(f"{r}Key")
        out[f"{r}_id"] = str(key) if key is not None else None
    return out
