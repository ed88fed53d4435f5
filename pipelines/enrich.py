"""Enrich stage: every catalog record -> one accepted species with its lineage, and its traits.

1. Per record, what to look up (pure, `taxonomy.archives.lookup_for`): eBird
   codes and iNaturalist ids become names through those archives' tables;
   spuhs, hybrids and the like stop here.
2. The distinct names, a keyed PCollection, are resolved: against a GBIF
   backbone dump streamed in byte ranges over workers (two passes, each thinned
   by a fixed-size Bloom filter, then joined by key: names to their rows,
   genera and epithets to fuzzy candidates, synonyms to accepted rows, higher
   taxa to ids), or GBIF's species match API, or iNaturalist's taxa (host-keyed).
3. Per record, its resolution (records joined with their name's match by key);
   per taxon, what its records say (a per-key combine); the trait tables (bounded
   by species) joined to the taxa.
   Outputs: `catalog/resolutions/`, `catalog/taxa/`, `catalog/traits/`, and the
   coverage report in `work/stats-enrich.json`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bestiary.connectors import gbif
from bestiary.connectors.http import FetchError
from bestiary.pipelines import io
from bestiary.pipelines.bloom import Bloom, BuildBloom
from bestiary.pipelines.cache import cached_json
from bestiary.pipelines.context import RunContext
from bestiary.pipelines.hosts import HostWork, KeyByHost
from bestiary.pipelines.singletons import Once, one
from bestiary.pipelines.tables import ReadTable, WriteTable
from bestiary.schemas.records import RESOLUTION_SCHEMA, TAXON_RANKS, TAXON_SCHEMA
from bestiary.taxonomy import backbone as bb
from bestiary.taxonomy import tables
from bestiary.taxonomy.archives import Lookup, common_name_index, inat_layout, inat_taxon, lookup_for, read_ebird
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
    """(name key, NameAsk) -> (key, ask, match dict, taxon row or None): GBIF species match, else iNaturalist taxa."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.policy, ctx.cfg.http.host_threads)
        self.gbif_url, self.inat_url = api_url(ctx)
        self.cache = ctx.path("cache", "taxonomy")

    def handle(self, item):
        key, ask = item
        try:
            if self.gbif_url:
                hit, method = resolve_gbif(self.client, self.gbif_url, key, self.cache), "gbif_match"
            elif self.inat_url:
                hit, method = resolve_inat(self.client, self.inat_url, key, self.cache), "inat_taxa"
            else:
                hit, method = None, "no_taxonomy_source"
        except FetchError as err:
            yield key, ask, {"method": "unresolved", "reason": err.reason}, None
            return
        except Exception as err:  # noqa: BLE001 - a name the API cannot answer stays unresolved, with why
            yield key, ask, {"method": "unresolved", "reason": f"lookup_error:{type(err).__name__}"}, None
            return
        if not hit or hit.get("rank") != "species" or not hit.get("species"):
            yield key, ask, {"method": "unresolved", "reason": f"rank:{hit['rank']}" if hit else "no_match"}, None
            return
        taxon = {r: hit.get(r) for r in TAXON_RANKS} | {f"{r}_id": hit.get(f"{r}_id") for r in TAXON_RANKS}
        taxon.update(taxon_id=hit.get("species_id") or hit.get("taxon_id"), rank="species",
                     accepted_name=hit.get("species") or hit.get("accepted_name"), common_name=hit.get("common_name"))
        score = hit.get("confidence") if hit.get("match_type") == "FUZZY" else None
        yield key, ask, {"method": method, "taxon_id": taxon["taxon_id"], "matched_name": hit.get("accepted_name"),
                    "score": score}, taxon


# ---------------------------------------------------------------- name resolution against a backbone dump

@dataclass(frozen=True)
class NameAsk:
    """One distinct name key and who asks for it."""
    name: ParsedName
    from_records: bool = True   # a record's name: fuzzy matching allowed, and asked of an API
    in_traits: bool = False     # a trait table's name: its match maps that table's rows to a taxon


