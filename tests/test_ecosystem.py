"""A built dataset in the tools its users already have: Hugging Face `datasets` and the Hub card, Croissant,
attribution, licences that hold, progress on the command line, and `classify`'s one-line errors."""
import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from bestiary.connectors.licenses import license_url, no_derivatives, pair_license
from bestiary.pipelines.cli import main


def samples_of(out: str) -> list[dict]:
    metas = []
    for tar_path in sorted(glob.glob(os.path.join(out, "shards", "*.tar"))):
        with tarfile.open(tar_path) as tar:
            metas += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    return metas


def test_pair_licences_and_deeds():
    assert no_derivatives("CC-BY-NC-ND-4.0") and no_derivatives("CC-BY-ND-4.0") and not no_derivatives("CC-BY-NC-4.0")
    assert pair_license("CC-BY-4.0", "CC-BY-NC-4.0") == "CC-BY-NC-4.0"
    assert pair_license("CC-BY-SA-4.0", "CC-BY-NC-3.0") == "CC-BY-NC-SA-4.0"
    assert pair_license("CC0-1.0", "CC-BY-4.0") == "CC-BY-4.0" and pair_license("CC-BY-4.0", None) == "CC-BY-4.0"
    assert pair_license("unknown", "CC-BY-4.0") == "unknown"
    assert license_url("CC-BY-NC-SA-3.0") == "https://creativecommons.org/licenses/by-nc-sa/3.0/"
    assert license_url("CC0-1.0").endswith("/publicdomain/zero/1.0/") and license_url("unknown") is None


def test_no_derivatives_rejected_by_default_and_kept_with_the_opt_in(tiny_build):
    from bestiary.pipelines.select import gate
    cfg, stats = tiny_build
    row = {"key": "xeno-canto:1", "license": "CC-BY-NC-ND-4.0", "media_url": "http://x/1.mp3"}
    taxon = {"taxon_id": "1"}
    assert gate(row, None, taxon, None, cfg.licenses.allow)["reason"] == "license_no_derivatives"
    assert gate(row, None, taxon, None, cfg.licenses.allow, allow_nd=True) is None
    # the build: ND recordings stay in the catalog, rejected with the reason, and in no sample
    import pyarrow.parquet as pq
    nd = {r["key"] for r in pq.read_table(os.path.join(cfg.out, "catalog", "recordings")).to_pylist()
          if no_derivatives(r["license"])}
    rejects = pq.read_table(os.path.join(cfg.out, "rejects")).to_pylist()
    rejected_nd = {r["key"] for r in rejects if r["reason"] == "license_no_derivatives"}
    assert nd <= {r["key"] for r in rejects}   # GBIF mirrors of them go first, as mirrors
    assert rejected_nd and rejected_nd <= nd
    assert not {m["record_key"] for m in samples_of(cfg.out)} & nd
    assert stats["rejects_by_reason"]["select/license_no_derivatives"] == len(rejected_nd)


def test_every_sample_carries_the_pair_licence_and_both_urls(tiny_build):
    cfg, _ = tiny_build
    metas = samples_of(cfg.out)
    assert metas
    for m in metas:
        assert m["license"] == pair_license(m["audio"]["license"], m["image"]["license"])
        assert m["audio"]["license_url"] and m["image"]["license_url"] and m["license_url"], m["key"]
        assert not no_derivatives(m["audio"]["license"]) and not no_derivatives(m["image"]["license"])


def test_load_dataset_on_the_output_folder(tiny_build, tmp_path):
    datasets = pytest.importorskip("datasets")
    cfg, _ = tiny_build
    manifest = json.load(open(os.path.join(cfg.out, "shards", "manifest.json")))
    ds = datasets.load_dataset(cfg.out)   # nothing but the path: the card's configs and features do the rest
    assert set(ds) == set(manifest["splits"])
    for split, info in manifest["splits"].items():
        assert ds[split].num_rows == info["samples"]
    x = ds["train"][0]
    assert isinstance(x["flac"], bytes) and x["flac"][:4] == b"fLaC"
    assert x["json"]["taxon"]["accepted_name"] and x["txt"]


def test_the_card_is_a_hub_card_with_attribution_and_citation(tiny_build):
    from huggingface_hub import DatasetCard
    import pyarrow.parquet as pq
    cfg, _ = tiny_build
    card = DatasetCard.load(os.path.join(cfg.out, "README.md"))
    metas = samples_of(cfg.out)
    published = {m["license"].lower() for m in metas}
    assert set(card.data.license) == published
    assert card.data.size_categories == ["n<1K"] and "audio-classification" in card.data.task_categories
    assert {c["split"] for c in card.data.configs[0]["data_files"]} == {m["split"] for m in metas}
    assert "```bibtex" in card.text and "load_dataset" in card.text and "attribution/" in card.text
    credits = pq.read_table(os.path.join(cfg.out, "attribution")).to_pylist()
    recordists = {(c["person"], c["work"]) for c in credits if c["role"] == "recordist"}
    for m in metas:   # every recordist of every published recording, with the work
        assert ((m["recordist"] or m["attribution"]).strip(), m["record_key"]) in recordists
    photographers = {c["work"] for c in credits if c["role"] == "photographer"}
    assert {m["image"]["key"] for m in metas} <= photographers
    assert all(c["license"] and c["license_url"] for c in credits)


