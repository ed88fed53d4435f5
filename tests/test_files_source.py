"""A lab's own recordings through bestiary: the `files` source on a CSV of real recordings without images
(see tests/realdata.py for where they come from and their licences), built into audio-text shards with a
reject and its reason for every bad row, then trained on and evaluated."""
from __future__ import annotations

import csv
import glob
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from bestiary.connectors.files import BadRow, normalize_row, read_rows, resolve
from tests.conftest import fixture_path
from tests.realdata import wheel_files, write_backbone

SPECIES = ["Parus major", "Lonchura striata", "Taeniopygia guttata", "Hydrobates pelagicus", "Peromyscus maniculatus"]


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bestiary.pipelines.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_rows_resolve_beside_their_table_and_bad_rows_say_why(tmp_path):
    assert resolve("a/b.wav", "/data/lab") == "/data/lab/a/b.wav"
    assert resolve("/abs/b.wav", "/data/lab") == "/abs/b.wav"
    assert resolve("https://x.org/b.wav", "/data/lab") == "https://x.org/b.wav"
    assert resolve("b.wav", "s3://bucket/lab") == "s3://bucket/lab/b.wav"
    rows = normalize_row({"path": "rec/1.wav", "scientific_name": "Parus major", "license": "cc-by 4.0",
                          "lat": "51.77", "lon": "-1.32", "recorded_on": "2021-04-15", "image": "pics/1.jpg",
                          "observation_id": "B32-0415"}, "/data/lab", table="rows.csv")
    audio, image = rows
    assert audio["media_type"] == "audio" and audio["media_url"] == "/data/lab/rec/1.wav"
    assert audio["media_format"] == "wav" and audio["license"] == "CC-BY-4.0" and audio["lat"] == 51.77
    assert image["media_type"] == "image" and image["media_url"] == "/data/lab/pics/1.jpg"
    assert audio["observation_id"] == image["observation_id"] == "files:B32-0415"   # they pair as one observation
    # keys follow the table's own paths: the same row in a moved folder keeps its key
    assert normalize_row({"path": "rec/1.wav", "scientific_name": "Parus major"}, "/elsewhere",
                         table="rows.csv")[0]["key"] == audio["key"]
    assert normalize_row({"path": "rec/1.wav", "scientific_name": "Parus major"}, "/x",
                         license_override="CC0-1.0")[0]["license"] == "CC0-1.0"
    for row, reason in (({"path": "", "scientific_name": "Parus major"}, "missing_path"),
                        ({"path": "a.wav", "scientific_name": " "}, "missing_name")):
        with pytest.raises(BadRow) as err:
            normalize_row(row, "/x")
        assert err.value.reason == reason
    with pytest.raises(ValueError, match="no scientific_name column"):
        read_rows(b"path,name\na.wav,Parus major\n", "rows.csv")
    import pyarrow as pa
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"path": ["a.wav"], "scientific_name": ["Parus major"], "lat": [1.5]}), buf)
    assert read_rows(buf.getvalue().to_pybytes(), "rows.parquet") == [
        (1, {"path": "a.wav", "scientific_name": "Parus major", "lat": "1.5"})]