def merge_asks(asks) -> NameAsk:
    asks = list(asks)
    return NameAsk(min((a.name for a in asks), key=repr), any(a.from_records for a in asks),
                   any(a.in_traits for a in asks))


@dataclass(frozen=True)
class Found:
    """A name's matched rows, before its accepted usage is settled."""
    ask: NameAsk
    method: str
    score: float | None
    matched: str | None
    rows: tuple


# Bloom filter seeds: each kind of wanted string is its own set in the filter.
KEY, GENUS, EPITHET, TAXON_ID, HIGHER = 1, 2, 3, 4, 5


def _lower(column) -> pa.Array:
    return pc.utf8_lower(column)


def _pass1_masks(t: pa.Table, want: Bloom, kingdoms: tuple[str, ...]):
    """Per row: its name is wanted; it is a fuzzy candidate (a species of ours whose genus or epithet is)."""
    exact = want.contains(_lower(t["canonicalName"]), KEY)
    ours = pc.and_(pc.equal(_lower(t["taxonRank"]), "species"),
                   pc.is_in(t["kingdom"], value_set=pa.array(kingdoms, pa.string())))
    ours = pc.fill_null(ours, False).to_numpy(zero_copy_only=False)
    genus = ours & want.contains(_lower(t["genericName"]), GENUS)
    epithet = ours & want.contains(_lower(t["specificEpithet"]), EPITHET)
    return exact, genus, epithet


class ScanNames(beam.DoFn):
    """Pass 1, one byte range of Taxon.tsv -> rows keyed by their name; fuzzy candidates keyed by genus and epithet.

    The filter only thins the rows out (it lets a few strangers through); the joins after it are exact."""
    WORDS = "words"

    def __init__(self, backbone: str, kingdoms: tuple[str, ...]):
        self.backbone, self.kingdoms = backbone, kingdoms

    def process(self, rng: tuple[int, int], want: Bloom):
        counts: dict = {}

        def mask(t):
            e, g, p = _pass1_masks(t, want, self.kingdoms)
            return pa.array(e | g | p)
        for t in tables.scan(self.backbone, mask, bb.COLUMNS, rng[0], rng[1], counts=counts):
            exact, genus, epithet = _pass1_masks(t, want, self.kingdoms)
            for row, e, g, p in zip(t.to_pylist(), exact, genus, epithet):
                key = (row["canonicalName"] or "").lower()
                if e:
                    yield key, row
                if len(key.split()) == 2:
                    if g:
                        yield beam.pvalue.TaggedOutput(self.WORDS, ("g:" + row["genericName"].lower(), (key, row)))
                    if p:
                        yield beam.pvalue.TaggedOutput(self.WORDS, ("e:" + row["specificEpithet"].lower(), (key, row)))
        beam.metrics.Metrics.counter("backbone", "rows_scanned").inc(counts.get("rows", 0))
        beam.metrics.Metrics.counter("backbone", "bad_rows").inc(counts.get("bad_rows", 0))


class ScanIds(beam.DoFn):
    """Pass 2, one byte range -> the synonyms' accepted rows by taxonID, and the accepted higher taxa by name."""
    HIGHER = "higher"

    def __init__(self, backbone: str):
        self.backbone = backbone

    def process(self, rng: tuple[int, int], want: Bloom):
        counts: dict = {}
        ranks = pa.array(bb.HIGHER, pa.string())

        def masks(t):
            ids = want.contains(t["taxonID"], TAXON_ID)
            higher = pc.fill_null(pc.is_in(_lower(t["taxonRank"]), value_set=ranks), False).to_numpy(zero_copy_only=False)
            return ids, higher & want.contains(t["canonicalName"], HIGHER)
        for t in tables.scan(self.backbone, lambda t: pa.array(np.logical_or(*masks(t))), bb.COLUMNS, rng[0], rng[1],
                             counts=counts):
            for row, i, h in zip(t.to_pylist(), *masks(t)):
                if i:
                    yield row["taxonID"], row
                if h and bb.status(row) == "accepted":
                    rank = row["taxonRank"].lower()
                    yield beam.pvalue.TaggedOutput(self.HIGHER, (bb.higher_key(row["kingdom"], rank, row["canonicalName"]),
                                                                 row["taxonID"]))
        beam.metrics.Metrics.counter("backbone", "rows_scanned").inc(counts.get("rows", 0))


