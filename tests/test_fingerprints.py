"""Duplicate detection, the leak check, and bounded memory on a 3-hour recording."""
import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from bestiary.media.audio import fingerprint_audio, make_clips
from bestiary.media.fingerprints import dhash, hamming, near_duplicates
from bestiary.media.fingerprints import sketch
from bestiary.pipelines.dedupe import DedupeAudio, DedupeImages, FindLeaks, components, leak_check
from bestiary.pipelines.errors import LeakError
from tests.beam_helpers import run_transform
from tests.conftest import fixture_path


def encode(x, rate, fmt):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def finch():
    raw = fixture_path("audio", "pykanto_bengalese_finch_348.wav").read_bytes()
    x, rate = sf.read(io.BytesIO(raw), dtype="float32")
    return raw, x, rate


def test_exact_and_near_duplicates_found_unrelated_kept(finch):
    raw, x, rate = finch
    variants = {
        "wav": raw,
        "same_pcm_flac": encode(x, rate, "FLAC"),                      # lossless: identical PCM
        "mp3": encode(x, rate, "MP3"),                                  # lossy re-encode
        "resampled": encode(soxr.resample(x, rate, 44100), 44100, "WAV"),
        "trimmed": encode(x[int(2.05 * rate):], rate, "WAV"),          # cut at an odd offset
        "other": fixture_path("audio", "pykanto_XC663885_european_storm_petrel.wav").read_bytes(),
    }
    probes = {k: fingerprint_audio(v) for k, v in variants.items()}
    assert probes["wav"][1] == probes["same_pcm_flac"][1] != probes["mp3"][1]
    pairs = {(a, b) for a, b, _ in near_duplicates({k: p[2] for k, p in probes.items()})}
    near = {"wav", "same_pcm_flac", "mp3", "resampled", "trimmed"}
    assert not any("other" in p for p in pairs)
    assert all((a, b) in pairs for a in near for b in near if a < b)


def test_dedupe_keeps_the_original_source(finch):
    raw, x, rate = finch
    recs, probes = [], {}
    for key, source, body in [("macaulay:1", "macaulay", encode(x, rate, "MP3")), ("xeno-canto:9", "xeno-canto", raw),
                              ("inaturalist:sound-3", "inaturalist", raw)]:
        info, sha, codes = fingerprint_audio(body)
        recs.append({"key": key, "source": source, "taxon_id": "t"})
        probes[key] = {"pcm_sha256": sha, "codes": codes.tobytes()}
    slim = [{**r, "pcm_sha256": probes[r["key"]]["pcm_sha256"], "codes": probes[r["key"]]["codes"], "published": False}
            for r in recs]
    rejects = run_transform(DedupeAudio(), slim)   # a real Beam pipeline: keyed by PCM hash, then by sketch
    reasons = {r["key"]: (r["reason"], r["detail"]) for r in rejects}
    assert reasons == {"inaturalist:sound-3": ("duplicate_audio", "of xeno-canto:9"),
                       "macaulay:1": ("near_duplicate_audio", "of xeno-canto:9")}


def test_image_dhash_dedupe():
    rng = np.random.default_rng(0)
    base = Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)).resize((320, 240))
    jpg = io.BytesIO()
    base.save(jpg, format="JPEG", quality=60)
    small = io.BytesIO()
    base.resize((160, 120)).save(small, format="PNG")
    other = io.BytesIO()
    Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)).save(other, format="PNG")
    hashes = {k: dhash(v.getvalue()) for k, v in {"jpg": jpg, "small": small, "other": other}.items()}
    assert hamming(hashes["jpg"], hashes["small"]) <= 4 < hamming(hashes["jpg"], hashes["other"])
    images = [{"key": k, "source": "inaturalist", "taxon_id": "t", "dhash": f"{h:016x}"} for k, h in hashes.items()]
    assert run_transform(DedupeImages(), images) == ["small"]  # 'jpg' ranks first and stays


