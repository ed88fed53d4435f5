"""Benchmark worlds: species drawn with their real tree from the real eBird/Clements rows in ../shared/fixtures,
the files a build resolves them with, and field conditions that make the media harder."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bestiary.sample_archive.generate import build_archive, render_audio, render_image
from bestiary.sample_archive.world import PRESETS, Difficulty, backbone_lines, draw_world, ebird_lines, read_table
from tests.conftest import fixture_path


@pytest.fixture(scope="module")
def table() -> list[dict]:
    return read_table(fixture_path("taxonomy", "ebird_2024_taxonomy.csv").read_bytes())


def test_the_drawn_tree_is_the_real_tables_tree(table):
    world = draw_world(table, 300, seed=0)
    rows = {r["scientific_name"]: r for r in table}
    families = {s.family for s in world.species}
    genera = {s.genus for s in world.species}
    assert len(world.species) == 300 and len({s.name for s in world.species}) == 300
    assert len(families) == 30 and 80 <= len(genera) <= 120, (len(families), len(genera))
    for sp in world.species:   # every rank, name and code as the table has it
        r = rows[sp.name]
        assert (sp.genus, sp.family, sp.order, sp.common, sp.code) == (r["genus"], r["family"], r["order"],
                                                                      r["common_name"], r["code"])
        assert sp.klass == "Aves"
    # the backbone a build resolves with holds that tree, parent links included
    lines = [dict(zip(backbone_lines(world)[0].split("\t"), ln.split("\t"))) for ln in backbone_lines(world)[1:]]
    by_id = {ln["taxonID"]: ln for ln in lines}
    for ln in (ln for ln in lines if ln["taxonRank"] == "species"):
        r = rows[ln["canonicalName"]]
        assert (ln["genus"], ln["family"], ln["order"], ln["class"]) == (r["genus"], r["family"], r["order"], "Aves")
        chain, node = [], ln
        while node["parentNameUsageID"]:
            node = by_id[node["parentNameUsageID"]]
            chain.append(node["canonicalName"])
        assert chain == [r["genus"], r["family"], r["order"], "Aves", "Chordata", "Animalia"]
    ebird = list(csv.DictReader(io.StringIO(ebird_lines(world))))
    assert {(e["SPECIES_CODE"], e["SCI_NAME"]) for e in ebird} == {(s.code, s.name) for s in world.species if s.code}
    # the same seed draws the same world; another seed another
    assert [s.name for s in draw_world(table, 300, seed=0).species] == [s.name for s in world.species]
    assert [s.name for s in draw_world(table, 300, seed=1).species] != [s.name for s in world.species]


def test_the_raw_ebird_file_reads_as_the_same_tree(table):
    raw = read_table(fixture_path("taxonomy", "ebird_taxonomy_v2025_7families.csv").read_bytes())
    processed = {r["scientific_name"]: r for r in table}
    both = [r for r in raw if r["scientific_name"] in processed]
    assert len(both) > 1000
    agree = sum((r["family"], r["order"], r["genus"]) == tuple(processed[r["scientific_name"]][k]
                                                               for k in ("family", "order", "genus")) for r in both)
    assert agree / len(both) > 0.98   # 2024 vs 2025 taxonomy: a few species moved


def test_field_conditions_make_harder_media_and_clean_stays_as_it_was(table):
    world = draw_world(table, 40, seed=3)
    clean = build_archive(7, world=world)
    field = build_archive(7, world=world, difficulty=PRESETS["field"])
    rec = next(r for r in clean.xc if r.also)
    a, _ = render_audio(rec)
    assert render_audio(rec, Difficulty())[0] == a   # no difficulty: the clean sound, byte for byte
    b, _ = render_audio(rec, PRESETS["hard"], clean.by_name)
    x, rate = sf.read(io.BytesIO(a), dtype="float32", always_2d=True)
    y, _ = sf.read(io.BytesIO(b), dtype="float32", always_2d=True)
    assert x.shape == y.shape and not np.allclose(x, y)
    # the noise floor rises: the quietest 10 % of 50-ms frames carry more energy
    def floor(z):
        frames = z[: len(z) // 2400 * 2400, 0].reshape(-1, 2400)
        return np.percentile((frames ** 2).mean(axis=1), 10)
    assert floor(y) > 10 * floor(x)
    photo = field.ml_photos[0]
    assert render_image(photo) == render_image(photo, difficulty=Difficulty())
    weak = np.asarray(Image.open(io.BytesIO(render_image(photo, difficulty=PRESETS["hard"]))), dtype=np.float32)
    sharp = np.asarray(Image.open(io.BytesIO(render_image(photo))), dtype=np.float32)
    assert weak.shape == sharp.shape and np.abs(weak - sharp).mean() > 1.0