def _pass1_wanted(item):
    key, ask = item
    yield KEY, key
    if ask.from_records:  # trait tables' names are never matched fuzzily
        yield GENUS, ask.name.genus.lower()
        yield EPITHET, ask.name.epithet.lower()


class ExactStep(beam.DoFn):
    """(name key, {ask, rows}) -> its Found rows; a Match when it ends here; the words to fuzzy-match it by."""
    FUZZY, DONE = "fuzzy", "done"

    def __init__(self, kingdoms: tuple[str, ...]):
        self.kingdoms = kingdoms

    def process(self, item):
        key, group = item
        ask = merge_asks(group["ask"]) if group["ask"] else None   # no ask: rows a false positive let through
        hit = ask and bb.exact_rows(sorted(group["rows"], key=lambda r: r["taxonID"]), self.kingdoms,
                                    fuzzy=ask.from_records)
        if ask is None:
            pass
        elif isinstance(hit, bb.Match):
            yield beam.pvalue.TaggedOutput(self.DONE, (key, (hit, ask)))
        elif hit is None:
            for word in ("g:" + ask.name.genus.lower(), "e:" + ask.name.epithet.lower()):
                yield beam.pvalue.TaggedOutput(self.FUZZY, (word, (key, ask)))
        else:
            yield key, Found(ask, "exact", None, ask.name.canonical, tuple(hit))


def fuzzy_block(item, threshold: float):
    """(genus or epithet, {names, species}) -> each name's best two candidates in this block."""
    _, group = item
    choices: dict[str, list[dict]] = {}
    for key, row in group["rows"]:
        choices.setdefault(key, []).append(row)
    for rows in choices.values():
        rows.sort(key=lambda r: r["taxonID"])
    for key, ask in group["names"]:
        yield key, (ask, bb.fuzzy_top(key, choices, threshold) if choices else [])


def fuzzy_step(item):
    """(name key, its blocks' candidates) -> Found, or the Match that says why none."""
    key, parts = item
    parts = list(parts)
    ask = parts[0][0]
    picked = bb.fuzzy_pick([t for _, tops in parts for t in tops])
    if isinstance(picked, bb.Match):
        yield beam.pvalue.TaggedOutput(ExactStep.DONE, (key, (picked, ask)))
    else:
        score, matched, rows = picked
        yield key, Found(ask, "fuzzy", score, matched, tuple(rows))


def _higher_wanted(item):
    """A Found -> the higher taxa its lineage needs."""
    _, found = item
    for r in found.rows:
        for rank in bb.HIGHER:
            if r.get(rank):
                yield HIGHER, r[rank]


def _needed_ids(item):
    """A Found -> (accepted id, name key) for each accepted usage its synonyms point to."""
    key, found = item
    ids, via_synonym = bb.accepted_ids(list(found.rows))
    return [(i, key) for i in sorted(ids)] if via_synonym else []


def _present(item):
    """(taxonID, {need: name keys, row: the row if the backbone has it}) -> (name key, accepted row)."""
    _, group = item
    if group["row"]:
        for key in group["need"]:
            yield key, group["row"][0]


