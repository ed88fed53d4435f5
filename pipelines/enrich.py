"""Enrich stage: every catalog record -> one accepted species with its lineage, and its traits.

1. Per record, what to look up (pure): eBird codes and iNaturalist ids become
   names through those archives' tables; spuhs, hybrids and the like stop here.
2. The unique names are resolved: against a GBIF backbone dump streamed in
   byte ranges over Beam workers (two passes: the names, then their accepted
   usages and higher taxa), or GBIF's species match API, or iNaturalist's taxa.
3. Records, taxa and trait rows are written: `catalog/resolutions.parquet`,
   `catalog/taxa.parquet`, `catalog/traits.parquet`, and the coverage report.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import apache_beam as beam
import pyarrow as pa

from bestiary.connectors import gbif
from bestiary.connectors.http import FetchError, HttpClient, policy_from
from bestiary.pipelines import io
from bestiary.pipelines.cache import cached_json
from bestiary.pipelines.runner import make_pipeline
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import (RESOLUTION_SCHEMA, TAXON_RANKS, TAXON_SCHEMA, reject, to_table)
from bestiary.taxonomy import backbone as bb
from bestiary.taxonomy import tables
from bestiary.taxonomy.archives import Lookup, common_name_index, lookup_for, read_ebird, read_inat_taxa
from bestiary.taxonomy.names import parse_name
from bestiary.taxonomy.traits import CATEGORIES, TRAITS, join_traits, load_mapping, read_table, row_names

TRAIT_SCHEMA = pa.schema([("taxon_id", pa.string()), ("accepted_name", pa.string())] +
                         [(t, pa.string() if t in CATEGORIES else pa.bool_()) for t in TRAITS] +
                         [("sources", pa.string())])


def path(cfg: BuildConfig, *parts: str) -> str:
    return io.join(cfg.out, *parts)


# ---------------------------------------------------------------- name resolution through APIs

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


class ResolveByApi(beam.DoFn):
    """name key -> (key, match dict, taxon row or None): GBIF species match, else iNaturalist taxa."""

    def __init__(self, cfg: BuildConfig):
        self.gbif_url = cfg.taxonomy.gbif_base_url
        inat = [s for s in cfg.sources if s.name == "inaturalist"]
        self.inat_url = inat[0].base_url if inat else None
        self.policy = policy_from(cfg.http, cfg.sources)
        self.cache = io.join(cfg.out, "cache", "taxonomy")

    def setup(self) -> None:
        self.client = HttpClient(self.policy)

    def process(self, key: str):
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
        if not hit or hit.get("rank") != "species" or not hit.get("species"):
            yield key, {"method": "unresolved", "reason": f"rank:{hit['rank']}" if hit else "no_match"}, None
            return
        taxon = {r: hit.get(r) for r in TAXON_RANKS} | {f"{r}_id": hit.get(f"{r}_id") for r in TAXON_RANKS}
        taxon.update(taxon_id=hit.get("species_id") or hit.get("taxon_id"), rank="species",
                     accepted_name=hit.get("species") or hit.get("accepted_name"), common_name=hit.get("common_name"))
        score = hit.get("confidence") if hit.get("match_type") == "FUZZY" else None
        yield key, {"method": method, "taxon_id": taxon["taxon_id"], "matched_name": hit.get("accepted_name"),
                    "score": score}, taxon


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


def backbone_rows(cfg: BuildConfig, names: list, extra_keys: set[str]) -> list[dict]:
    """Both streaming passes on Beam; only the few matching rows come back to the driver."""
    t = cfg.taxonomy
    kingdoms, threshold = tuple(t.kingdoms), t.fuzzy_threshold
    want1 = bb.Wanted.for_names(names, kingdoms)
    want1.keys |= extra_keys
    out = path(cfg, "work", "backbone-rows.parquet")
    ranges = tables.byte_ranges(t.backbone, t.backbone_parts)
    with make_pipeline(cfg.runner) as p:
        rngs = p | "ranges" >> beam.Create(ranges)
        hits1 = rngs | "spread 1" >> beam.Reshuffle() | "pass 1" >> beam.ParDo(ScanBackbone(t.backbone), want1)
        want2 = (hits1 | "collect 1" >> beam.combiners.ToList()
                 | "what pass 2 needs" >> beam.Map(lambda rows: bb.second_pass(rows, names, kingdoms, threshold)))
        hits2 = (rngs | "spread 2" >> beam.Reshuffle()
                 | "pass 2" >> beam.ParDo(ScanBackbone(t.backbone), beam.pvalue.AsSingleton(want2)))
        found = (hits1, hits2) | beam.Flatten()
        (p | "once" >> beam.Create([None])
         | beam.Map(lambda _, rows: io.write_table(out, pa.Table.from_pylist(
             sorted(rows, key=lambda r: r["taxonID"]), pa.schema([(c, pa.string()) for c in bb.COLUMNS]))),
             beam.pvalue.AsList(found)))
    return io.read_rows(out)


def _backbone_taxon(index: bb.Backbone, taxon_id: str) -> dict:
    return {**index.lineage(taxon_id), "taxon_id": taxon_id, "rank": "species",
            "accepted_name": index.by_id[taxon_id]["canonicalName"]}


# ---------------------------------------------------------------- the stage

def _lookups(cfg: BuildConfig, rows: list[dict]) -> tuple[dict[str, Lookup], dict | None]:
    t = cfg.taxonomy
    ebird = read_ebird(t.ebird) if t.ebird else None
    inat_ids = {r["taxon_id"] for r in rows if r["source"] == "inaturalist" and r["taxon_id"]}
    inat = read_inat_taxa(t.inat_taxa, inat_ids) if t.inat_taxa else None
    commons = common_name_index(ebird) if ebird else None
    return {r["key"]: lookup_for(r, ebird, inat, commons) for r in rows}, ebird


def enrich(cfg: BuildConfig) -> None:
    audio = io.read_rows(path(cfg, "catalog", "recordings.parquet"))
    images = io.read_rows(path(cfg, "catalog", "images.parquet"))
    rows = audio + images
    t = cfg.taxonomy
    lookups, ebird = _lookups(cfg, rows)
    names = sorted({lk.name for lk in lookups.values() if lk.name.kind == "species"}, key=lambda n: n.key)
    trait_tables = [(m, read_table(tt.path, m)) for tt in t.traits for m in [load_mapping(tt.mapping)]]
    trait_keys = {k for m, trs in trait_tables for r in trs for k in row_names(r, m)}

    matches: dict[str, dict] = {}
    taxa: dict[str, dict] = {}
    accepted: dict[str, str] = {}       # name key (accepted name or synonym) -> accepted taxon id
    if t.backbone:
        index = bb.Backbone(backbone_rows(cfg, names, trait_keys))
        kingdoms = tuple(t.kingdoms)
        for n in names:
            m = index.resolve(n, kingdoms, t.fuzzy_threshold)
            matches[n.key] = {"method": m.method, "taxon_id": m.taxon_id, "score": m.score,
                              "matched_name": m.matched_name, "reason": m.reason}
            if m.taxon_id:
                taxa.setdefault(m.taxon_id, _backbone_taxon(index, m.taxon_id))
        for key in trait_keys:  # trait tables' names: exact or synonym, never fuzzy
            m = index.resolve(parse_name(key), kingdoms, threshold=None)
            if m.taxon_id:
                accepted[key] = m.taxon_id
    else:
        with make_pipeline(cfg.runner) as p:
            res = (p | beam.Create([n.key for n in names]) | beam.Reshuffle()
                   | "resolve" >> beam.ParDo(ResolveByApi(cfg)))
            (p | "once" >> beam.Create([None])
             | beam.Map(lambda _, rs: io.write_bytes(path(cfg, "work", "api-matches.json"),
                                                    json.dumps(sorted(rs, key=lambda r: r[0])).encode()),
                        beam.pvalue.AsList(res)))
        for key, m, taxon in json.loads(io.read_bytes(path(cfg, "work", "api-matches.json"))):
            matches[key] = m
            if taxon:
                taxa.setdefault(taxon["taxon_id"], taxon)
    for tid, taxon in taxa.items():
        accepted.setdefault(taxon["accepted_name"].lower(), tid)
    for key, m in matches.items():
        if m.get("taxon_id"):
            accepted.setdefault(key, m["taxon_id"])
    write_enrich(cfg, rows, lookups, matches, taxa, ebird, trait_tables, accepted)


def resolution_rows(rows: list[dict], lookups: dict[str, Lookup], matches: dict[str, dict]) -> list[dict]:
    out = []
    for r in rows:
        lk = lookups[r["key"]]
        m = matches.get(lk.name.key) if lk.name.kind == "species" else None
        m = m or {"method": "unresolved", "reason": lk.name.kind}
        out.append({"key": r["key"], "source": r["source"], "given_name": r["scientific_name"], "given_id": r["taxon_id"],
                    "via": lk.via, "lookup_name": lk.name.canonical, "method": m["method"], "score": m.get("score"),
                    "matched_name": m.get("matched_name"), "taxon_id": m.get("taxon_id"),
                    "subspecies": lk.name.infraspecific, "reason": m.get("reason")})
    return sorted(out, key=lambda r: r["key"])


def write_enrich(cfg: BuildConfig, rows, lookups, matches, taxa, ebird, trait_tables, accepted) -> None:
    res = resolution_rows(rows, lookups, matches)
    by_key = {r["key"]: r for r in rows}
    ebird_common = {e.sci_name: e.common_name for e in (ebird or {}).values() if e.category == "species"}
    per_taxon: dict[str, list[dict]] = defaultdict(list)
    for r in res:
        if r["taxon_id"]:
            per_taxon[r["taxon_id"]].append(by_key[r["key"]])
    taxon_rows = []
    for tid, recs in sorted(per_taxon.items()):
        taxon = dict(taxa[tid])
        commons = Counter(c["common_name"] for c in recs if c["common_name"])
        taxon["common_name"] = (ebird_common.get(taxon["accepted_name"]) or taxon.get("common_name")
                                or (min(commons.items(), key=lambda kv: (-kv[1], kv[0]))[0] if commons else None))
        taxon["ebird_codes"] = sorted({c["taxon_id"] for c in recs if c["source"] == "macaulay" and c["taxon_id"]})
        taxon["inat_ids"] = sorted({c["taxon_id"] for c in recs if c["source"] == "inaturalist" and c["taxon_id"]})
        taxon["names_seen"] = sorted({c["scientific_name"] for c in recs if c["scientific_name"]})
        taxon_rows.append(taxon)
    joined = join_traits(trait_tables, accepted, set(per_taxon))
    trait_rows = [{"taxon_id": t["taxon_id"], "accepted_name": t["accepted_name"], **joined.traits.get(t["taxon_id"], {}),
                   "sources": json.dumps(joined.sources.get(t["taxon_id"], {}), sort_keys=True)} for t in taxon_rows]
    io.write_table(path(cfg, "catalog", "resolutions.parquet"), to_table(res, RESOLUTION_SCHEMA))
    io.write_table(path(cfg, "catalog", "taxa.parquet"), to_table(taxon_rows, TAXON_SCHEMA))
    io.write_table(path(cfg, "catalog", "traits.parquet"), to_table(trait_rows, TRAIT_SCHEMA))
    io.write_json(path(cfg, "work", "stats-enrich.json"), coverage(res, taxon_rows, trait_rows, joined))


def coverage(res: list[dict], taxa: list[dict], traits: list[dict], joined) -> dict:
    """The coverage report: records by method, unresolved names with counts, trait coverage per trait."""
    unresolved = Counter(f"{r['given_name'] or r['given_id'] or '(empty)'} [{r['reason']}]"
                         for r in res if r["method"] == "unresolved")
    n = len(traits)
    return {
        "records": len(res), "species": len(taxa),
        "by_method": dict(sorted(Counter(r["method"] for r in res).items())),
        "by_via": dict(sorted(Counter(r["via"] for r in res).items())),
        "unresolved": dict(sorted(unresolved.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unresolved_by_reason": dict(sorted(Counter(r["reason"].split(":")[0] for r in res
                                                    if r["method"] == "unresolved").items())),
        "fuzzy": sorted({f"{r['lookup_name']} -> {r['matched_name']} ({r['score']})" for r in res
                         if r["method"].startswith("fuzzy")}),
        "trait_coverage": {t: round(sum(1 for r in traits if r.get(t) is not None) / n, 4) if n else 0.0 for t in TRAITS},
        "trait_rows_joined": joined.matched,
        "trait_conflicts": len(joined.conflicts),
        "trait_conflicts_by_trait": dict(sorted(Counter(c["trait"] for c in joined.conflicts).items())),
        "trait_conflict_examples": joined.conflicts[:10],
    }


# ---------------------------------------------------------------- what later stages read

NOT_SPECIES = {"genus", "spuh", "hybrid", "slash", "uncertain", "intergrade", "domestic", "form", "issf", "empty",
               "unparsable"}


def record_taxa(cfg: BuildConfig) -> tuple[dict[str, dict], dict[str, dict]]:
    """(record key -> its taxon with lineage, method and traits), (record key -> resolution row)."""
    if not io.exists(path(cfg, "catalog", "resolutions.parquet")):
        raise ValueError(f"{cfg.out}: no catalog/resolutions.parquet (written by an older bestiary?): "
                         "run `bestiary enrich CONFIG --force`")
    taxa = {t["taxon_id"]: t for t in io.read_rows(path(cfg, "catalog", "taxa.parquet"))}
    traits = {}
    for t in io.read_rows(path(cfg, "catalog", "traits.parquet")):
        traits[t["taxon_id"]] = {k: v for k, v in t.items() if k in TRAITS and v is not None}
    res = {r["key"]: r for r in io.read_rows(path(cfg, "catalog", "resolutions.parquet"))}
    out = {}
    for key, r in res.items():
        if r["taxon_id"] in taxa:
            out[key] = {**taxa[r["taxon_id"]], "method": r["method"], "traits": traits.get(r["taxon_id"], {})}
    return out, res


def unresolved_reject(row: dict, res: dict | None) -> dict:
    reason = (res or {}).get("reason") or "no_resolution"
    name = row["scientific_name"] or row["taxon_id"] or "no name"
    if reason in NOT_SPECIES:
        return reject(row["key"], "enrich", "not_species_level", f"{reason}: {name}")
    return reject(row["key"], "enrich", "taxon_unresolved", f"{reason}: {name}")
