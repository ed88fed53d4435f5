"""Clip choice that finds the animal in field noise: the pure salience function and a real call beside a
louder gust (the great tit song from pykanto, in ../shared/fixtures)."""
import io

import numpy as np
import soundfile as sf
import soxr

from bestiary.media.audio import analyze_audio
from bestiary.media.salience import BANDS, band_salience
from tests.conftest import fixture_path


def test_narrowband_rises_count_and_broadband_rises_do_not():
    bands = np.ones((100, BANDS))
    bands[10] *= 1000.0              # a thump or a gust: every band up 30 dB
    bands[50, 4:6] *= 1000.0         # a call: two bands up 30 dB
    s = band_salience(bands)
    assert s[50] > 15 and s[10] < 1 and s[0] == 0
    assert band_salience(np.zeros((0, BANDS))).shape == (0,)


def test_the_clip_holds_the_call_not_the_louder_gust():
    x, rate = sf.read(fixture_path("audio", "pykanto_great_tit_2021-B32-0415_05-11.wav"), dtype="float32")
    call = soxr.resample(x, rate, 48000)
    rng = np.random.default_rng(1)
    n = 40 * 48000
    wave = 0.002 * rng.standard_normal(n).astype(np.float32)
    at = 27 * 48000
    wave[at:at + len(call)] += 0.05 * call / np.abs(call).max()
    gust = np.cumsum(rng.standard_normal(5 * 48000)).astype(np.float32)
    gust -= np.convolve(gust, np.ones(2401) / 2401, mode="same")
    gust *= 0.3 / np.abs(gust).max() * np.sin(np.linspace(0, np.pi, len(gust))) ** 2
    wave[3 * 48000:8 * 48000] += gust          # far louder than the call, broadband and low
    buf = io.BytesIO()
    sf.write(buf, wave, 48000, format="WAV", subtype="PCM_16")
    clip = analyze_audio(buf.getvalue(), 48000, 10.0, 1).clips[0]
    assert clip.offset_s <= 27.5 and clip.offset_s + 10 >= 27 + len(call) / 48000 - 0.5