class Settle(beam.DoFn):
    """(name key, {found, accepted rows}) -> (key, (Match, ask)); the accepted species' rows as TAXA."""
    TAXA = "taxa"

    def process(self, item):
        key, group = item
        found = group["found"][0]
        rows = {r["taxonID"]: r for r in list(found.rows) + list(group["accepted"])}
        m = bb.settle(list(found.rows), rows, found.method, found.score, found.matched)
        yield key, (m, found.ask)
        if m.taxon_id:
            yield beam.pvalue.TaggedOutput(self.TAXA, (m.taxon_id, rows[m.taxon_id]))


def _higher_asks(item):
    tid, row = item
    for rank in bb.HIGHER:
        if row.get(rank):
            yield bb.higher_key(row.get("kingdom"), rank, row[rank]), (tid, rank)


def _higher_ids(item):
    """(higher key, {taxa asking, accepted ids}) -> (taxon id, (rank, the higher taxon's id))."""
    _, group = item
    if group["id"]:
        hid = max(group["id"])  # two accepted rows of one name: the same one every run
        for tid, rank in group["ask"]:
            yield tid, (rank, hid)


def _taxon(item) -> list:
    tid, group = item
    row = group["row"][0]
    return [(tid, {**bb.lineage(row, dict(group["higher"])), "taxon_id": tid, "rank": "species",
                   "accepted_name": row["canonicalName"]})]


def _first(rows):
    return next(iter(rows))


class BackboneResolve(beam.PTransform):
    """(name key, NameAsk) -> ((key, (match, NameAsk)), (taxon id, taxon)), all as keyed joins.

    Both passes scan the dump's byte ranges over workers, thinned by a fixed-size Bloom filter of what
    the names want; the name -> rows, genus/epithet -> species, synonym -> accepted row and higher taxon
    -> id joins are CoGroupByKeys, so no worker holds more than one name's, one genus' or one taxon's rows."""

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, asks):
        t = self.ctx.cfg.taxonomy
        kingdoms, threshold = tuple(t.kingdoms), t.fuzzy_threshold
        rngs = (asks.pipeline | "backbone" >> Once(t.backbone)
                | "ranges" >> beam.FlatMap(tables.byte_ranges, t.backbone_parts))
        want1 = asks | "wanted 1" >> beam.FlatMap(_pass1_wanted) | "filter 1" >> beam.CombineGlobally(BuildBloom())
        pass1 = (rngs | "spread 1" >> beam.Reshuffle()
                 | "pass 1" >> beam.ParDo(ScanNames(t.backbone, kingdoms), beam.pvalue.AsSingleton(want1))
                 .with_outputs(ScanNames.WORDS, main="rows"))
        exact = ({"ask": asks, "rows": pass1.rows} | "by name" >> beam.CoGroupByKey()
                 | "exact" >> beam.ParDo(ExactStep(kingdoms)).with_outputs(ExactStep.FUZZY, ExactStep.DONE, main="found"))
        fuzzy = ({"names": exact[ExactStep.FUZZY], "rows": pass1[ScanNames.WORDS]} | "by word" >> beam.CoGroupByKey()
                 | "fuzzy blocks" >> beam.FlatMap(fuzzy_block, threshold) | "name's blocks" >> beam.GroupByKey()
                 | "fuzzy" >> beam.FlatMap(fuzzy_step).with_outputs(ExactStep.DONE, main="found"))
        found = (exact.found, fuzzy.found) | "found" >> beam.Flatten()
        needed = found | "needed ids" >> beam.FlatMap(_needed_ids)
        want2 = ((needed | "ids wanted" >> beam.MapTuple(lambda i, _: (TAXON_ID, i)),
                  found | "higher wanted" >> beam.FlatMap(_higher_wanted))
                 | "wanted 2" >> beam.Flatten() | "filter 2" >> beam.CombineGlobally(BuildBloom()))
        pass2 = (rngs | "spread 2" >> beam.Reshuffle()
                 | "pass 2" >> beam.ParDo(ScanIds(t.backbone), beam.pvalue.AsSingleton(want2))
                 .with_outputs(ScanIds.HIGHER, main="ids"))
        accepted = ({"need": needed, "row": pass2.ids}
                    | "by id" >> beam.CoGroupByKey() | "present" >> beam.FlatMap(_present))
        settled = ({"found": found, "accepted": accepted} | "found by name" >> beam.CoGroupByKey()
                   | "settle" >> beam.ParDo(Settle()).with_outputs(Settle.TAXA, main="matches"))
        matches = (exact[ExactStep.DONE], fuzzy[ExactStep.DONE], settled.matches) | "matches" >> beam.Flatten()
        species = settled[Settle.TAXA] | "one row per taxon" >> beam.CombinePerKey(_first)
        higher = ({"ask": species | "higher taxa" >> beam.FlatMap(_higher_asks), "id": pass2[ScanIds.HIGHER]}
                  | "by higher taxon" >> beam.CoGroupByKey() | "higher ids" >> beam.FlatMap(_higher_ids))
        taxa = ({"row": species, "higher": higher} | "lineage" >> beam.CoGroupByKey()
                | "taxa" >> beam.FlatMap(_taxon))
        return matches | "as dicts" >> beam.MapTuple(lambda k, ma: (k, (_match_dict(ma[0]), ma[1]))), taxa


