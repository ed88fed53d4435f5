"""Caption stage: template captions for every recording with a resolved species, plus an LLM caption when
`captions.llm` is configured (falling back to a template, with the reason).

Recordings meet their resolutions by key (CoGroupByKey); taxa with their traits
are a side input (bounded by species).  LLM requests are host-keyed: the LLM
host is rate-limited, so one process asks it, under one pacer and one budget,
with `concurrency` requests in flight; answers are cached on the output's
filesystem, where every worker sees them.
"""
from __future__ import annotations

from collections import Counter

import apache_beam as beam

from bestiary.captioning.templates import all_captions, caption, fields_for, taxonomy_text
from bestiary.captioning.vocabulary import words as words_of
from bestiary.pipelines import io
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.hosts import HostWork, KeyByHost
from bestiary.pipelines.plan import taxon_is_unseen
from bestiary.pipelines.singletons import Once, one
from bestiary.pipelines.tables import ReadTable, WriteTable
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import CAPTION_SCHEMA, TAXON_RANKS
from bestiary.taxonomy.traits import TRAITS

LLM_FALLBACK_KIND = "taxonomy_common"
RECORD_COLUMNS = ["key", "common_name", "remarks", "recordist", "country", "attribution", "sound_type"]
OUTPUTS = ("catalog/captions",)


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
    return {"key": rec["key"], "default": default, "captions": caps,
            "llm_status": status, "llm_requests": llm["requests"] if llm else 0,
            "prompt_tokens": llm["prompt_tokens"] if llm else 0,
            "completion_tokens": llm["completion_tokens"] if llm else 0}


def safe_caption(pair: tuple[dict, dict], kind: str):
    """The template captions of a record; one that cannot be captioned gets none (the shard stage then
    rejects it as `no_caption`)."""
    try:
        yield caption_row(pair[0], pair[1], kind)
    except Exception:  # noqa: BLE001 - the last guard
        beam.metrics.Metrics.counter("guarded", "caption").inc()


def taxa_with_traits(pbegin, ctx: RunContext, label: str = "taxa"):
    """(taxon_id, taxon with lineage, common name and its known traits): bounded by species."""
    taxa = pbegin | f"{label} rows" >> ReadTable(ctx.path("catalog", "taxa"))
    traits = pbegin | f"{label} traits" >> ReadTable(ctx.path("catalog", "traits"))

    def merge(item):
        tid, got = item
        for t in got["taxon"]:
            known = next(({k: v for k, v in tr.items() if k in TRAITS and v is not None} for tr in got["traits"]), {})
            yield tid, {**t, "traits": known}
    return ({"taxon": taxa | f"{label} by id" >> beam.Map(lambda t: (t["taxon_id"], t)),
             "traits": traits | f"{label} traits by id" >> beam.Map(lambda t: (t["taxon_id"], t))}
            | f"{label} join" >> beam.CoGroupByKey() | f"{label} merged" >> beam.FlatMap(merge))


def with_taxon(pbegin, ctx: RunContext, records, label: str = "records"):
    """(record, its resolution) for records whose name met a species: a join by key."""
    res = pbegin | f"{label} resolutions" >> ReadTable(ctx.path("catalog", "resolutions"),
                                                      ["key", "taxon_id", "method", "reason"])

    def pair(item):
        _, got = item
        for r in got["res"]:
            for rec in got["rec"]:
                yield rec, r
    return ({"rec": records | f"{label} by key" >> beam.Map(lambda r: (r["key"], r)),
             "res": res | f"{label} res by key" >> beam.Map(lambda r: (r["key"], r))}
            | f"{label} join res" >> beam.CoGroupByKey() | f"{label} paired" >> beam.FlatMap(pair))


class CaptionWithLLM(HostWork):
    """(record, taxon) pairs of the LLM host's group: asked `concurrency` at a time, under one pacer and budget."""

    def __init__(self, cfg: BuildConfig, cache_root: str):
        from bestiary.pipelines.context import RunContext as _Ctx
        super().__init__(_Ctx(cfg).policy, cfg.captions.llm.concurrency)
        self.cfg, self.cache_root = cfg, cache_root

    def setup(self) -> None:
        from bestiary.captioning.llm import LLMCaptioner
        self.captioner = LLMCaptioner(self.cfg.captions.llm, self.cache_root)

    def handle(self, pair: tuple[dict, dict]):
        from bestiary.captioning.llm import llm_inputs
        rec, taxon = pair
        inputs, terms = llm_inputs(rec, taxon, taxonomy_text(_lineage(taxon)))
        before = (self.captioner.tally.prompt_tokens, self.captioner.tally.completion_tokens)
        try:
            text, reason, cached = self.captioner.caption(inputs, terms)
        except Exception as err:  # noqa: BLE001 - the LLM path's fault: the template caption, with why
            text, reason, cached = None, f"llm_error:{type(err).__name__}", False
        status = "cached" if cached and text else "llm" if text else reason
        # per-row token counts are approximate under concurrency; the totals are exact
        yield caption_row(rec, taxon, self.cfg.captions.default, {
            "text": text, "status": status, "requests": 0 if cached else 1 if reason != "budget_exhausted" else 0,
            "prompt_tokens": self.captioner.tally.prompt_tokens - before[0],
            "completion_tokens": self.captioner.tally.completion_tokens - before[1]})