def test_croissant_validates_and_reads_records(tiny_build):
    mlc = pytest.importorskip("mlcroissant")
    import pyarrow.parquet as pq
    cfg, _ = tiny_build
    path = os.path.join(cfg.out, "croissant.json")
    ds = mlc.Dataset(jsonld=path)   # raises on a document that does not validate
    names = {rs.name for rs in ds.metadata.record_sets}
    assert {"recordings", "images", "taxa", "resolutions", "attribution"} <= names
    rows = list(ds.records("recordings"))
    table = pq.read_table(os.path.join(cfg.out, "catalog", "recordings"))
    assert len(rows) == table.num_rows
    assert {r["recordings/key"].decode() for r in rows} == set(table.column("key").to_pylist())
    doc = json.load(open(path))
    assert doc["@type"] == "sc:Dataset" and doc["license"]


def test_catalogs_are_typed_and_join_in_duckdb(tiny_build):
    duckdb = pytest.importorskip("duckdb")
    cfg, _ = tiny_build
    con = duckdb.connect()
    for t in ("recordings", "images", "resolutions", "taxa", "captions", "traits"):
        con.execute(f"create view {t} as select * from read_parquet('{cfg.out}/catalog/{t}/*.parquet')")
    types = dict(con.execute("select column_name, column_type from (describe recordings)").fetchall())
    assert types["recorded_on"] == "DATE" and types["updated_at"].startswith("TIMESTAMP")
    assert "taxon_id" not in types and types["source_taxon_id"] == "VARCHAR"
    formats = {f for (f,) in con.execute("select distinct media_format from recordings union "
                                         "select distinct media_format from images").fetchall()}
    from bestiary.schemas.records import MEDIA_FORMATS
    assert formats <= set(MEDIA_FORMATS.values()) | {"unknown"} and "image" not in formats
    assert con.execute("select count(*) from recordings where recorded_on is not null "
                       "and recorded_on_precision not in ('day', 'month', 'year')").fetchone()[0] == 0
    # taxon_id is the accepted id everywhere: every resolved recording joins its taxon
    resolved = con.execute("select count(*) from recordings join resolutions using (key) "
                           "where resolutions.taxon_id is not null").fetchone()[0]
    joined = con.execute("select count(*) from recordings join resolutions using (key) "
                         "join taxa using (taxon_id)").fetchone()[0]
    assert resolved > 0 and joined == resolved
    # nested data is nested: captions a list of structs, trait sources a struct
    kind, text = con.execute("select captions[1].kind, captions[1].text from captions limit 1").fetchone()
    assert kind and text
    assert con.execute("select count(*) from traits where sources.diet is not null").fetchone()[0] > 0


def test_hf_features_import_without_beam():
    code = ("import sys; from bestiary.schemas.sample import hf_features, hf_yaml_features; "
            "assert 'apache_beam' not in sys.modules, 'beam imported'; f = hf_features(); "
            "assert f._to_yaml_list() == hf_yaml_features(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_build_shows_progress_and_keeps_decoder_chatter_out(archive_server, tmp_path, capfd):
    from tests.conftest import tiny_config
    _, url = archive_server
    cfg = tiny_config(url, str(tmp_path / "out"))
    cfg["sources"] = [s for s in cfg["sources"] if s["name"] in ("xeno-canto", "macaulay")]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["build", str(path)]) == 0
    err = capfd.readouterr().err
    lines = [ln.split("\r")[-1] for ln in err.splitlines()]
    for stage in ("crawl", "enrich", "caption", "shard", "finalize"):
        assert any(ln.startswith(stage) and " s " in ln for ln in lines), (stage, err[-2000:])
    assert any("catalog rows" in ln and "/s)" in ln for ln in lines)
    assert "libmpg123" not in err and "part2_3_length" not in err
    assert main(["-q", "build", str(path), "--force"]) == 0
    assert capfd.readouterr().err.strip() == ""


def test_classify_refuses_in_one_line_and_warns_of_unknown_names(search_model, tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    folder = tmp_path / "a"
    folder.mkdir()
    sf.write(folder / "x.wav", 0.1 * np.sin(np.arange(48000 * 3) / 7).astype(np.float32), 48000)
    for argv, message in [
        (["classify", "--checkpoint", search_model, "--input", str(folder)], "needs the species"),
        (["classify", "--checkpoint", search_model, "--input", str(tmp_path / "nosuch"), "--species", "A b,C d"],
         "no such file or folder"),
        (["classify", "--checkpoint", search_model, "--input", str(folder), "--species-file", "nope.txt"],
         "no such species file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["classify", "--checkpoint", search_model, "--input", str(folder),
                 "--species", "Strix aluco,Madeupus fictus"]) == 0
    out = capsys.readouterr()
    assert "'Madeupus fictus'" in out.err and "species the model was trained on" in out.err
    assert "'Strix aluco'" not in out.err and "x.wav" in out.out