def _match_dict(m: bb.Match) -> dict:
    return {"method": m.method, "taxon_id": m.taxon_id, "score": m.score, "matched_name": m.matched_name,
            "reason": m.reason}


# ---------------------------------------------------------------- per record and per taxon

class LookupFor(beam.DoFn):
    """(catalog row, its iNaturalist taxon or None) -> (the row's name fields, what to look up)."""

    def __init__(self, ebird_path: str | None):
        self.ebird_path = ebird_path

    def setup(self) -> None:
        self.ebird = read_ebird(self.ebird_path) if self.ebird_path else None
        self.commons = common_name_index(self.ebird) if self.ebird else None

    def process(self, item):
        row, inat = item
        try:
            yield row, lookup_for(row, self.ebird, {row["source_taxon_id"]: inat} if inat else None, self.commons)
        except Exception:  # noqa: BLE001 - a name nobody can parse is unresolved ('unparsable'), not a crash
            yield row, Lookup(ParsedName("unparsable"), "name")


def _inat_id(row: dict) -> str | None:
    return row["source_taxon_id"] if row["source"] == "inaturalist" and row["source_taxon_id"] else None


class ScanInatTaxa(beam.DoFn):
    """One byte range of iNaturalist's taxa table -> (taxon id, taxon) for the ids the filter lets through."""

    def __init__(self, path: str):
        self.path = path

    def process(self, rng: tuple[int, int], want: Bloom):
        delim, id_col = inat_layout(self.path)
        for t in tables.scan(self.path, lambda t: pa.array(want.contains(t[id_col], TAXON_ID)), start=rng[0],
                             end=rng[1], delimiter=delim):
            for r in t.to_pylist():
                yield r[id_col], inat_taxon(r)


def _with_taxon(item):
    """(taxon id, {rows, taxon}) -> each row with the table's taxon (None when the table has no such id)."""
    _, group = item
    taxon = group["taxon"][0] if group["taxon"] else None
    for row in group["rows"]:
        yield row, taxon