@pytest.fixture(scope="module")
def lab_folder(tmp_path_factory) -> Path:
    """A lab's folder: real recordings, a label sheet with good and bad rows, a backbone of their lineage."""
    root = tmp_path_factory.mktemp("lab")
    cache = tmp_path_factory.getbasetemp() / "wheels"
    kanto = wheel_files("pykanto", "0.1.8", cache)
    vocal = wheel_files("vocalpy", "0.10.3", cache, (".wav",))
    (root / "audio").mkdir()
    rows = []
    for name, data in sorted(kanto.items()):
        if "/segmented/great_tit/WAV/" in name:
            stem = name.rsplit("/", 1)[1][:-4]
            meta = json.loads(kanto[name.replace("/WAV/", "/JSON/")[:-4] + ".JSON"])
            (root / "audio" / f"{stem}.wav").write_bytes(data)
            rows.append({"path": f"audio/{stem}.wav", "scientific_name": "Parus major", "common_name": "Great Tit",
                         "license": "MIT", "recordist": meta["recordist"], "recorded_on": meta["date"],
                         "lat": "51.77", "lon": "-1.32"})
    for name in ("348.wav", "363.wav"):
        (root / "audio" / f"bf-{name}").write_bytes(kanto[f"pykanto/data/raw/BENGALESE_FINCH/bird_3/{name}"])
        rows.append({"path": f"audio/bf-{name}", "scientific_name": "Lonchura striata", "license": "MIT"})
    for name, species in (("bl26lb16.wav", "Lonchura striata"), ("WhiLbl0010_110411-DC-01.wav", "Taeniopygia guttata"),
                          ("bells.wav", "Taeniopygia guttata"), ("flashcam.wav", "Taeniopygia guttata"),
                          ("samba.wav", "Taeniopygia guttata"), ("simple.wav", "Taeniopygia guttata"),
                          ("deermouse-go.wav", "Peromyscus maniculatus")):
        (root / "audio" / name).write_bytes(vocal[f"vocalpy/examples/{name}"])
        rows.append({"path": f"audio/{name}", "scientific_name": species, "license": "BSD-3-Clause"})
    petrel = fixture_path("audio", "pykanto_XC663885_european_storm_petrel.wav")
    rows.append({"path": str(petrel), "scientific_name": "Hydrobates pelagicus", "license": "CC BY-NC-ND 2.5"})
    (root / "audio" / "notes.wav").write_bytes(b"field notes, not a recording\n" * 40)
    bad = [{"path": "audio/never-copied.wav", "scientific_name": "Parus major", "license": "MIT"},   # missing file
           {"path": "audio/notes.wav", "scientific_name": "Parus major", "license": "MIT"},          # not audio
           {"path": "audio/348-copy.wav", "scientific_name": "Passer fictivus", "license": "MIT"},   # unknown name
           {"path": "audio/unnamed.wav", "scientific_name": "", "license": "MIT"},                   # no name
           {"path": "", "scientific_name": "Parus major", "license": "MIT"}]                         # no path
    (root / "audio" / "348-copy.wav").write_bytes(kanto["pykanto/data/raw/BENGALESE_FINCH/bird_3/363.wav"][:-2] + b"\0\0")
    with open(root / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "scientific_name", "common_name", "license", "recordist", "recorded_on",
                                "lat", "lon"])
        w.writeheader()
        w.writerows(rows + bad)
    write_backbone(root / "Taxon.tsv", SPECIES)
    return root


