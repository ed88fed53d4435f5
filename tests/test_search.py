"""Searching an archive: windows, the index, text and example queries through the CLI, filters, incremental
adds, and a soundscape with sample-archive calls of known species at known offsets."""
import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from bestiary.pipelines.cli import main
from bestiary.search.index import Index, date_key, parse_bbox, SearchError
from bestiary.search.windows import stream_windows, window_starts

RATE = 48000


def test_window_starts_cover_every_sample_once_padded_at_the_end():
    assert window_starts(100, 10, 5) == list(range(0, 91, 5))
    assert window_starts(103, 10, 5) == list(range(0, 91, 5)) + [95]   # the last one reaches the end
    assert window_starts(7, 10, 5) == [0]                               # shorter than a window: one, padded
    with pytest.raises(ValueError):
        window_starts(10, 0, 5)


def test_streamed_windows_match_the_pure_rule_and_the_samples(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(int(32.3 * 16000)).astype(np.float32) * 0.1   # 16 kHz: resampled as a stream
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([x, x], 1), 16000)                          # stereo: mixed to mono
    wins = list(stream_windows(str(path), RATE, 10.0, 5.0))
    n = int(round(32.3 * RATE))
    assert [round(w.offset_s * RATE) for w in wins] == window_starts(n, 10 * RATE, 5 * RATE)
    assert all(len(w.samples) == 10 * RATE for w in wins)
    assert wins[-1].seconds == pytest.approx(32.3 - 25.0, abs=1e-3)
    import soxr
    whole = soxr.resample(x, 16000, RATE, quality="HQ")
    mid = wins[2].samples  # away from the stream's start and end, the streamed resampler equals the whole one
    assert np.allclose(mid[1000:-1000], whole[10 * RATE + 1000:20 * RATE - 1000], atol=2e-3)


def test_dates_and_boxes():
    assert date_key("2009") == "2009-01-01" and date_key("2009-5") == "2009-05-01"
    assert date_key("2014-10-16T08:00") == "2014-10-16" and date_key("spring") is None
    assert parse_bbox("-10,40,5,55") == (-10.0, 40.0, 5.0, 55.0)
    with pytest.raises(SearchError):
        parse_bbox("1,2,3")
    with pytest.raises(SearchError):
        parse_bbox("0,60,10,50")   # south above north


# ---------------------------------------------------------------- a soundscape of known calls

def shard_clips(shards: str) -> list[dict]:
    """Every sample of the build: its species and its 10-s FLAC clip as samples."""
    out = []
    for name in sorted(os.listdir(shards)):
        if not name.endswith(".tar"):
            continue
        with tarfile.open(os.path.join(shards, name)) as tar:
            items = {}
            for m in tar:
                key, _, ext = m.name.partition(".")
                items.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, parts in sorted(items.items()):
            meta = json.loads(parts["json"])
            x, rate = sf.read(io.BytesIO(parts["flac"]), dtype="float32")
            out.append({"key": key, "split": meta["split"], "species": meta["taxon"]["accepted_name"],
                        "common": meta["taxon"]["common_name"], "audio": x, "rate": rate})
    return out


