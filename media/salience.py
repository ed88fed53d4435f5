"""Where the animal is: a per-hop salience that resists field noise, for choosing clips.

Broadband energy puts clips on wind gusts, rain, clicks and handling thumps, which are louder than a
distant bird.  Salience is measured in-band (0.5-16 kHz, in log-spaced bands) against the recording's own
noise floor per band (a low percentile over time), weighted by how tonal each band is (a call is peaky
inside its band, wind, rain, clicks and thumps are noise-flat however loud), and counts only what rises
in some bands more than in the typical band.  Pure functions
plus a streaming meter that sees each block once.
"""
from __future__ import annotations

import numpy as np

LOW_HZ, HIGH_HZ = 500.0, 16000.0
BANDS = 16
N_FFT = 512
FLOOR_PERCENTILE = 20
TOP_BANDS = 3


def band_salience(bands: np.ndarray, flatness: np.ndarray | None = None,
                  floor_percentile: float = FLOOR_PERCENTILE, top: int = TOP_BANDS) -> np.ndarray:
    """(hops, bands) band powers [and spectral flatness within each band] -> (hops,) salience >= 0.

    Per band: the SNR in dB over the band's own floor (a low percentile over the recording), weighted by how
    much less flat (more tonal) the band is than it usually is.  Per hop: the mean of the `top` bands, minus
    the median band's SNR (what rises in every band together is not a call).  Noise bursts, tilted or not,
    are flat inside each band; a call is not."""
    if bands.size == 0:
        return np.zeros(len(bands), np.float64)
    bands = np.asarray(bands, np.float32)
    floor = np.percentile(bands, floor_percentile, axis=0).astype(np.float32) + 1e-12
    snr = np.maximum(10.0 * np.log10((bands + 1e-12) / floor), 0.0)
    if flatness is not None:
        usual = np.median(flatness, axis=0) + 1e-9
        snr = snr * np.clip((usual - flatness) / usual, 0.0, 1.0) * 2.0
    k = min(top, snr.shape[1])
    peak = np.sort(snr, axis=1)[:, -k:].mean(axis=1)
    return np.maximum(peak - np.median(snr, axis=1), 0.0)


class SalienceMeter:
    """Band powers per hop from blocks of mono samples at `rate`, streamed; `result()` gives the salience
    envelope (one value per hop, the last partial hop included, as the energy envelope has)."""

    def __init__(self, rate: int, hop: int):
        self.rate, self.hop = rate, hop
        high = min(HIGH_HZ, 0.98 * rate / 2)
        self.ok = high > 2 * LOW_HZ and hop >= N_FFT
        if self.ok:
            edges = np.geomspace(LOW_HZ, high, BANDS + 1)
            band = np.digitize(np.fft.rfftfreq(N_FFT, 1 / rate), edges) - 1
            self.keep = (band >= 0) & (band < BANDS)
            # the bins rise with frequency, so each band is a run of neighbouring columns: one reduceat sums
            # them all (bands narrower than a bin have none and stay 0)
            counts = np.bincount(band[self.keep], minlength=BANDS)
            self.present = counts > 0
            self.starts = (np.cumsum(counts) - counts)[self.present]
            self.widths = counts[self.present]
            self.tonal = (counts >= 3)[self.present]   # flatness needs a few bins; narrower bands count as flat
            self.tonal_bands = np.flatnonzero(self.present)[self.tonal]
            self.window = np.hanning(N_FFT).astype(np.float32)
        self.rows: list[np.ndarray] = []
        self.flat: list[np.ndarray] = []
        self.carry = np.zeros(0, np.float32)
        self.partial = False

    def update(self, block: np.ndarray) -> None:
        x = np.concatenate([self.carry, block])
        n = len(x) // self.hop
        if n and self.ok:
            hops = x[: n * self.hop].reshape(n, self.hop)
            stride = 2 * N_FFT   # every other frame: calls last longer than 20 ms, and it halves the FFTs
            frames = hops[:, : (self.hop // stride) * stride].reshape(n, -1, stride)[:, :, :N_FFT]
            from scipy import fft as sfft   # float32 in, complex64 out: half numpy's memory per block
            power = np.abs(sfft.rfft(frames * self.window, axis=2)) ** 2
            spec = power.mean(axis=1)[:, self.keep]
            bands = np.zeros((n, BANDS), np.float32)   # float32: hours of hops stay a few MB
            flat = np.ones((n, BANDS), np.float32)
            sums = np.add.reduceat(spec, self.starts, axis=1)
            bands[:, self.present] = sums
            # Wiener entropy per band, the geometric over the arithmetic mean of its bins: 1 for noise-flat, near 0
            # for tones
            logs = np.add.reduceat(np.log(spec + 1e-20), self.starts, axis=1)
            tonal = np.exp(logs / self.widths) / (sums / self.widths + 1e-20)
            flat[:, self.tonal_bands] = tonal[:, self.tonal]
            self.rows.append(bands)
            self.flat.append(flat)
        elif n:
            self.rows.append(np.zeros((n, BANDS), np.float32))
            self.flat.append(np.ones((n, BANDS), np.float32))
        self.carry = x[n * self.hop:]

    def result(self) -> np.ndarray | None:
        """The salience envelope, or None when the rate leaves no band to measure (the caller falls back to
        energy)."""
        if not self.ok:
            return None
        bands = np.concatenate(self.rows) if self.rows else np.zeros((0, BANDS))
        flat = np.concatenate(self.flat) if self.flat else np.zeros((0, BANDS))
        s = band_salience(bands, flat)
        return np.concatenate([s, [0.0]]) if len(self.carry) else s
