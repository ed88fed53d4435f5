"""Enrich stage: every catalog record -> one accepted species with its lineage, and its traits.

1. Per record, what to look up (pure, `taxonomy.archives.lookup_for`): eBird
   codes and iNaturalist ids become names through those archives' tables;
   spuhs, hybrids and the like stop here.
2. The distinct names (bounded by species, not records) are resolved: against
   a GBIF backbone dump streamed in byte ranges over workers (two passes: the
   names, then their accepted usages and higher taxa), or GBIF's species match
   API, or iNaturalist's taxa (host-keyed).
3. Per record, its resolution (a side input of names -> matches); per taxon,
   what its records say (a per-key combine); the trait tables joined to taxa.
   Outputs: `catalog/resolutions/`, `catalog/taxa/`, `catalog/traits/`, and the
   coverage report in `work/stats-enrich.json`.
"""
from __future__ import annotations

import json
from collections import Counter

import apache_beam as beam
import pyarrow as pa

from bestiary.connectors import gbif
from bestiary.connectors.http import FetchError
from bestiary.pipelines import io
from bestiary.pipelines.cache import cached_json
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.hosts import HostWork, KeyByHost
from bestiary.pipelines.tables import ReadTable, WriteTable
from bestiary.schemas.records import RESOLUTION_SCHEMA, TAXON_RANKS, TAXON_SCHEMA
from bestiary.taxonomy import backbone as bb
from bestiary.taxonomy import tables
from bestiary.taxonomy.archives import Lookup, common_name_index, lookup_for, read_ebird, read_inat_taxa
from bestiary.taxonomy.names import ParsedName, parse_name
from bestiary.taxonomy.traits import CATEGORIES, TRAITS, join_traits, load_mapping, read_table, row_names

TRAIT_SCHEMA = pa.schema([("taxon_id", pa.string()), ("accepted_name", pa.string())] +
                         [(t, pa.string() if t in CATEGORIES else pa.bool_()) for t in TRAITS] +
                         [("sources", pa.struct([(t, pa.string()) for t in TRAITS]))])   # which table said it
LOOKUP_COLUMNS = ["key", "source", "scientific_name", "common_name", "source_taxon_id"]
OUTPUTS = ("catalog/resolutions", "catalog/taxa", "catalog/traits")


# ---------------------------------------------------------------- name resolution through APIs

def resolve_gbif(client, base_url: str, key: str, cache: str) -> dict | None:
    url, params = gbif.match_request(base_url, key)
    return gbif.parse_match(cached_json(client, cache, url, params))


def resolve_inat(client, base_url: str, key: str, cache: str) -> dict | None:
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


def api_url(ctx: RunContext) -> tuple[str | None, str | None]:
    """(GBIF species match base URL, iNaturalist base URL): the first one set is asked."""
    inat = [s.base_url for s in ctx.cfg.sources if s.name == "inaturalist"]
    return ctx.cfg.taxonomy.gbif_base_url, inat[0] if inat else None


