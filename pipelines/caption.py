"""Caption stage: template captions for every recording with a resolved species, plus an
LLM caption when `captions.llm` is configured (falling back to a template, with the reason)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam

from bestiary.captioning.templates import all_captions, caption, fields_for, taxonomy_text
from bestiary.schemas.config import BuildConfig

LLM_FALLBACK_KIND = "taxonomy_common"


def _lineage(taxon: dict) -> dict:
    return {r: taxon.get(r) for r in ("class", "order", "family", "genus", "species")}


def caption_row(rec: dict, taxon: dict, default_kind: str, llm: dict | None = None) -> dict:
    """Captions of one recording; `llm` is {"text", "status"} when an LLM was asked."""
    fields = fields_for(taxon["accepted_name"], taxon.get("common_name") or rec.get("common_name"), _lineage(taxon))
    caps = all_captions(fields, rec["key"], taxon.get("traits"))
    status = None
    if llm is not None:
        status = llm["status"]
        text = llm["text"] or caption(LLM_FALLBACK_KIND, fields, rec["key"])
        caps.append({"kind": "llm", "text": text,
                     "source": "llm" if llm["text"] else f"template:{LLM_FALLBACK_KIND}",
                     **({"reason": status} if not llm["text"] else {})})
    by_kind = {c["kind"]: c["text"] for c in caps}
    default = by_kind.get(default_kind, by_kind[LLM_FALLBACK_KIND])  # "llm" without an LLM: its fallback
    return {"key": rec["key"], "default": default, "captions": json.dumps(caps, ensure_ascii=False),
            "llm_status": status, "llm_requests": llm["requests"] if llm else 0,
            "prompt_tokens": llm["prompt_tokens"] if llm else 0,
            "completion_tokens": llm["completion_tokens"] if llm else 0}


class CaptionWithLLM(beam.DoFn):
    """Batches of (record, taxon): the LLM is asked concurrently, under the rate limit and budget."""

    def __init__(self, cfg: BuildConfig, cache_path: str, run_id: str):
        self.cfg, self.cache_path, self.run_id = cfg, cache_path, run_id

    def setup(self) -> None:
        from bestiary.captioning.llm import LLMCaptioner
        self.captioner = LLMCaptioner(self.cfg.captions.llm, self.cache_path, self.run_id)

    def _one(self, pair: tuple[dict, dict]) -> dict:
        from bestiary.captioning.llm import llm_inputs
        rec, taxon = pair
        inputs, terms = llm_inputs(rec, taxon, taxonomy_text(_lineage(taxon)))
        before = (self.captioner.tally.requests, self.captioner.tally.prompt_tokens,
                  self.captioner.tally.completion_tokens)
        text, reason, cached = self.captioner.caption(inputs, terms)
        status = "cached" if cached and text else "llm" if text else reason
        # per-row counts are approximate under concurrency; the totals are exact
        return caption_row(rec, taxon, self.cfg.captions.default, {
            "text": text, "status": status, "requests": 0 if cached else 1 if reason != "budget_exhausted" else 0,
            "prompt_tokens": self.captioner.tally.prompt_tokens - before[1],
            "completion_tokens": self.captioner.tally.completion_tokens - before[2]})

    def process(self, batch: list[tuple[dict, dict]]):
        with ThreadPoolExecutor(self.cfg.captions.llm.concurrency) as pool:
            yield from pool.map(self._one, batch)