def caption_stats(rows_count: int, tally: dict, cfg: BuildConfig) -> dict:
    stats = {"captions": rows_count, "default_kind": cfg.captions.default}
    if cfg.captions.llm:
        llm = cfg.captions.llm
        status = Counter({k.split("|", 1)[1]: v for k, v in tally.items() if k.startswith("status|")})
        prompt, completion = tally.get("prompt_tokens", 0), tally.get("completion_tokens", 0)
        stats["llm"] = {
            "model": llm.model, "requests": tally.get("requests", 0),
            "llm_captions": status.pop("llm", 0), "cache_hits": status.pop("cached", 0),
            "fallbacks": dict(sorted(status.items())), "prompt_tokens": prompt, "completion_tokens": completion,
            "estimated_cost": round(prompt / 1000 * llm.price_per_1k_input + completion / 1000 * llm.price_per_1k_output, 4)}
    return stats


def _tally(row: dict):
    yield "captions", 1
    if row["llm_status"]:
        yield f"status|{row['llm_status']}", 1
    yield "requests", row["llm_requests"]
    yield "prompt_tokens", row["prompt_tokens"]
    yield "completion_tokens", row["completion_tokens"]


WORDS_KEPT = 100_000


def _by_count(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]   # the most frequent first; ties by the word, so every runner keeps the same ones


class MostFrequentWords(beam.PTransform):
    """words -> one dict of the `n` most frequent words and their counts."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def expand(self, words):
        return (words | "pairs" >> beam.Map(lambda w: (w, 1)) | "count" >> beam.CombinePerKey(sum)
                | "most frequent" >> beam.combiners.Top.Of(self.n, key=_by_count, reverse=True).without_defaults()
                | "as dict" >> beam.Map(dict))


def _write_stats(_, ctx: RunContext, words: dict, tally: dict) -> None:
    io.write_json(ctx.path("work", "caption-words.json"), words)
    io.write_json(ctx.path("work", "stats-caption.json"), caption_stats(tally.get("captions", 0), tally, ctx.cfg))


class Caption(beam.PTransform):
    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx, cfg = self.ctx, self.ctx.cfg
        cols = RECORD_COLUMNS + (["raw"] if cfg.captions.llm else [])
        recs = pbegin | "recordings" >> ReadTable(ctx.path("catalog", "recordings"), cols)
        taxa = beam.pvalue.AsDict(taxa_with_traits(pbegin, ctx))
        pairs = (with_taxon(pbegin, ctx, recs)
                 | "with taxon" >> beam.FlatMap(lambda p, tx: [(p[0], tx[p[1]["taxon_id"]])]
                                                if p[1]["taxon_id"] in tx else [], taxa))
        if cfg.captions.llm:
            llm = cfg.captions.llm
            caps = (pairs | "by host" >> beam.ParDo(KeyByHost(ctx.policy, 1, lambda _: llm.base_url, lambda p: p[0]["key"]))
                    | "host groups" >> beam.GroupByKey()
                    | "llm caption" >> beam.ParDo(CaptionWithLLM(cfg, ctx.path("cache", "captions"))))
        else:
            kind = cfg.captions.default
            caps = pairs | "caption" >> beam.FlatMap(safe_caption, kind)
        caps | "write captions" >> WriteTable(ctx.path("catalog", "captions"), CAPTION_SCHEMA)
        # the tokenizer's corpus: word counts of the seen species' captions, the WORDS_KEPT most frequent (an
        # LLM's vocabulary grows with its captions; a 4,000-token BPE learns from the head)
        seen_keys = pairs | "seen only" >> beam.FlatMap(
            lambda p: [p[0]["key"]] if not taxon_is_unseen(p[1]["taxon_id"], cfg.splits) else [])
        words = (({"cap": caps | "cap by key" >> beam.Map(lambda c: (c["key"], c["captions"])),
                   "seen": seen_keys | "seen by key" >> beam.Map(lambda k: (k, 1))}
                  | "seen join" >> beam.CoGroupByKey()
                  | "words" >> beam.FlatMap(lambda kv: [w for caps_ in kv[1]["cap"] if kv[1]["seen"]
                                                        for c in caps_ for w in words_of(c["text"])]))
                 | "word counts" >> MostFrequentWords(WORDS_KEPT))
        tally = (caps | "tally" >> beam.FlatMap(_tally) | "sum" >> beam.CombinePerKey(sum)
                 | "as dict" >> beam.combiners.ToDict().without_defaults())
        (pbegin | "once" >> Once()
         | "stats" >> beam.Map(_write_stats, ctx, one(words, {}), one(tally, {})))
        return caps


_ = TAXON_RANKS  # lineage ranks live in the taxa table