class ResolveByApi(HostWork):
    """name key -> (key, match dict, taxon row or None): GBIF species match, else iNaturalist taxa."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.policy, ctx.cfg.http.host_threads)
        self.gbif_url, self.inat_url = api_url(ctx)
        self.cache = ctx.path("cache", "taxonomy")

    def handle(self, key: str):
        try:
            if self.gbif_url:
                hit, method = resolve_gbif(self.client, self.gbif_url, key, self.cache), "gbif_match"
            elif self.inat_url:
                hit, method = resolve_inat(self.client, self.inat_url, key, self.cache), "inat_taxa"
            else:
                hit, method = None, "no_taxonomy_source"
        except FetchError as err:
            yield key, {"method": "unresolved", "reason": err.reason}, None
            return
        except Exception as err:  # noqa: BLE001 - a name the API cannot answer stays unresolved, with why
            yield key, {"method": "unresolved", "reason": f"lookup_error:{type(err).__name__}"}, None
            return
        if not hit or hit.get("rank") != "species" or not hit.get("species"):
            yield key, {"method": "unresolved", "reason": f"rank:{hit['rank']}" if hit else "no_match"}, None
            return
        taxon = {r: hit.get(r) for r in TAXON_RANKS} | {f"{r}_id": hit.get(f"{r}_id") for r in TAXON_RANKS}
        taxon.update(taxon_id=hit.get("species_id") or hit.get("taxon_id"), rank="species",
                     accepted_name=hit.get("species") or hit.get("accepted_name"), common_name=hit.get("common_name"))
        score = hit.get("confidence") if hit.get("match_type") == "FUZZY" else None
        yield key, {"method": method, "taxon_id": taxon["taxon_id"], "matched_name": hit.get("accepted_name"),
                    "score": score}, taxon


def from_api(answers: list) -> dict:
    matches, taxa = {}, {}
    for key, m, taxon in sorted(answers, key=lambda a: a[0]):
        matches[key] = m
        if taxon:
            taxa.setdefault(taxon["taxon_id"], taxon)
    return {"matches": matches, "taxa": taxa, "accepted": {}}


# ---------------------------------------------------------------- name resolution against a backbone dump

class ScanBackbone(beam.DoFn):
    """One byte range of Taxon.tsv -> the rows a `Wanted` asks for."""

    def __init__(self, backbone: str):
        self.backbone = backbone

    def process(self, rng: tuple[int, int], want: bb.Wanted):
        counts: dict = {}
        yield from bb.scan_rows(self.backbone, want, rng[0], rng[1], counts=counts)
        beam.metrics.Metrics.counter("backbone", "rows_scanned").inc(counts.get("rows", 0))
        beam.metrics.Metrics.counter("backbone", "bad_rows").inc(counts.get("bad_rows", 0))


def _first_wanted(names: list, trait_tables: list, kingdoms: tuple[str, ...]) -> bb.Wanted:
    want = bb.Wanted.for_names(names, kingdoms)
    want.keys |= {k for m, rows in trait_tables for r in rows for k in row_names(r, m)}
    return want


def from_backbone(rows: list[dict], names: list, trait_tables: list, kingdoms: tuple[str, ...],
                  threshold: float) -> dict:
    """Every name's match, the taxa they meet, and the trait tables' names -> accepted ids."""
    index = bb.Backbone(rows)
    matches, taxa, accepted = {}, {}, {}
    for n in names:
        m = index.resolve(n, kingdoms, threshold)
        matches[n.key] = {"method": m.method, "taxon_id": m.taxon_id, "score": m.score,
                          "matched_name": m.matched_name, "reason": m.reason}
        if m.taxon_id:
            taxa.setdefault(m.taxon_id, {**index.lineage(m.taxon_id), "taxon_id": m.taxon_id, "rank": "species",
                                         "accepted_name": index.by_id[m.taxon_id]["canonicalName"]})
    for key in sorted({k for mp, trs in trait_tables for r in trs for k in row_names(r, mp)}):
        m = index.resolve(parse_name(key), kingdoms, threshold=None)  # trait tables' names: never fuzzy
        if m.taxon_id:
            accepted[key] = m.taxon_id
    return {"matches": matches, "taxa": taxa, "accepted": accepted}


class BackboneResolve(beam.PTransform):
    """names (a singleton list) -> the resolved singleton; both passes scan the dump's byte ranges."""

    def __init__(self, ctx: RunContext, trait_tables):
        super().__init__()
        self.ctx, self.trait_tables = ctx, trait_tables

    def expand(self, names):
        t = self.ctx.cfg.taxonomy
        kingdoms, threshold = tuple(t.kingdoms), t.fuzzy_threshold
        traits = beam.pvalue.AsSingleton(self.trait_tables)
        want1 = names | "wanted 1" >> beam.Map(_first_wanted, traits, kingdoms)
        rngs = (names.pipeline | "backbone" >> beam.Create([t.backbone])
                | "ranges" >> beam.FlatMap(tables.byte_ranges, t.backbone_parts))
        hits1 = (rngs | "spread 1" >> beam.Reshuffle()
                 | "pass 1" >> beam.ParDo(ScanBackbone(t.backbone), beam.pvalue.AsSingleton(want1)))
        want2 = (hits1 | "collect 1" >> beam.combiners.ToList()
                 | "wanted 2" >> beam.Map(lambda rows, ns: bb.second_pass(rows, ns, kingdoms, threshold),
                                          beam.pvalue.AsSingleton(names)))
        hits2 = (rngs | "spread 2" >> beam.Reshuffle()
                 | "pass 2" >> beam.ParDo(ScanBackbone(t.backbone), beam.pvalue.AsSingleton(want2)))
        found = (hits1, hits2) | "rows found" >> beam.Flatten() | "collect" >> beam.combiners.ToList()
        return found | "resolve names" >> beam.Map(
            lambda rows, ns, trs: from_backbone(sorted(rows, key=lambda r: r["taxonID"]), ns, trs, kingdoms, threshold),
            beam.pvalue.AsSingleton(names), traits)


