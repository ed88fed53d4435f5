"""Clip choice in field noise: real vocalizations hidden in long backgrounds with louder broadband bursts.

    python bench/windows.py --trials 40

Vocalizations: the great tit song and Bengalese finch song in pykanto's data and the storm petrel call
(../shared/fixtures/audio, from pykanto, MIT), each with its extent found in band (the span where its
1-8 kHz energy is above a tenth of its peak).  Each trial puts one of them, at a distant level, into 60 s
of background noise at a random offset, plus bursts elsewhere (0.5 to 15 times the call's RMS): wind gusts (low-frequency noise
lasting seconds), click trains and handling thumps.  It prints the share of the vocalization's extent
inside the chosen 10-s clip for bestiary's choice (in-band salience over the noise floor), for broadband
energy (the old choice) and for a random window, and the ratio against broadband energy.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bestiary.media.audio import HOP_SECONDS, analyze_audio, select_windows  # noqa: E402

RATE = 48000
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "fixtures",
                        "audio")
CALLS = {"great tit": ("pykanto_great_tit_2021-B32-0415_05-11.wav", None),
         "bengalese finch": ("pykanto_bengalese_finch_348.wav", 4.0),
         "storm petrel": ("pykanto_XC663885_european_storm_petrel.wav", 4.0)}


def band_power(x: np.ndarray, rate: int, lo: float, hi: float, frame: int) -> np.ndarray:
    n = len(x) // frame
    spec = np.abs(np.fft.rfft(x[: n * frame].reshape(n, frame), axis=1)) ** 2
    f = np.fft.rfftfreq(frame, 1 / rate)
    return spec[:, (f >= lo) & (f <= hi)].sum(axis=1)


def load_call(name: str, crop: float | None) -> tuple[np.ndarray, float, float]:
    """(samples at 48 kHz, extent start s, extent end s) of one real vocalization."""
    x, rate = sf.read(os.path.join(FIXTURES, CALLS[name][0]), dtype="float32", always_2d=True)
    x = soxr.resample(x.mean(axis=1), rate, RATE)
    frame = 480
    p = np.convolve(band_power(x, RATE, 1000, 8000, frame), np.ones(5) / 5, mode="same")
    if crop:  # the crop-long stretch with the most song
        w = int(crop * RATE / frame)
        start = int(np.argmax(np.convolve(p, np.ones(w), mode="valid")))
        x, p = x[start * frame:(start + w) * frame], p[start:start + w]
    active = np.flatnonzero(p > 0.1 * p.max())
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-9), active[0] * frame / RATE, (active[-1] + 1) * frame / RATE


def bursts(rng, seconds: float) -> list[tuple[str, np.ndarray]]:
    """Loud broadband events of field recordings (unit RMS; scaled by the caller)."""
    out = []
    n = int(rng.uniform(3, 6) * RATE)   # a gust: noise under ~400 Hz with a slow swell, leaking upwards
    g = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    g -= np.convolve(g, np.ones(2401) / 2401, mode="same")
    g += 0.05 * rng.standard_normal(n)
    g *= np.sin(np.linspace(0, np.pi, n)) ** 2
    out.append(("wind", g))
    n = int(rng.uniform(1, 3) * RATE)   # clicks every ~50 ms
    c = np.zeros(n, np.float32)
    for t in range(0, n - 200, int(0.05 * RATE)):
        c[t:t + 200] += rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    out.append(("clicks", c))
    n = int(1.5 * RATE)                 # handling thumps: decaying 40-120 Hz knocks
    h = np.zeros(n, np.float32)
    for t in rng.integers(0, n - 15000, 4):
        f0 = rng.uniform(40, 120)
        k = np.arange(15000)
        h[t:t + 15000] += np.sin(2 * np.pi * f0 * k / RATE) * np.exp(-k / 3000) + 0.2 * rng.standard_normal(
            15000) * np.exp(-k / 500)
    out.append(("thumps", h))
    return [(name, b / (np.sqrt(np.mean(b ** 2)) + 1e-9)) for name, b in out]


def coverage(start: float, clip: float, a: float, b: float) -> float:
    return max(0.0, min(start + clip, b) - max(start, a)) / (b - a)


def trial(rng, call: tuple[np.ndarray, float, float], seconds: float = 60.0, clip: float = 10.0) -> dict:
    x, a, b = call
    n = int(seconds * RATE)
    wave = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    wave -= np.convolve(wave, np.ones(4801) / 4801, mode="same")
    wave *= 0.002 / (wave.std() + 1e-9)
    slots = rng.permutation(int(seconds // 12))   # 12-s slots: the call and the bursts never overlap
    at = slots[0] * 12 + 1.0
    i = int(at * RATE)
    wave[i:i + len(x)] += 0.02 * x[: n - i]                           # a distant call
    for (name, burst), slot in zip(bursts(rng, seconds), slots[1:]):
        j = int((slot * 12 + 1.0) * RATE)
        wave[j:j + len(burst)] += rng.uniform(0.01, 0.3) * burst[: n - j]   # 0.5-15x the call's RMS
    data = io.BytesIO()
    sf.write(data, np.clip(wave, -1, 1), RATE, format="WAV", subtype="PCM_16")
    ours = analyze_audio(data.getvalue(), RATE, clip, 1).clips[0].offset_s
    hop = int(HOP_SECONDS * RATE)
    energy = (wave[: (n // hop) * hop].reshape(-1, hop) ** 2).mean(axis=1)
    broadband = select_windows(energy, int(clip / HOP_SECONDS), 1)[0] * HOP_SECONDS
    random = rng.uniform(0, seconds - clip)
    return {k: coverage(s, clip, at + a, at + b) for k, s in (("bestiary", ours), ("broadband energy", broadband),
                                                               ("random window", random))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    calls = {name: load_call(name, crop) for name, (_, crop) in CALLS.items()}
    for name, (x, a, b) in calls.items():
        print(f"{name}: {len(x) / RATE:.2f} s, vocalization {a:.2f}-{b:.2f} s")
    rows = [trial(rng, calls[list(calls)[t % len(calls)]]) for t in range(args.trials)]
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(f"share of vocalization time inside the chosen 10-s clip ({args.trials} trials, 60 s each):")
    for k, v in means.items():
        print(f"  {k:<18} {v:.3f}")
    base = means["broadband energy"]
    ratio = f"{means['bestiary'] / base:.2f}x" if base > 0 else "inf (broadband energy never found the call)"
    print(f"bestiary / broadband energy: {ratio} (goals: bestiary >= 0.9 and >= 1.5x broadband energy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