def make_soundscape(clips: list[dict], seconds: float, seed: int) -> tuple[np.ndarray, list[tuple]]:
    """Brown-ish background noise with the clips mixed in at random non-overlapping offsets:
    (samples, [(start_s, end_s, species)])."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    noise -= np.convolve(noise, np.ones(4801) / 4801, mode="same").astype(np.float32)   # no drift
    noise *= 0.004 / (noise.std() + 1e-9)
    slots = rng.permutation(int(seconds // 15) - 1)[:len(clips)]
    calls = []
    for clip, slot in zip(clips, slots):
        start = int((slot * 15 + 2.5) * RATE)
        loud = np.flatnonzero(np.abs(clip["audio"]) > 0.05 * np.abs(clip["audio"]).max())
        noise[start:start + len(clip["audio"])] += clip["audio"][: n - start]
        calls.append(((start + loud[0]) / RATE, (start + loud[-1]) / RATE, clip["species"]))
    return noise, sorted(calls)


def overlaps(hit: dict, calls: list[tuple], species: str) -> bool:
    lo, hi = hit["offset_s"], hit["offset_s"] + hit["seconds"]
    return any(s == species and a < hi and b > lo for a, b, s in calls)


def test_soundscape_search_by_text_and_by_example(tiny_build, search_model, tmp_path, capsys):
    cfg, _ = tiny_build
    clips = shard_clips(os.path.join(cfg.out, "shards"))
    seen = {c["species"] for c in clips if c["split"] == "train"}
    # the held-out recordings (test split) of seen species are the calls; three per species at most
    calls_by = {}
    for c in clips:
        if c["split"] == "test" and c["species"] in seen:
            calls_by.setdefault(c["species"], []).append(c)
    chosen = [c for cs in calls_by.values() for c in cs[:3]]
    assert len(calls_by) >= 2 and len(chosen) >= 5
    wave, calls = make_soundscape(chosen, 240.0, seed=11)
    folder = tmp_path / "site"
    folder.mkdir()
    sf.write(folder / "deployment-01.wav", wave, RATE, subtype="PCM_16")
    (folder / "notes.txt").write_text("not audio")
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    idx = str(tmp_path / "idx")

    assert main(["index", "--checkpoint", search_model, "--input", str(folder), "--out", idx, "-q"]) == 0
    printed = capsys.readouterr()
    assert "1 files embedded" in printed.out and "broken.wav" in printed.err   # the bad file is named, not fatal
    index = Index.open(idx)
    n_windows = len(index)
    assert n_windows == len(window_starts(len(wave), 10 * RATE, 5 * RATE))

    report = []
    for species, cs in sorted(calls_by.items()):
        common = cs[0]["common"]
        assert main(["search", idx, f"{common} calling", "--top", "5", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        p_at_5 = np.mean([overlaps(h, calls, species) for h in hits])
        allw = index.windows.to_pylist()
        random_p = np.mean([overlaps(w, calls, species) for w in allw])   # what a random window scores
        report.append((species, p_at_5, random_p))
        assert p_at_5 > random_p + 0.2

        # by example: the first call's own clip finds the other calls of its species
        example = tmp_path / "example.wav"
        sf.write(example, cs[0]["audio"], RATE)
        others = [c for c in calls if c[2] == species][1:]
        assert main(["search", idx, "--audio", str(example), "--top", str(4 * len(others) + 4), "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        found = {i for i, (a, b, s) in enumerate(others)
                 if any(a < h["offset_s"] + h["seconds"] and b > h["offset_s"] for h in hits)}
        assert len(found) >= max(1, len(others) - 1), (species, found, others)
    with capsys.disabled():
        for species, p, r in report:
            print(f"\n  soundscape: {species}: precision@5 {p:.2f} vs random windows {r:.2f}")

    # the table view names the file and the offset
    assert main(["search", idx, "owl", "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "deployment-01.wav" in table and table.splitlines()[0].split()[:2] == ["rank", "score"]

    # incremental: nothing new -> nothing embedded; a new file -> only its windows
    assert main(["index", "--checkpoint", search_model, "--input", str(folder), "--out", idx, "-q"]) == 0
    assert "0 files embedded, 1 unchanged, 0 new windows" in capsys.readouterr().out
    sf.write(folder / "deployment-02.wav", wave[: 30 * RATE], RATE, subtype="PCM_16")
    assert main(["index", "--checkpoint", search_model, "--input", str(folder), "--out", idx, "-q"]) == 0
    assert f"1 files embedded, 1 unchanged, 5 new windows; {n_windows + 5} windows in all" in capsys.readouterr().out


def test_index_of_shards_filters_by_species_date_and_place(tiny_build, search_model, tmp_path, capsys):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    idx = str(tmp_path / "idx")
    assert main(["index", "--checkpoint", search_model, "--shards", shards, "--out", idx, "-q"]) == 0
    index = Index.open(idx)
    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    live = sum(s["samples"] - s["deleted"] for s in manifest["shards"])
    assert index.windows.num_rows == live   # 10-s clips, 10-s windows: one window per sample
    rows = index.windows.to_pylist()
    assert all(r["species"] and r["license"] and r["captions"] for r in rows)

    some = rows[0]["species"]
    hits = index.search_text("an owl calling at night", top=50, species=[some.upper()])
    assert hits and all(h["species"] == some for h in hits)          # names match case-insensitively
    common = rows[0]["common_name"]
    assert {h["species"] for h in index.search_text("x", top=50, species=[common])} == {some}

    dates = sorted(date_key(r["recorded_on"]) for r in rows if date_key(r["recorded_on"]))
    cut = dates[len(dates) // 2]
    hits = index.search_text("owl", top=500, since=cut)
    assert hits and all(date_key(h["recorded_on"]) >= cut for h in hits)
    assert len(hits) == sum(d >= cut for d in dates)

    r0 = next(r for r in rows if r["lat"] is not None)
    box = (r0["lon"] - 0.01, r0["lat"] - 0.01, r0["lon"] + 0.01, r0["lat"] + 0.01)
    hits = index.search_text("owl", top=500, bbox=box)
    assert hits and all(box[0] <= h["lon"] <= box[2] and box[1] <= h["lat"] <= box[3] for h in hits)

    # a window's audio reads back from its shard member: the sample's own clip
    samples, rate = index.window_audio(rows[0])
    assert rate == RATE and len(samples) == int(rows[0]["seconds"] * RATE)
    # query by example with a shard clip finds itself first
    hit = index.search_audio((samples, rate), top=1)[0]
    assert hit["sample_key"] == rows[0]["sample_key"] and hit["score"] > 0.95

    # shards already indexed are skipped
    assert main(["index", "--checkpoint", search_model, "--shards", shards, "--out", idx, "-q"]) == 0
    assert "0 shards embedded, 0 new windows" in capsys.readouterr().out


def test_index_and_search_refuse_bad_requests_in_one_line(tiny_build, search_model, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    cases = [
        (["search", str(tmp_path / "nothing"), "owl"], "no index at"),
        (["index", "--checkpoint", search_model, "--out", idx], "one of them"),
        (["index", "--checkpoint", search_model, "--input", str(tmp_path / "nope"), "--out", idx], "no such file"),
        (["index", "--checkpoint", str(tmp_path / "no.pt"), "--input", str(tmp_path), "--out", idx], "no model at"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    os.makedirs(tmp_path / "audio")
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(RATE * 3, np.float32), RATE)
    assert main(["index", "--checkpoint", search_model, "--input", str(tmp_path / "audio"), "--out", idx, "-q"]) == 0
    capsys.readouterr()
    for argv, message in [(["search", idx], "wants a text"), (["search", idx, "--audio", "nope.wav"], "no such audio"),
                          (["search", idx, "owl", "--since", "spring"], "--since wants a date"),
                          (["search", idx, "owl", "--bbox", "1,2"], "--bbox wants"),
                          (["index", "--checkpoint", search_model, "--input", str(tmp_path / "audio"), "--out", idx,
                            "--window", "4"], "window_s 10.0, not 4.0")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_index_of_shards_drops_and_skips_tombstoned_samples(tiny_build, search_model, tmp_path, capsys):
    """Tombstones as an incremental run writes them (one sidecar per shard, named by its manifest entry):
    an index made before loses those samples' windows, and one made after never embeds them."""
    import shutil
    import webdataset as wds
    cfg, _ = tiny_build
    shards = str(tmp_path / "shards")
    shutil.copytree(os.path.join(cfg.out, "shards"), shards)
    idx, fresh = str(tmp_path / "idx"), str(tmp_path / "fresh")
    assert main(["index", "--checkpoint", search_model, "--shards", shards, "--out", idx, "-q"]) == 0
    before = Index.open(idx).windows.num_rows

    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    entry = next(s for s in manifest["shards"] if s["samples"] >= 3)
    keys = [s["__key__"] for s in wds.WebDataset(os.path.join(shards, entry["file"]), shardshuffle=False)][:2]
    os.makedirs(os.path.join(shards, "tombstones"))
    sidecar = f"tombstones/{entry['file'][:-4]}.v2.json"
    json.dump(sorted(keys), open(os.path.join(shards, sidecar), "w"))
    manifest["shards"] = [{**s, "deleted": 2, "tombstones": sidecar} if s["file"] == entry["file"] else s
                          for s in manifest["shards"]]
    json.dump(manifest, open(os.path.join(shards, "manifest.json"), "w"))

    for path in (idx, fresh):
        assert main(["index", "--checkpoint", search_model, "--shards", shards, "--out", path, "-q"]) == 0
        capsys.readouterr()
        index = Index.open(path)
        assert index.windows.num_rows == before - 2     # one window per 10-s sample
        assert not {r["sample_key"] for r in index.windows.to_pylist()} & set(keys)
        assert not {h["sample_key"] for h in index.search_text("owl", top=before)} & set(keys)