class WithInatTaxa(beam.PTransform):
    """catalog rows -> (row, its iNaturalist taxon or None): rows keyed by taxon id joined with the taxa table,
    scanned in byte ranges over workers and thinned by a Bloom filter of the ids the rows hold."""

    def __init__(self, path: str | None, parts: int):
        super().__init__()
        self.path, self.parts = path, parts

    def expand(self, rows):
        if not self.path:
            return rows | "no taxa table" >> beam.Map(lambda r: (r, None))
        keyed = rows | "by inat id" >> beam.FlatMap(lambda r: [(_inat_id(r), r)] if _inat_id(r) else [])
        rest = (rows | "no inat id" >> beam.Filter(lambda r: not _inat_id(r))
                | "no taxon" >> beam.Map(lambda r: (r, None)))
        want = (keyed | "ids wanted" >> beam.MapTuple(lambda i, _: (TAXON_ID, i))
                | "id filter" >> beam.CombineGlobally(BuildBloom()))
        taxa = (rows.pipeline | "taxa table" >> Once(self.path)
                | "taxa ranges" >> beam.FlatMap(tables.byte_ranges, self.parts) | "spread" >> beam.Reshuffle()
                | "scan taxa" >> beam.ParDo(ScanInatTaxa(self.path), beam.pvalue.AsSingleton(want)))
        joined = ({"rows": keyed, "taxon": taxa} | "rows by id" >> beam.CoGroupByKey()
                  | "with taxon" >> beam.FlatMap(_with_taxon))
        return (rest, joined) | "all rows" >> beam.Flatten()


def resolution_row(item, m: dict | None) -> dict:
    r, lk = item
    m = m or {"method": "unresolved", "reason": lk.name.kind}
    return {"key": r["key"], "source": r["source"], "given_name": r["scientific_name"], "given_id": r["source_taxon_id"],
            "via": lk.via, "lookup_name": lk.name.canonical, "method": m["method"], "score": m.get("score"),
            "matched_name": m.get("matched_name"), "taxon_id": m.get("taxon_id"),
            "subspecies": lk.name.infraspecific, "reason": m.get("reason"),
            # for the per-taxon combine only (not written)
            "_common": r.get("common_name"), "_source_id": r.get("source_taxon_id")}


def _record_resolutions(item):
    """(name key, {records, match}) -> each record's resolution row."""
    _, group = item
    m = group["match"][0][0] if group["match"] else None
    for rec in group["records"]:
        yield resolution_row(rec, m)


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


def taxon_row(item, ebird_common: dict) -> list[dict]:
    """(taxon id, {taxon, what its records say}) -> the taxon's row; none for a taxon no record has."""
    tid, group = item
    if not group["names"]:
        return []
    commons, ebird, inat, seen = group["names"][0]
    taxon = dict(group["taxon"][0])
    taxon["common_name"] = (ebird_common.get(taxon["accepted_name"]) or taxon.get("common_name")
                            or (min(commons.items(), key=lambda kv: (-kv[1], kv[0]))[0] if commons else None))
    taxon.update(ebird_codes=sorted(ebird), inat_ids=sorted(inat), names_seen=sorted(seen))
    return [taxon]


def trait_rows(taxa: list[dict], trait_tables: list, trait_matches: dict) -> tuple[list[dict], dict]:
    """Trait rows of the taxa with records, and the trait part of the coverage report.

    `trait_matches`: the trait tables' own names -> taxon ids (bounded by the tables, not the records)."""
    accepted = dict(trait_matches)
    for taxon in taxa:
        accepted.setdefault(taxon["accepted_name"].lower(), taxon["taxon_id"])
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


TOP_NAMES = 100   # the report lists this many unresolved names and fuzzy matches, the most frequent first


def _counts(r: dict):
    """Counters of a few fixed keys (methods, ways found, reasons)."""
    yield f"method|{r['method']}", 1
    yield f"via|{r['via']}", 1
    yield "records", 1
    if r["method"] == "unresolved":
        yield f"reason|{r['reason'].split(':')[0]}", 1


def _name_counts(r: dict):
    """Counters keyed by name: as many keys as distinct names, so only the top few reach the report."""
    if r["method"] == "unresolved":
        yield f"name|{r['given_name'] or r['given_id'] or '(empty)'} [{r['reason']}]", 1
    if r["method"].startswith("fuzzy"):
        yield f"fuzzy|{r['lookup_name']} -> {r['matched_name']} ({r['score']})", 1


