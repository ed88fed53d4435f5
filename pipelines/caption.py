"""Caption stage: template captions for every recording with a resolved species."""
from __future__ import annotations

import json

from bestiary.captioning.templates import all_captions, fields_for


def caption_row(rec: dict, taxon: dict, default_kind: str) -> dict:
    lineage = {r: taxon.get(r) for r in ("class", "order", "family", "genus", "species")}
    fields = fields_for(taxon["accepted_name"], taxon.get("common_name") or rec.get("common_name"), lineage)
    caps = all_captions(fields, rec["key"])
    default = next(c["text"] for c in caps if c["kind"] == default_kind)
    return {"key": rec["key"], "default": default, "captions": json.dumps(caps, ensure_ascii=False)}