def test_copies_share_their_sketch_and_unrelated_recordings_do_not(finch):
    raw, x, rate = finch
    copies = [raw, encode(x, rate, "MP3"), encode(soxr.resample(x, rate, 44100), 44100, "WAV"),
              encode(x[int(2.05 * rate):], rate, "WAV")]
    sketches = [set(sketch(fingerprint_audio(c)[2])) for c in copies]
    other = set(sketch(fingerprint_audio(fixture_path("audio", "pykanto_XC663885_european_storm_petrel.wav")
                                         .read_bytes())[2]))
    assert all(len(sketches[0] & s) >= 3 for s in sketches[1:])  # candidates for the bit-by-bit check
    assert all(len(s & other) < 3 for s in sketches)


def test_components_keep_the_best_ranked_record():
    edges = [((1, "b"), (0, "a")), ((2, "c"), (1, "b")), ((5, "x"), (4, "y"))]
    assert components(edges) == {"b": "a", "c": "a", "x": "y"}


def test_near_duplicates_in_a_large_taxon_are_found_without_all_pairs():
    """A species with 400 recordings, 10 of them with a re-encoded copy: every copy found, nothing else."""
    rng = np.random.default_rng(3)
    slim, truth = [], {}
    for i in range(400):
        codes = rng.integers(1, 2 ** 15, 300).astype(np.uint16)
        slim.append({"key": f"xeno-canto:{i:04d}", "source": "xeno-canto", "taxon_id": "t", "pcm_sha256": f"s{i}",
                     "codes": codes.tobytes(), "published": False})
        if i % 40 == 0:
            noisy = codes ^ (rng.random((300, 15)) < 0.04).astype(np.uint16) @ (1 << np.arange(15)).astype(np.uint16)
            slim.append({"key": f"macaulay:{i:04d}", "source": "macaulay", "taxon_id": "t", "pcm_sha256": f"m{i}",
                         "codes": noisy.astype(np.uint16).tobytes(), "published": False})
            truth[f"macaulay:{i:04d}"] = f"xeno-canto:{i:04d}"
    rejects = run_transform(DedupeAudio(), slim)
    assert {r["key"]: r["detail"].removeprefix("of ") for r in rejects} == truth


def test_leak_check_fails_on_anything_on_two_sides():
    ok = [{"record": "a", "observation": "o1", "image": "i1", "pcm_sha256": "s1", "split": "train"},
          {"record": "b", "observation": "o2", "image": "i2", "pcm_sha256": "s2", "split": "test"}]
    leak_check(ok)
    for field, value in [("observation", "o1"), ("image", "i1"), ("pcm_sha256", "s1"), ("record", "a")]:
        bad = ok + [{**ok[1], "record": "c", field: value}]
        with pytest.raises(LeakError, match=field):
            leak_check(bad)
        assert any(line.startswith(field) for line in run_transform(FindLeaks(), bad))
    assert run_transform(FindLeaks(), ok) == []


def test_three_hour_recording_keeps_memory_bounded():
    rate, seconds = 8000, 3 * 3600
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        for minute in range(seconds // 60):
            t = np.arange(rate * 60) / rate
            f.write((0.3 * np.sin(2 * np.pi * 1000 * t) * (minute % 7 == 0)).astype(np.float32))
    data = buf.getvalue()
    whole = seconds * rate * 4  # float32 mono, what a whole-file decode would hold
    tracemalloc.start()
    try:
        info, clips = make_clips(data, max_clips=3)
        _, clips_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fingerprint_audio(data)
        _, fp_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(info.seconds - seconds) < 1 and len(clips) == 3
    assert clips_peak < whole / 10 and fp_peak < whole / 10, (clips_peak, fp_peak, whole)


@pytest.mark.parametrize("block", [100, 700, 5000, 48_000 * 5])
def test_codes_do_not_depend_on_how_the_audio_is_cut_into_blocks(finch, block):
    """A stream fed in blocks of any size gives the codes of the whole recording in one block (the 200 ms
    frames straddle blocks: the last FFT frames' band energies carry over)."""
    from bestiary.media.fingerprints import Fingerprinter
    _, x, rate = finch
    mono = x if x.ndim == 1 else x.mean(axis=1)
    whole = Fingerprinter(rate)
    whole.update(mono)
    parts = Fingerprinter(rate)
    for i in range(0, len(mono), block):
        parts.update(mono[i:i + block])
    assert parts.result()[0] == whole.result()[0]
    assert len(whole.result()[1]) > 100
    assert np.array_equal(parts.result()[1], whole.result()[1])