def coverage(counts: dict, top: dict, distinct: dict, traits: dict) -> dict:
    """The coverage report: records by method, the most frequent unresolved names, trait coverage per trait.

    `top`: kind (name, fuzzy) -> its most frequent (text, count); `distinct`: kind -> how many texts in all."""
    def part(prefix):
        return dict(sorted((k.split("|", 1)[1], v) for k, v in counts.items() if k.startswith(prefix + "|")))
    return {"records": counts.get("records", 0), **traits, "by_method": part("method"), "by_via": part("via"),
            "unresolved": dict(sorted(top.get("name", []), key=_top_key)), "unresolved_names": distinct.get("name", 0),
            "unresolved_by_reason": part("reason"),
            "fuzzy": sorted(text for text, _ in top.get("fuzzy", [])), "fuzzy_names": distinct.get("fuzzy", 0)}


def _read_trait_tables(_, specs: list) -> list:
    return [(m, read_table(path, m)) for path, spec in specs for m in [load_mapping(spec)]]


def _trait_asks(trait_tables: list):
    """The trait tables' names, asked of the backbone exactly (bounded by the tables' rows)."""
    for key in sorted({k for m, rows in trait_tables for r in rows for k in row_names(r, m)}):
        name = parse_name(key)
        if name.kind == "species":
            yield name.key, NameAsk(name, from_records=False, in_traits=True)


def _record_names(item):
    row, lk = item
    return [(lk.name.key, item)] if lk.name.kind == "species" else []


def _top_key(kv):
    return -kv[1], kv[0]


