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


def test_meter_band_powers_and_flatness_are_those_of_each_bands_bins():
    """The meter sums each band's run of bins in one pass: it must give what band-by-band masks give, at
    rates whose lowest bands hold no bin, one bin or a few."""
    from bestiary.media.salience import HIGH_HZ, LOW_HZ, N_FFT, SalienceMeter
    rng = np.random.default_rng(3)
    seen_widths = set()
    for rate in (16000, 22050, 48000, 250000):
        hop = rate // 4
        x = rng.standard_normal(3 * hop).astype(np.float32) * np.linspace(0.1, 1, 3 * hop, dtype=np.float32)
        meter = SalienceMeter(rate, hop)
        meter.update(x)
        got_bands, got_flat = meter.rows[0], meter.flat[0]
        edges = np.geomspace(LOW_HZ, min(HIGH_HZ, 0.98 * rate / 2), BANDS + 1)
        band = np.digitize(np.fft.rfftfreq(N_FFT, 1 / rate), edges) - 1
        frames = x.reshape(3, hop)[:, : (hop // (2 * N_FFT)) * 2 * N_FFT].reshape(3, -1, 2 * N_FFT)[:, :, :N_FFT]
        spec = (np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=2)) ** 2).mean(axis=1)
        widths = [int((band == b).sum()) for b in range(BANDS)]
        seen_widths.update(widths)
        for b in range(BANDS):
            cols = spec[:, band == b]
            np.testing.assert_allclose(got_bands[:, b], cols.sum(axis=1), rtol=1e-4, atol=1e-6)
            want = (np.exp(np.log(cols + 1e-20).mean(axis=1)) / (cols.mean(axis=1) + 1e-20)
                    if cols.shape[1] >= 3 else np.ones(3))
            np.testing.assert_allclose(got_flat[:, b], want, rtol=1e-3)
    assert {0, 1, 2, 3} <= seen_widths   # bands with no bin, too few bins for flatness, and enough
