"""Taxonomy and traits on real rows: names, the backbone, eBird and iNaturalist tables, trait mappings."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pyarrow.compute as pc
import pytest

from bestiary.pipelines import io
from bestiary.sample_archive.taxonomy_data import DATA, write_big_backbone
from bestiary.taxonomy import tables
from bestiary.taxonomy.archives import (common_name_index, ebird_species, lookup_for, read_ebird, read_inat_taxa)
from bestiary.taxonomy.backbone import Backbone, resolve_all
from bestiary.taxonomy.names import parse_name
from bestiary.taxonomy.traits import (MappingError, apply_rule, join_traits, load_mapping, read_table, row_names,
                                      row_traits)
from tests.conftest import fixture_path

BACKBONE = str(DATA / "Taxon.tsv")


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("raw, kind, key, infra, author", [
    ("Bufo americanus Holbrook, 1836", "species", "bufo americanus", None, "Holbrook, 1836"),  # GBIF's answer
    ("Parus major major (Linnaeus, 1758)", "species", "parus major", "major", "(Linnaeus, 1758)"),
    ("Parus major [major Group]", "species", "parus major", None, "[major Group]"),          # eBird issf
    ("Bubo bubo subsp. hispanus Rothschild & Hartert, 1910", "species", "bubo bubo", "hispanus",
     "Rothschild & Hartert, 1910"),
    ("Gyps r\u00fcppelli", "species", "gyps ruppelli", None, None),                            # non-ASCII folded
    ("Turdus\u00a0merula", "species", "turdus merula", None, None),                          # a no-break space
    ("parus  major", "species", "parus major", None, None),
    ("Poecile sp.", "spuh", None, None, None),                                                 # eBird spuh
    ("Poecile carolinensis x atricapillus", "hybrid", None, None, None),                      # eBird hybrid
    ("Anas platyrhynchos \u00d7 Anas acuta", "hybrid", None, None, None),
    ("Poecile palustris/montanus", "slash", None, None, None),                                # eBird slash
    ("Dryophytes cf. versicolor", "uncertain", None, None, None),
    ("Strix", "genus", None, None, None),
    ("", "empty", None, None, None),
    (None, "empty", None, None, None),
])
def test_parse_name(raw, kind, key, infra, author):
    p = parse_name(raw)
    assert p.kind == kind
    assert (p.key if kind == "species" else None) == key
    assert p.infraspecific == infra and p.authorship == author


def test_every_ebird_category_parses_to_its_kind():
    """All 2,672 rows of the real eBird v2025 file: species rows parse as species, spuhs, slashes and
    hybrids as theirs (the categories the parser has to recognise from the name alone)."""
    table = read_ebird(str(fixture_path("taxonomy", "ebird_taxonomy_v2025_7families.csv")))
    kinds = {"species": "species", "spuh": "spuh", "slash": "slash", "hybrid": "hybrid"}
    wrong = [(t.sci_name, t.category, parse_name(t.sci_name).kind) for t in table.values()
             if t.category in kinds and parse_name(t.sci_name).kind != kinds[t.category]]
    assert len(table) == 2672 and wrong == []


# ---------------------------------------------------------------- archives' tables

def test_ebird_codes_roll_up_or_stop():
    table = read_ebird(str(fixture_path("taxonomy", "ebird_taxonomy_v2025_7families.csv")))
    assert ebird_species("gretit3", table)[0].sci_name == "Parus major"        # issf -> its species
    assert ebird_species("gretit1", table)[0].sci_name == "Parus major"
    assert ebird_species("chicka1", table) == (None, "spuh")
    assert ebird_species("x00195", table) == (None, "hybrid")
    assert ebird_species("y00696", table) == (None, "slash")
    assert ebird_species("nosuch1", table) == (None, "unknown_code")
    commons = common_name_index(table)
    row = {"source": "xeno-canto", "scientific_name": "", "common_name": "Great Tit", "source_taxon_id": None}
    assert lookup_for(row, table, None, commons).name.key == "parus major"     # an English name alone
    processed = read_ebird(str(fixture_path("taxonomy", "ebird_2024_taxonomy.csv")))  # birdnames' shape
    assert processed["gretit1"].sci_name == "Parus major" and processed["gretit1"].category == "species"


def test_inaturalist_taxa_tables():
    open_data = read_inat_taxa(str(fixture_path("inaturalist", "open_data", "taxa.csv")), {"28799", "27928", "0"})
    assert open_data["28799"] == {"name": "Rhadinella pilonaorum", "rank": "species", "active": True}
    assert open_data["27928"]["active"] is False and "0" not in open_data
    dwca = read_inat_taxa(str(fixture_path("taxonomy", "inat_dwca_taxa.csv")), {"3"})
    assert dwca["3"]["name"] == "Aves" and dwca["3"]["rank"] == "class"
    row = {"source": "inaturalist", "scientific_name": None, "common_name": None, "source_taxon_id": "28799"}
    assert lookup_for(row, None, open_data, None).via == "inat_id"


def test_byte_ranges_cover_every_line_once(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("a\tb\n" + "".join(f"{i}\tx{i}\n" for i in range(5000)) + "too\tmany\tfields\n")
    seen, counts = [], {}
    for start, end in tables.byte_ranges(str(path), 7):
        for t in tables.scan(str(path), lambda t: pc.equal(t["b"], t["b"]), start=start, end=end, block=997,
                             counts=counts):
            seen += t["a"].to_pylist()
    assert seen == [str(i) for i in range(5000)] and counts["bad_rows"] == 1


# ---------------------------------------------------------------- the backbone

@pytest.fixture(scope="module")
def big_backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "Taxon.tsv"
    assert write_big_backbone(path, 1_000_000) == 1_000_000
    return str(path)


CASES = {  # name as an archive gives it -> (method, accepted name or the reason)
    "Parus major major (Linnaeus, 1758)": ("exact", "Parus major"),
    "Carduelis spinus": ("synonym", "Spinus spinus"),
    "Bufo americanus Holbrook, 1836": ("synonym", "Anaxyrus americanus"),   # GBIF's own answer, real keys
    "Catharus guttatas": ("fuzzy", "Catharus guttatus"),
    "Gyps r\u00fcppelli": ("fuzzy", "Gyps rueppelli"),
    "Orestias elegans": ("exact", "Orestias elegans"),                      # fish and orchid: the fish
    "Prunella vulgaris": ("unresolved", "other_kingdom:Plantae"),           # a plant is no animal
    "Nonexistus imaginarius": ("unresolved", "no_match"),
    "Poecile sp.": ("unresolved", "spuh"),
    "Poecile carolinensis x atricapillus": ("unresolved", "hybrid"),
    "": ("unresolved", "empty"),
}


def test_resolution_against_a_million_row_backbone(big_backbone):
    names = [parse_name(n) for n in CASES]
    counts: dict = {}
    index, matches = resolve_all(big_backbone, names, counts=counts)
    assert counts["rows"] == 1_000_000
    for raw, (method, expected) in CASES.items():
        p = parse_name(raw)
        m = matches.get(p.key) if p.key else index.resolve(p)
        assert m.method == method, raw
        if m.taxon_id:
            assert index.by_id[m.taxon_id]["canonicalName"] == expected, raw
        else:
            assert m.reason == expected, raw
    fish = matches["orestias elegans"]
    assert index.lineage(fish.taxon_id)["kingdom"] == "Animalia"
    toad = index.lineage(matches["bufo americanus"].taxon_id)
    assert (toad["genus"], toad["genus_id"], toad["family_id"]) == ("Anaxyrus", "2422857", "6727")
    assert 90 <= matches["catharus guttatas"].score < 100


def test_ambiguous_names_are_not_guessed():
    rows = [{"taxonID": "1", "canonicalName": "Aus bus", "taxonRank": "species", "taxonomicStatus": "accepted",
             "kingdom": "Animalia"},
            {"taxonID": "2", "canonicalName": "Aus bus", "taxonRank": "species", "taxonomicStatus": "accepted",
             "kingdom": "Animalia"},
            {"taxonID": "3", "canonicalName": "Cus dus", "taxonRank": "species", "taxonomicStatus": "proparte synonym",
             "acceptedNameUsageID": "4", "kingdom": "Animalia"},
            {"taxonID": "4", "canonicalName": "Eus fus", "taxonRank": "species", "taxonomicStatus": "accepted",
             "kingdom": "Animalia"}]
    index = Backbone(rows)
    assert index.resolve(parse_name("Aus bus")).reason == "ambiguous"
    assert index.resolve(parse_name("Cus dus")).method == "synonym"
    assert index.resolve(parse_name("Aus bus"), kingdoms=("Plantae",)).reason == "other_kingdom:Animalia"


def test_enrich_on_a_million_rows_stays_under_2_gib(tiny_build, big_backbone, tmp_path):
    """The Beam enrich stage with the 1M-row backbone, in a child process whose peak RSS is measured."""
    cfg, _ = tiny_build
    out = tmp_path / "out"
    for name in ("recordings", "images"):
        shutil.copytree(os.path.join(cfg.out, "catalog", name), out / "catalog" / name)
    conf = cfg.model_dump(mode="json")
    conf["out"] = str(out)
    conf["taxonomy"]["backbone"] = big_backbone
    script = textwrap.dedent(f"""
        import json
        from bestiary.schemas.config import parse_config
        from bestiary.pipelines.build import run_one
        run_one(parse_config(json.loads({json.dumps(json.dumps(conf))})), "enrich")
        # VmHWM is this process image's own peak; ru_maxrss would also count the pytest process it was
        # started from (Linux carries the old image's high-water mark across exec)
        print("PEAK", next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    peak_kib = int(res.stdout.split("PEAK")[1].split()[0])
    print(f"enrich, 1M-row backbone: peak RSS {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    small = io.read_rows(io.join(cfg.out, "catalog", "resolutions"))
    large = io.read_rows(str(out / "catalog" / "resolutions"))
    assert [(r["key"], r["taxon_id"]) for r in large] == [(r["key"], r["taxon_id"]) for r in small]


# ---------------------------------------------------------------- traits

def test_avonet_rows_map_to_the_vocabulary():
    m = load_mapping("avonet")
    rows = read_table(str(fixture_path("traits", "avonet_birdlife_7families.csv")), m)
    assert len(rows) == 1451
    tawny = next(r for r in rows if r["Species1"] == "Strix aluco")
    t = row_traits(tawny, m)
    assert t["diet"] == "carnivore" and t["predator"] is True and t["migratory"] is False
    assert t["forest"] is True and t["temperate"] is True and t["tropical"] is False
    assert row_names(tawny, m) == ["strix aluco"]


def test_eltontraits_join_through_the_backbone_synonyms():
    """EltonTraits (2014) names 'Carduelis spinus' and 'Parus caeruleus'; the backbone's synonyms bring their
    traits to Spinus spinus and Cyanistes caeruleus.  Conflicts with AVONET are reported, AVONET kept."""
    elton, avonet = load_mapping("eltontraits_birds"), load_mapping("avonet")
    elton_rows = read_table(str(fixture_path("traits", "eltontraits_BirdFuncDat_7families.txt")), elton)
    avonet_rows = read_table(str(fixture_path("traits", "avonet_birdlife_7families.csv")), avonet)
    assert len(elton_rows) == 1316  # CR CR LF line ends: no blank or split rows
    names = [parse_name(n) for n in ("Spinus spinus", "Cyanistes caeruleus", "Carduelis spinus", "Parus caeruleus")]
    index, matches = resolve_all(BACKBONE, names, threshold=None)
    accepted = {k: m.taxon_id for k, m in matches.items() if m.taxon_id}
    siskin, bluetit = accepted["spinus spinus"], accepted["cyanistes caeruleus"]
    assert accepted["carduelis spinus"] == siskin and accepted["parus caeruleus"] == bluetit
    joined = join_traits([(avonet, avonet_rows), (elton, elton_rows)], accepted, {siskin, bluetit})
    assert joined.matched == {"avonet": 2, "eltontraits_birds": 2}
    assert joined.sources[siskin]["activity"] == "eltontraits_birds"       # only Elton says activity
    assert joined.sources[siskin]["diet"] == "avonet"
    for c in joined.conflicts:
        assert c["kept_from"] == "avonet" and c["kept"] != c["other"]


def test_missing_markers_stay_missing(tmp_path):
    """PanTHERIA's -999 (as -999.00 too), AVONET's NA and empty cells are missing, never 0 or False."""
    m = load_mapping("pantheria")
    path = tmp_path / "pantheria.txt"
    header = ["MSW05_Binomial", "1-1_ActivityCycle", "6-2_TrophicLevel", "12-2_Terrestriality", "26-4_GR_MRLat"]
    path.write_text("\t".join(header) + "\n" + "Vulpes vulpes\t2.00\t3.00\t1.00\t45.2\n" +
                    "Mus musculus\t-999\t-999.00\t\t-999\n")
    fox, mouse = read_table(str(path), m)
    assert row_traits(fox, m) == {"activity": "crepuscular", "diet": "carnivore", "predator": True,
                                  "terrestrial": True, "arboreal": False, "tropical": False, "subtropical": False,
                                  "temperate": True, "boreal": False, "polar": False}
    assert row_traits(mouse, m) == {}
    avonet = load_mapping("avonet")
    assert apply_rule(avonet.rules["migratory"], {"Migration": "NA"}, avonet.missing) is None
    life = fixture_path("traits", "mammal_lifehistories_v2.txt")   # names split over two columns, -999 missing
    user = tmp_path / "life.yaml"
    user.write_text('table: lifehistories\nnames: ["{Genus} {species}"]\ndelimiter: "\\t"\nmissing: ["-999"]\n'
                    'traits:\n  social: {column: "litter size", map: {"1.00": solitary}}\n')
    lm = load_mapping(str(user))
    rows = read_table(str(life), lm)
    assert row_names(rows[0], lm) == ["antilocapra americana"]
    weaning = [r for r in rows if r["wean mass(g)"].startswith("-999")]
    assert weaning and apply_rule({"column": "wean mass(g)", "at_least": 0}, weaning[0], lm.missing) is None


def test_mappings_are_checked_against_the_vocabulary(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("names: [Species]\ntraits:\n  wingspan: {column: W, at_least: 1}\n")
    with pytest.raises(MappingError, match="not a trait"):
        load_mapping(str(bad))
    bad.write_text("names: [Species]\ntraits:\n  diet: {column: D, map: {x: lasagna}}\n")
    with pytest.raises(MappingError, match="cannot be 'lasagna'"):
        load_mapping(str(bad))
    with pytest.raises(MappingError, match="built-in"):
        load_mapping("nosuchtable")
    ok = tmp_path / "ok.yaml"
    ok.write_text("names: [Species]\ntraits:\n  diet: {column: Diet, map: {x: omnivore}}\n")
    path = tmp_path / "t.csv"
    path.write_text("Species,Other\nAus bus,1\n")
    with pytest.raises(MappingError, match="Diet"):
        read_table(str(path), load_mapping(str(ok)))


# ---------------------------------------------------------------- in the build

def test_build_resolves_every_record_and_carries_traits(tiny_build):
    cfg, stats = tiny_build
    res = io.read_rows(io.join(cfg.out, "catalog", "resolutions"))
    catalog = io.read_rows(io.join(cfg.out, "catalog", "recordings")) + \
        io.read_rows(io.join(cfg.out, "catalog", "images"))
    assert sorted(r["key"] for r in res) == sorted(r["key"] for r in catalog)   # every record accounted for
    taxa = io.read_rows(io.join(cfg.out, "catalog", "taxa"))
    assert {t["accepted_name"] for t in taxa} == {"Strix aluco", "Strix varia", "Bubo bubo", "Bubo virginianus",
                                                  "Athene noctua"}
    owl = next(t for t in taxa if t["accepted_name"] == "Strix varia")
    assert owl["ebird_codes"] == ["brdowl"] and owl["family"] == "Strigidae" and owl["common_name"] == "Barred Owl"
    assert stats["enrich"]["trait_coverage"]["diet"] == 1.0
    assert stats["enrich"]["trait_coverage"]["fossorial"] == 0.0
    import webdataset as wds
    shard = next(s for s in io.read_json(io.join(cfg.out, "shards", "manifest.json"))["shards"])
    sample = next(iter(wds.WebDataset(io.join(cfg.out, "shards", shard["file"]), shardshuffle=False)))
    meta = json.loads(sample["json"])
    table = {t["taxon_id"]: t for t in io.read_rows(io.join(cfg.out, "catalog", "traits"))}
    expected = {k: v for k, v in table[meta["taxon"]["taxon_id"]].items() if k in meta["traits"]}
    assert meta["traits"] == expected and meta["traits"]["predator"] is not None
    assert meta["traits"]["fossorial"] is None    # no table says: missing, not False


def test_sample_data_files_are_what_the_generator_writes(tmp_path, monkeypatch):
    from bestiary.sample_archive import taxonomy_data
    monkeypatch.setattr(taxonomy_data, "DATA", tmp_path)
    taxonomy_data.write(None)
    assert (tmp_path / "Taxon.tsv").read_bytes() == (DATA / "Taxon.tsv").read_bytes()
    assert (tmp_path / "amphibio.csv").read_bytes() == (DATA / "amphibio.csv").read_bytes()
    with open(DATA / "ebird_taxonomy.csv", encoding="utf-8-sig") as fh:
        codes = {r["SPECIES_CODE"] for r in csv.DictReader(fh)}
    from bestiary.sample_archive.species import SPECIES
    assert {c for _, _, c in SPECIES if c} <= codes


def test_gbif_match_api_path_meets_the_backbone(tiny_build, archive_server, tmp_path):
    """Without a backbone dump, GBIF's species match API (on the sample server) resolves the same records to
    the same accepted taxa; its answers are cached, so a second run asks nothing."""
    from bestiary.pipelines.build import run_one
    from bestiary.schemas.config import parse_config
    state, url = archive_server
    cfg, _ = tiny_build
    out = tmp_path / "out"
    for name in ("recordings", "images"):
        shutil.copytree(os.path.join(cfg.out, "catalog", name), out / "catalog" / name)
    conf = cfg.model_dump(mode="json") | {"out": str(out), "taxonomy": {"gbif_base_url": url}}
    run_one(parse_config(conf), "enrich")
    by_backbone = {r["key"]: r["taxon_id"] for r in io.read_rows(io.join(cfg.out, "catalog", "resolutions"))}
    by_api = io.read_rows(str(out / "catalog" / "resolutions"))
    assert {r["key"]: r["taxon_id"] for r in by_api} == by_backbone
    assert {r["method"] for r in by_api if r["taxon_id"]} == {"gbif_match"}
    route = next(r for r in state.counts if "match" in r)
    assert state.counts[route] > 0
    before = state.counts[route]
    run_one(parse_config(conf), "enrich")
    assert state.counts[route] == before


# ---------------------------------------------------------------- the keyed resolution in Beam

def _catalog(out, rows: list[dict]) -> None:
    """A catalog of the lookup columns only: what the enrich stage reads of recordings."""
    import pyarrow as pa
    from bestiary.pipelines.enrich import LOOKUP_COLUMNS
    from bestiary.pipelines.tables import write_part
    write_part(os.path.join(out, "catalog", "recordings", "part-00000.parquet"),
               [{c: r.get(c) for c in LOOKUP_COLUMNS} for r in rows], pa.schema([(c, pa.string()) for c in LOOKUP_COLUMNS]))


def _misspelt(name: str, i: int) -> str:
    genus, epithet = name.split()
    j = 1 + i % (len(epithet) - 1)
    return f"{genus} {epithet[:j]}{epithet[j]}{epithet[j:]}"   # one letter doubled: a typo a fuzzy match finds


@pytest.mark.timeout(600)
def test_keyed_resolution_agrees_with_the_in_memory_index(tiny_build, big_backbone, tmp_path):
    """The Beam stage resolves names by keyed joins (name -> rows, genus and epithet -> candidates, synonym ->
    accepted row, higher taxon -> id), never through a map of all names.  On a 1M-row backbone, with every
    record of 420 giving its own name (typos of real species, garbage, the hard cases above), each record
    gets exactly what `Backbone.resolve` over the whole index gives, with the same lineage ids; the coverage
    report keeps the 100 most frequent unresolved names and counts them all."""
    from bestiary.pipelines.build import run_one
    from bestiary.pipelines.enrich import TOP_NAMES
    from bestiary.sample_archive.species import SPECIES
    from bestiary.schemas.config import parse_config
    cfg, _ = tiny_build
    given = [n for n in CASES for _ in range(2)]
    given += [_misspelt(sci, i) for i in range(6) for sci, _, _ in SPECIES]                   # 204 typos
    given += [f"Nonexistus imaginarius{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(194)]  # 194 garbage
    out = tmp_path / "out"
    _catalog(str(out), [{"key": f"xeno-canto:{i}", "source": "xeno-canto", "scientific_name": n}
                        for i, n in enumerate(given)])
    conf = cfg.model_dump(mode="json") | {"out": str(out)}
    conf["taxonomy"]["backbone"] = big_backbone
    run_one(parse_config(conf), "enrich")

    parsed = [parse_name(n) for n in given]
    index, matches = resolve_all(big_backbone, [p for p in parsed if p.kind == "species"])
    res = {r["key"]: r for r in io.read_rows(str(out / "catalog" / "resolutions"))}
    assert len(res) == len(given)
    for i, p in enumerate(parsed):
        r = res[f"xeno-canto:{i}"]
        m = matches[p.key] if p.kind == "species" else index.resolve(p)
        assert (r["method"], r["taxon_id"], r["score"], r["matched_name"], r["reason"]) == \
            (m.method, m.taxon_id, m.score, m.matched_name, m.reason), given[i]
    methods = {r["method"] for r in res.values()}
    assert {"exact", "synonym", "fuzzy", "unresolved"} <= methods
    assert sum(r["method"] == "fuzzy" for r in res.values()) >= 150
    taxa = io.read_rows(str(out / "catalog" / "taxa"))
    assert {t["taxon_id"] for t in taxa} == {r["taxon_id"] for r in res.values() if r["taxon_id"]}
    for t in taxa:
        want = index.lineage(t["taxon_id"])
        assert {k: t[k] for k in want} == want, t["accepted_name"]
        if t["accepted_name"] in {sci for sci, _, _ in SPECIES}:    # the sample tree has every higher taxon
            assert t["family_id"] and t["genus_id"] and t["class_id"], t["accepted_name"]
    stats = io.read_json(str(out / "work" / "stats-enrich.json"))
    from collections import Counter
    unresolved = Counter(f"{r['given_name'] or '(empty)'} [{r['reason']}]" for r in res.values()
                         if r["method"] == "unresolved")
    assert stats["unresolved_names"] == len(unresolved) > TOP_NAMES
    assert len(stats["unresolved"]) == TOP_NAMES and set(stats["unresolved"]) <= set(unresolved)
    twice = {n for n, c in unresolved.items() if c == 2}
    assert len(twice) == 5 and all(stats["unresolved"][n] == 2 for n in twice)     # the most frequent kept
    assert stats["by_method"]["unresolved"] == sum(r["method"] == "unresolved" for r in res.values())


def test_enrich_side_inputs_do_not_come_from_names_or_records(tiny_build):
    """Every side input in the enrich graph is made by one of these transforms, each bounded by
    species, trait tables, or constant: the Bloom filters (fixed size), the trait tables, eBird's names,
    the taxa list (one row per species), the trait tables' names' matches, the counters of fixed keys, the
    100 most frequent names.  A side input built from the names or the records would be a new producer."""
    import apache_beam as beam
    from bestiary.pipelines.context import RunContext
    from bestiary.pipelines.enrich import Enrich
    from bestiary.schemas.config import parse_config
    cfg, _ = tiny_build
    conf = cfg.model_dump(mode="json")
    conf["taxonomy"]["inat_taxa"] = str(fixture_path("inaturalist", "open_data", "taxa.csv"))
    p = beam.Pipeline()
    _ = p | "enrich" >> Enrich(RunContext(parse_config(conf)))
    proto = p.to_runner_api()
    producer = {pc: t.unique_name for t in proto.components.transforms.values() for pc in t.outputs.values()
                if not t.subtransforms}
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    bounded = {"filter 1", "filter 2", "id filter",     # Bloom filters, 2 MiB whatever goes in
               "trait tables", "ebird names",            # the tables themselves, by species
               "taxa list", "join traits",               # one row per accepted species
               "trait names",                            # the trait tables' names' matches
               "as dict", "distinct as dict",            # counters of fixed keys (methods, reasons, kinds)
               "top as dict",                            # the 100 most frequent names of each kind
               "total"}                                  # WriteTable's (rows, bytes): its part count
    made_by = set()
    for t in proto.components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            made_by |= {producer[t.inputs[tag]] for tag in payload.side_inputs}
    assert len(made_by) >= 11 and any("id filter" in n for n in made_by)
    assert [n for n in made_by if not bounded & set(n.split("/"))] == []


def test_archive_codes_and_ids_resolve_in_the_build(tiny_build, tmp_path):
    """Macaulay's eBird codes and iNaturalist's taxon ids (the catalog's `source_taxon_id`) become names
    through those archives' tables in the Beam stage; iNaturalist ids are joined with the taxa table by key.
    Rows without a name of their own resolve only that way; an id the table lacks falls back to the name."""
    from bestiary.pipelines.build import run_one
    from bestiary.schemas.config import parse_config
    cfg, _ = tiny_build
    taxa = tmp_path / "taxa.csv"   # iNaturalist open data's layout
    taxa.write_text("taxon_id\tancestry\trank_level\trank\tname\tactive\n"
                    "12727\t48460/1/2/355675/3\t10\tspecies\tTurdus merula\ttrue\n"
                    "9083\t48460/1/2/355675/3\t10\tspecies\tSpinus tristis\ttrue\n"
                    "3\t48460/1/2/355675\t50\tclass\tAves\ttrue\n")
    rows = [{"key": "macaulay:1", "source": "macaulay", "source_taxon_id": "gretit1"},
            {"key": "macaulay:2", "source": "macaulay", "source_taxon_id": "blutit", "scientific_name": "Wrong name"},
            {"key": "inaturalist:1", "source": "inaturalist", "source_taxon_id": "12727"},
            {"key": "inaturalist:2", "source": "inaturalist", "source_taxon_id": "9083"},
            {"key": "inaturalist:3", "source": "inaturalist", "source_taxon_id": "3"},          # a class: no species
            {"key": "inaturalist:4", "source": "inaturalist", "source_taxon_id": "777",
             "scientific_name": "Parus major"},                                                   # not in the table
            {"key": "inaturalist:5", "source": "inaturalist", "source_taxon_id": "778"}]
    out = tmp_path / "out"
    _catalog(str(out), rows)
    conf = cfg.model_dump(mode="json") | {"out": str(out)}
    conf["taxonomy"]["inat_taxa"] = str(taxa)
    run_one(parse_config(conf), "enrich")
    res = {r["key"]: r for r in io.read_rows(str(out / "catalog" / "resolutions"))}
    names = {t["taxon_id"]: t["accepted_name"] for t in io.read_rows(str(out / "catalog" / "taxa"))}
    got = {k: (r["via"], names.get(r["taxon_id"]) or r["reason"]) for k, r in res.items()}
    assert got == {"macaulay:1": ("ebird_code", "Parus major"), "macaulay:2": ("ebird_code", "Cyanistes caeruleus"),
                   "inaturalist:1": ("inat_id", "Turdus merula"), "inaturalist:2": ("inat_id", "Spinus tristis"),
                   "inaturalist:3": ("inat_id", "genus"), "inaturalist:4": ("name", "Parus major"),
                   "inaturalist:5": ("name", "empty")}