class Enrich(beam.PTransform):
    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx

    def expand(self, pbegin):
        ctx, t = self.ctx, self.ctx.cfg.taxonomy
        rows = ((pbegin | "audio" >> ReadTable(ctx.path("catalog", "recordings"), LOOKUP_COLUMNS),
                 pbegin | "images" >> ReadTable(ctx.path("catalog", "images"), LOOKUP_COLUMNS))
                | "rows" >> beam.Flatten())
        lookups = (rows | "inat taxa" >> WithInatTaxa(t.inat_taxa, t.backbone_parts)
                   | "lookups" >> beam.ParDo(LookupFor(t.ebird)))
        named = lookups | "keyed by name" >> beam.FlatMap(_record_names)
        trait_tables = (pbegin | "trait specs" >> Once()
                        | "trait tables" >> beam.Map(_read_trait_tables, [(tt.path, tt.mapping) for tt in t.traits]))
        asks = ((named | "record asks" >> beam.MapTuple(lambda k, item: (k, NameAsk(item[1].name))),
                 trait_tables | "trait asks" >> beam.FlatMap(_trait_asks))
                | "all asks" >> beam.Flatten() | "one ask per name" >> beam.CombinePerKey(merge_asks))
        if t.backbone:
            matches, taxa = asks | "backbone" >> BackboneResolve(ctx)
        else:
            gbif_url, inat_url = api_url(ctx)
            url = gbif_url or inat_url
            answers = (asks | "asked of the API" >> beam.FlatMap(lambda kv: [kv] if kv[1].from_records else [])
                       | "by host" >> beam.ParDo(KeyByHost(ctx.policy, ctx.cfg.http.host_slots, lambda _: url,
                                                           lambda kv: kv[0]))
                       | "host groups" >> beam.GroupByKey() | "ask" >> beam.ParDo(ResolveByApi(ctx)))
            matches = answers | "api matches" >> beam.MapTuple(lambda key, ask, m, taxon: (key, (m, ask)))
            taxa = (answers | "api taxa" >> beam.FlatMap(
                lambda a: [(a[3]["taxon_id"], (a[0], a[3]))] if a[3] else [])
                | "first name's taxon" >> beam.CombinePerKey(lambda vs: min(vs, key=lambda v: v[0]))
                | "taxon" >> beam.MapTuple(lambda tid, kv: (tid, kv[1])))
        unnamed = (lookups | "not species" >> beam.Filter(lambda item: item[1].name.kind != "species")
                   | "no match" >> beam.Map(resolution_row, None))
        res = (({"records": named, "match": matches} | "records by name" >> beam.CoGroupByKey()
                | "per record" >> beam.FlatMap(_record_resolutions), unnamed) | "resolutions" >> beam.Flatten())
        res | "write resolutions" >> WriteTable(ctx.path("catalog", "resolutions"), RESOLUTION_SCHEMA)
        ebird_common = (pbegin | "ebird" >> Once(t.ebird)
                        | "ebird names" >> beam.Map(lambda p: {e.sci_name: e.common_name for e in read_ebird(p).values()
                                                               if e.category == "species"} if p else {}))
        names = (res | "by taxon" >> beam.FlatMap(lambda r: [(r["taxon_id"], r)] if r["taxon_id"] else [])
                 | "taxon names" >> beam.CombinePerKey(TaxonNames()))
        taxa = ({"taxon": taxa, "names": names} | "taxa with records" >> beam.CoGroupByKey()
                | "taxon rows" >> beam.FlatMap(taxon_row, beam.pvalue.AsSingleton(ebird_common)))
        taxa | "write taxa" >> WriteTable(ctx.path("catalog", "taxa"), TAXON_SCHEMA, sort_by=("taxon_id",))
        trait_matches = (matches | "trait names' matches" >> beam.FlatMap(
            lambda kv: [(kv[0], kv[1][0]["taxon_id"])] if kv[1][1].in_traits and kv[1][0].get("taxon_id") else [])
            | "trait names" >> beam.combiners.ToDict().without_defaults())
        taxa_list = taxa | "taxa list" >> beam.combiners.ToList().without_defaults()
        traits = (pbegin | "traits once" >> Once()
                  | "join traits" >> beam.Map(lambda _, tx, tables, names: trait_rows(tx, tables, names),
                                              one(taxa_list, []), beam.pvalue.AsSingleton(trait_tables),
                                              one(trait_matches, {})))
        (traits | "trait rows" >> beam.FlatMap(lambda tr: tr[0])
         | "write traits" >> WriteTable(ctx.path("catalog", "traits"), TRAIT_SCHEMA, sort_by=("taxon_id",)))
        counts = (res | "counts" >> beam.FlatMap(_counts) | "sum" >> beam.CombinePerKey(sum)
                  | "as dict" >> beam.combiners.ToDict().without_defaults())
        per_name = res | "name counts" >> beam.FlatMap(_name_counts) | "sum per name" >> beam.CombinePerKey(sum)
        by_kind = per_name | "by kind" >> beam.MapTuple(lambda k, n: (k.split("|", 1)[0], (k.split("|", 1)[1], n)))
        top = (by_kind | "most frequent" >> beam.combiners.Top.PerKey(TOP_NAMES, key=_top_key, reverse=True)
               | "top as dict" >> beam.combiners.ToDict().without_defaults())
        distinct = (by_kind | "one each" >> beam.MapTuple(lambda kind, _: (kind, 1))
                    | "distinct names" >> beam.CombinePerKey(sum)
                    | "distinct as dict" >> beam.combiners.ToDict().without_defaults())
        (pbegin | "once" >> Once()
         | "stats" >> beam.Map(lambda _, c, tp, d, tr: io.write_json(ctx.path("work", "stats-enrich.json"),
                                                                      coverage(c, tp, d, tr[1])),
                               one(counts, {}), one(top, {}), one(distinct, {}), beam.pvalue.AsSingleton(traits)))
        return res


NOT_SPECIES = {"genus", "spuh", "hybrid", "slash", "uncertain", "intergrade", "domestic", "form", "issf", "empty",
               "unparsable"}


def unresolved_reject(key: str, given: str | None, reason: str | None) -> dict:
    from bestiary.schemas.records import reject
    reason = reason or "no_resolution"
    if reason in NOT_SPECIES:
        return reject(key, "enrich", "not_species_level", f"{reason}: {given or 'no name'}")
    return reject(key, "enrich", "taxon_unresolved", f"{reason}: {given or 'no name'}")