def lab_config(root: Path, out: Path) -> Path:
    cfg = {"out": str(out), "sources": [{"name": "files", "queries": ["rows.csv"]}],   # beside the config
           "taxonomy": {"backbone": str(root / "Taxon.tsv")},
           "licenses": {"allow": ["CC0-1.0", "CC-BY-*", "MIT", "BSD-3-Clause"]},
           "media": {"clip_seconds": 4, "max_clips_per_recording": 2, "min_seconds": 0.1, "image_size": 64},
           "splits": {"unseen_fraction": 0.0, "val_fraction": 0.1, "test_fraction": 0.3, "salt": "lab"},
           "shards": {"samples_per_shard": 16}}
    path = root / "lab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_folder_of_real_recordings_builds_trains_and_evaluates(lab_folder, tmp_path):
    out = tmp_path / "out"
    res = cli("build", str(lab_config(lab_folder, out)), "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    # audio-text shards: no jpg anywhere, the json says so, the manifest and the card count them
    members, metas = set(), []
    for tar_path in glob.glob(str(out / "shards" / "*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                members.add(m.name.rsplit(".", 1)[1])
                if m.name.endswith(".json"):
                    metas.append(json.loads(tar.extractfile(m).read()))
    assert members == {"flac", "json", "txt"}
    assert metas and all(m["image"] is None and m["source"] == "files" for m in metas)
    assert {m["taxon"]["accepted_name"] for m in metas} == {"Parus major", "Lonchura striata", "Taeniopygia guttata"}
    assert all(s["samples_with_image"] == 0 for s in manifest["shards"]) and manifest["optional_members"] == ["jpg"]
    assert stats["shard"]["audio_text_samples"] == stats["shard"]["samples"] == len(metas)
    assert f"{len(metas)} audio-text samples" in (out / "README.md").read_text()
    assert {m["license"] for m in metas} == {"MIT", "BSD-3-Clause"}
    assert all(m["taxon"]["lineage"]["family"] in ("Paridae", "Estrildidae") for m in metas)
    # every bad row is a reject with its reason, and the account balances
    rejects = pq.read_table(str(out / "rejects")).to_pylist()
    by_reason = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append(r)
    assert "never-copied.wav: no such file" in by_reason["missing_file"][0]["detail"]
    assert len(by_reason["missing_name"]) == 1 and len(by_reason["missing_path"]) == 1
    assert by_reason["missing_name"][0]["key"] == "files:rows.csv:35"   # where in the table: line 35
    undecodable = [r for r in rejects if r["stage"] == "probe" and "notes" in r["key"]]
    assert len(undecodable) == 1 and undecodable[0]["reason"] == "undecodable_audio", rejects
    assert any(r["stage"] == "enrich" and "Passer fictivus" in r["detail"] for r in rejects)
    assert len(by_reason["ultrasonic_content"]) == 1 and "deermouse" in by_reason["ultrasonic_content"][0]["key"]
    assert len(by_reason["license_no_derivatives"]) == 1
    acc = stats["accounting"]
    assert acc["balanced"] and acc["records_crawled"] == 35 and acc["recordings_in_samples"] == 28
    assert stats["images"]["crawled"] == 0
    verify = cli("verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # training takes samples without images (the image terms skip them) and eval reports no image task
    run = tmp_path / "run"
    res = cli("train", "--shards", str(out / "shards"), "--out", str(run), "--steps", "6", "--batch-size", "8",
              "--workers", "0", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    import csv as _csv
    with open(run / "log.csv") as fh:
        log = list(_csv.DictReader(fh))
    assert log and all(r["audio_image"] in ("", "nan") and r["image_text"] in ("", "nan") for r in log)
    assert all(float(r["audio_text"]) > 0 for r in log)
    report_path = tmp_path / "report.json"
    res = cli("eval", "--checkpoint", str(run / "checkpoint.pt"), "--shards", str(out / "shards"), "--out",
              str(report_path), "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(report_path.read_text())
    seen = report["zero_shot"]["seen"]["taxonomy_common"]
    assert seen["classes"] >= 2 and seen["queries"] == report["samples"]["seen"]["samples"] > 0
    assert report["samples"]["seen"]["with_image"] == 0
    tasks = report["retrieval"]["seen"]
    assert "audio_to_text_species" in tasks and not any("image" in t for t in tasks)
    # --seeds K: K runs, each evaluated, every figure's mean and sd over the seeds
    res = cli("train", "--shards", str(out / "shards"), "--out", str(tmp_path / "seeds"), "--steps", "3",
              "--batch-size", "8", "--workers", "0", "--seeds", "2", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1]
    for name, row in summary["figures"].items():
        a, b = row["top1_by_seed"]
        assert row["seeds"] == 2 and row["top1_mean"] == pytest.approx((a + b) / 2, abs=1e-4)
        assert row["top1_sd"] == pytest.approx(abs(a - b) / 2 ** 0.5, abs=1e-4)
    reports = [json.loads((tmp_path / "seeds" / f"seed-{i}" / "eval.json").read_text()) for i in (0, 1)]
    first = "zero-shot seen (taxonomy_common, " + str(reports[0]["zero_shot"]["seen"]["taxonomy_common"]["classes"])
    row = next(r for n, r in summary["figures"].items() if n.startswith(first))
    assert row["top1_by_seed"] == [round(r["zero_shot"]["seen"]["taxonomy_common"]["top1"], 4) for r in reports]
    assert "± " in (tmp_path / "seeds" / "seeds.md").read_text()