# ---------------------------------------------------------------- per record and per taxon

class LookupFor(beam.DoFn):
    """Catalog row -> (the row's name fields, what to look up)."""

    def __init__(self, ebird_path: str | None):
        self.ebird_path = ebird_path

    def setup(self) -> None:
        self.ebird = read_ebird(self.ebird_path) if self.ebird_path else None
        self.commons = common_name_index(self.ebird) if self.ebird else None

    def process(self, row: dict, inat: dict):
        try:
            yield row, lookup_for(row, self.ebird, inat or None, self.commons)
        except Exception:  # noqa: BLE001 - a name nobody can parse is unresolved ('unparsable'), not a crash
            yield row, Lookup(ParsedName("unparsable"), "name")


def resolution_row(item, resolved: dict) -> dict:
    r, lk = item
    m = resolved["matches"].get(lk.name.key) if lk.name.kind == "species" else None
    m = m or {"method": "unresolved", "reason": lk.name.kind}
    return {"key": r["key"], "source": r["source"], "given_name": r["scientific_name"], "given_id": r["source_taxon_id"],
            "via": lk.via, "lookup_name": lk.name.canonical, "method": m["method"], "score": m.get("score"),
            "matched_name": m.get("matched_name"), "taxon_id": m.get("taxon_id"),
            "subspecies": lk.name.infraspecific, "reason": m.get("reason"),
            # for the per-taxon combine only (not written)
            "_common": r.get("common_name"), "_source_id": r.get("source_taxon_id")}


class TaxonNames(beam.CombineFn):
    """What a taxon's records say about it: common names (counted), archive ids, names used."""

    def create_accumulator(self):
        return Counter(), set(), set(), set()

    def add_input(self, acc, res):
        commons, ebird, inat, seen = acc
        if res["_common"]:
            commons[res["_common"]] += 1
        if res["source"] == "macaulay" and res["_source_id"]:
            ebird.add(res["_source_id"])
        if res["source"] == "inaturalist" and res["_source_id"]:
            inat.add(res["_source_id"])
        if res["given_name"]:
            seen.add(res["given_name"])
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out[0].update(a[0])
            for i in (1, 2, 3):
                out[i].update(a[i])
        return out

    def extract_output(self, acc):
        return acc


def taxon_row(item, resolved: dict, ebird_common: dict) -> dict:
    tid, (commons, ebird, inat, seen) = item
    taxon = dict(resolved["taxa"][tid])
    taxon["common_name"] = (ebird_common.get(taxon["accepted_name"]) or taxon.get("common_name")
                            or (min(commons.items(), key=lambda kv: (-kv[1], kv[0]))[0] if commons else None))
    taxon.update(ebird_codes=sorted(ebird), inat_ids=sorted(inat), names_seen=sorted(seen))
    return taxon


