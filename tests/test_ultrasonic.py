"""Real recordings at other rates: vocalpy 0.10.3's examples (BSD-3 package; deer-mouse pup calls at 250 kHz
from Jourjine et al. 2023, Dryad; a mouse USV at 300 kHz from Goffinet et al. 2021, CC0; fruit-fly song,
3 channels at 10 kHz), fetched as the wheel from the package index and unpacked, and the stereo 44.1 kHz
storm petrel from ../shared/fixtures (pykanto, MIT)."""
import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from bestiary.media.audio import AudioError, Ultrasonic, analyze_audio, band_split, read_clip
from tests.conftest import fixture_path
from tests.realdata import wheel_files

RATE = 48000


@pytest.fixture(scope="module")
def vocalpy_examples(tmp_path_factory) -> dict[str, bytes]:
    files = wheel_files("vocalpy", "0.10.3", tmp_path_factory.getbasetemp() / "wheels", (".wav",))
    return {n.rsplit("/", 1)[-1]: data for n, data in files.items()}


def in_band_share(x: np.ndarray, rate: int, lo: float = 500.0, hi: float = 16000.0) -> float:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(power[(f >= lo) & (f <= hi)].sum() / power.sum())


def test_ultrasonic_recordings_are_rejected_with_the_measured_share(vocalpy_examples):
    for name, least in (("deermouse-go.wav", 0.98), ("BM003.wav", 0.8)):
        with pytest.raises(AudioError) as err:
            analyze_audio(vocalpy_examples[name], RATE, 10.0, 1, min_seconds=0.1)
        assert err.value.reason == "ultrasonic_content"
        share = float(err.value.detail.split("%")[0]) / 100
        assert share >= least, (name, err.value.detail)
        x, rate = sf.read(io.BytesIO(vocalpy_examples[name]), dtype="float32")
        above, total = band_split(x, rate, RATE / 2)   # the pure measure agrees with a whole-file FFT
        assert abs(above / total - share) < 0.02


def test_time_expansion_brings_the_calls_into_band(vocalpy_examples):
    data = vocalpy_examples["deermouse-go.wav"]
    a = analyze_audio(data, RATE, 10.0, 1, min_seconds=0.1, ultrasonic=Ultrasonic("time_expand", 0.5, 10))
    assert a.info.time_expansion == 10 and a.info.sample_rate == 25000 and a.info.ultrasonic_share > 0.98
    clip, rate = read_clip(a.clips[0].flac)
    present = clip[: int(a.clips[0].seconds * rate)]
    assert rate == RATE and a.clips[0].seconds == 10.0   # 1.2 s recorded, 12 s expanded: a whole 10-s clip
    assert in_band_share(present, rate) > 0.9           # the calls now lie between 0.5 and 16 kHz
    kept = analyze_audio(data, RATE, 10.0, 1, min_seconds=0.1, ultrasonic=Ultrasonic("keep"))
    clip, rate = read_clip(kept.clips[0].flac)
    assert kept.info.time_expansion == 1
    assert np.sqrt(np.mean(clip ** 2)) < 0.2 * np.sqrt(np.mean(read_clip(a.clips[0].flac)[0] ** 2))  # little left


def test_multichannel_and_other_rates_make_correct_mono_clips(vocalpy_examples):
    cases = [(vocalpy_examples["fruitfly-song-multichannel.wav"], 1.0),
             (fixture_path("audio", "pykanto_XC663885_european_storm_petrel.wav").read_bytes(), 10.0)]
    for data, seconds in cases:
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        assert x.shape[1] in (2, 3) and rate in (10000, 44100)
        a = analyze_audio(data, RATE, seconds, 1, min_seconds=0.1)
        clip, out_rate = read_clip(a.clips[0].flac)
        start = int(round(a.clips[0].offset_s * rate))
        expect = soxr.resample(x[start:start + int(seconds * rate)].mean(axis=1), rate, RATE, quality="HQ")
        n = min(len(expect), int(a.clips[0].seconds * RATE)) - 200
        assert out_rate == RATE and len(clip) == int(seconds * RATE)
        assert np.corrcoef(clip[100:n], expect[100:n])[0, 1] > 0.99     # the channels' mean, resampled
        assert a.info.ultrasonic_share == 0.0 and a.info.channels == x.shape[1]