def trait_rows(taxa: list[dict], trait_tables: list, resolved: dict) -> tuple[list[dict], dict]:
    """Trait rows of the taxa with records, and the trait part of the coverage report."""
    accepted = dict(resolved["accepted"])
    for tid, taxon in resolved["taxa"].items():
        accepted.setdefault(taxon["accepted_name"].lower(), tid)
    for key, m in resolved["matches"].items():
        if m.get("taxon_id"):
            accepted.setdefault(key, m["taxon_id"])
    joined = join_traits(trait_tables, accepted, {t["taxon_id"] for t in taxa})
    rows = [{"taxon_id": t["taxon_id"], "accepted_name": t["accepted_name"], **joined.traits.get(t["taxon_id"], {}),
             "sources": {tr: joined.sources.get(t["taxon_id"], {}).get(tr) for tr in TRAITS}}
            for t in sorted(taxa, key=lambda t: t["taxon_id"])]
    n = len(rows)
    return rows, {
        "species": n,
        "trait_coverage": {t: round(sum(1 for r in rows if r.get(t) is not None) / n, 4) if n else 0.0 for t in TRAITS},
        "trait_rows_joined": joined.matched, "trait_conflicts": len(joined.conflicts),
        "trait_conflicts_by_trait": dict(sorted(Counter(c["trait"] for c in joined.conflicts).items())),
        "trait_conflict_examples": joined.conflicts[:10]}


def _counts(r: dict):
    yield f"method|{r['method']}", 1
    yield f"via|{r['via']}", 1
    yield "records", 1
    if r["method"] == "unresolved":
        yield f"reason|{r['reason'].split(':')[0]}", 1
        yield f"name|{r['given_name'] or r['given_id'] or '(empty)'} [{r['reason']}]", 1
    if r["method"].startswith("fuzzy"):
        yield f"fuzzy|{r['lookup_name']} -> {r['matched_name']} ({r['score']})", 1


def coverage(counts: dict, traits: dict) -> dict:
    """The coverage report: records by method, unresolved names with counts, trait coverage per trait."""
    def part(prefix):
        return {k.split("|", 1)[1]: v for k, v in counts.items() if k.startswith(prefix + "|")}
    return {"records": counts.get("records", 0), **traits,
            "by_method": dict(sorted(part("method").items())), "by_via": dict(sorted(part("via").items())),
            "unresolved": dict(sorted(part("name").items(), key=lambda kv: (-kv[1], kv[0]))),
            "unresolved_by_reason": dict(sorted(part("reason").items())), "fuzzy": sorted(part("fuzzy"))}


def _read_trait_tables(_, specs: list) -> list:
    return [(m, read_table(path, m)) for path, spec in specs for m in [load_mapping(spec)]]


class Enrich(beam.PTransform):
    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx, t = self.ctx, self.ctx.cfg.taxonomy
        rows = ((pbegin | "audio" >> ReadTable(ctx.path("catalog", "recordings"), LOOKUP_COLUMNS),
                 pbegin | "images" >> ReadTable(ctx.path("catalog", "images"), LOOKUP_COLUMNS))
                | "rows" >> beam.Flatten())
        inat_ids = (rows | "inat ids" >> beam.FlatMap(
            lambda r: [r["source_taxon_id"]] if r["source"] == "inaturalist" and r["source_taxon_id"] else [])
            | "distinct ids" >> beam.Distinct() | "id list" >> beam.combiners.ToList())
        inat = inat_ids | "inat taxa" >> beam.Map(lambda ids: read_inat_taxa(t.inat_taxa, set(ids)) if t.inat_taxa else {})
        lookups = rows | "lookups" >> beam.ParDo(LookupFor(t.ebird), beam.pvalue.AsSingleton(inat))
        names = (lookups | "species names" >> beam.FlatMap(
            lambda item: [(item[1].name.key, item[1].name)] if item[1].name.kind == "species" else [])
            | "one per name" >> beam.CombinePerKey(lambda ns: next(iter(ns)))
            | "name list" >> beam.combiners.ToList()
            | "sorted" >> beam.Map(lambda kvs: [n for _, n in sorted(kvs, key=lambda kv: kv[0])]))
        trait_tables = (pbegin | "trait specs" >> beam.Create([None])
                        | "trait tables" >> beam.Map(_read_trait_tables, [(tt.path, tt.mapping) for tt in t.traits]))
        if t.backbone:
            resolved = names | "backbone" >> BackboneResolve(ctx, trait_tables)
        else:
            gbif_url, inat_url = api_url(ctx)
            url = gbif_url or inat_url
            resolved = (names | "each name" >> beam.FlatMap(lambda ns: [n.key for n in ns])
                        | "by host" >> beam.ParDo(KeyByHost(ctx.policy, ctx.cfg.http.host_slots, lambda _: url,
                                                            lambda k: k))
                        | "host groups" >> beam.GroupByKey() | "ask" >> beam.ParDo(ResolveByApi(ctx))
                        | "answers" >> beam.combiners.ToList() | "resolved" >> beam.Map(from_api))
        res = lookups | "resolve" >> beam.Map(resolution_row, beam.pvalue.AsSingleton(resolved))
        res | "write resolutions" >> WriteTable(ctx.path("catalog", "resolutions"), RESOLUTION_SCHEMA)
        ebird_common = (pbegin | "ebird" >> beam.Create([t.ebird])
                        | "ebird names" >> beam.Map(lambda p: {e.sci_name: e.common_name for e in read_ebird(p).values()
                                                               if e.category == "species"} if p else {}))
        taxa = (res | "by taxon" >> beam.FlatMap(lambda r: [(r["taxon_id"], r)] if r["taxon_id"] else [])
                | "taxon names" >> beam.CombinePerKey(TaxonNames())
                | "taxon rows" >> beam.Map(taxon_row, beam.pvalue.AsSingleton(resolved),
                                           beam.pvalue.AsSingleton(ebird_common)))
        taxa | "write taxa" >> WriteTable(ctx.path("catalog", "taxa"), TAXON_SCHEMA, sort_by=("taxon_id",))
        traits = (taxa | "taxa list" >> beam.combiners.ToList()
                  | "join traits" >> beam.Map(trait_rows, beam.pvalue.AsSingleton(trait_tables),
                                              beam.pvalue.AsSingleton(resolved)))
        (traits | "trait rows" >> beam.FlatMap(lambda tr: tr[0])
         | "write traits" >> WriteTable(ctx.path("catalog", "traits"), TRAIT_SCHEMA, sort_by=("taxon_id",)))
        counts = (res | "counts" >> beam.FlatMap(_counts) | "sum" >> beam.CombinePerKey(sum)
                  | "as dict" >> beam.combiners.ToDict())
        (pbegin | "once" >> beam.Create([None])
         | "stats" >> beam.Map(lambda _, c, tr: io.write_json(ctx.path("work", "stats-enrich.json"), coverage(c, tr[1])),
                               beam.pvalue.AsSingleton(counts), beam.pvalue.AsSingleton(traits)))
        return res


NOT_SPECIES = {"genus", "spuh", "hybrid", "slash", "uncertain", "intergrade", "domestic", "form", "issf", "empty",
               "unparsable"}


def unresolved_reject(key: str, given: str | None, reason: str | None) -> dict:
    from bestiary.schemas.records import reject
    reason = reason or "no_resolution"
    if reason in NOT_SPECIES:
        return reject(key, "enrich", "not_species_level", f"{reason}: {given or 'no name'}")
    return reject(key, "enrich", "taxon_unresolved", f"{reason}: {given or 'no name'}")
