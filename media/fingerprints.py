"""Fingerprints for duplicates: a hash of the decoded PCM (exact), a spectral fingerprint
(near: the same recording re-encoded, resampled or trimmed), and an image dHash.

The spectral fingerprint follows Haitsma & Kalker's idea: per 200 ms frame (every 25 ms), the
signs of energy differences between neighbouring bands and frames, 15 bits a
frame.  A frame's band energies are the sum of seven 50 ms FFT frames at half
overlap (a Welch estimate of the same 200 ms), a quarter of the work of one
200 ms FFT every 25 ms; the bands need no finer resolution than 20 Hz.  Pairs
of consecutive frame codes index recordings; two recordings that share many
codes at one time offset are compared bit by bit.
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict

import numpy as np
import scipy.fft
import soxr
from PIL import Image

RATE = 20480                  # analysis rate: every input is resampled to it (soxr, streaming)
WIN, HOP = 1024, 512          # 50 ms FFT frames every 25 ms: a trim is at most 12.5 ms off the grid
SPAN = 7                      # FFT frames summed into one 200 ms frame (7 half-overlapping 50 ms frames)
BANDS = 16                    # 15 difference bits per frame
F_LO, F_HI = 300.0, 9500.0
MAX_FRAMES = 24000            # codes for the first 10 minutes: enough to match, bounded for 3-hour files


def band_edges(rate: int, n_fft: int) -> np.ndarray:
    hi = min(F_HI, rate / 2 * 0.93)
    edges_hz = np.geomspace(F_LO, hi, BANDS + 1)
    return np.clip(np.round(edges_hz / rate * n_fft).astype(int), 1, n_fft // 2)


class Fingerprinter:
    """Fed mono blocks at the source rate; gives the PCM hash and the frame codes."""

    def __init__(self, rate: int):
        self.rate = rate
        self.win, self.hop, self.n_fft = WIN, HOP, WIN
        self.edges = band_edges(RATE, self.n_fft)
        self.window = np.hanning(self.win).astype(np.float32)
        # band sums as one matrix product over the bins the bands cover (BLAS, not a cumsum per frame)
        lo, hi = int(self.edges[0]), int(self.edges[-1])
        self.bins = slice(lo, hi)
        self.band_matrix = np.zeros((hi - lo, BANDS), np.float32)
        for b in range(BANDS):
            self.band_matrix[self.edges[b] - lo:self.edges[b + 1] - lo, b] = 1.0
        self.resampler = soxr.ResampleStream(rate, RATE, 1, dtype="float32", quality="LQ") if rate != RATE else None
        self.sha = hashlib.sha256()
        self.carry = np.zeros(0, np.float32)
        self.codes: list[np.ndarray] = []
        self.n_codes = 0
        self.tail = np.zeros((0, BANDS), np.float64)   # band energies of the last SPAN - 1 FFT frames
        self.last_diff: np.ndarray | None = None   # band differences of the previous frame
        self.weights = (1 << np.arange(BANDS - 1)).astype(np.uint32)

    def update(self, block: np.ndarray) -> None:
        pcm = np.clip(np.round(block * 32767), -32768, 32767).astype("<i2")
        self.sha.update(pcm.tobytes())
        if self.n_codes >= MAX_FRAMES:
            return
        block = block.astype(np.float32)
        if self.resampler is not None:
            block = self.resampler.resample_chunk(block)
        data = np.concatenate([self.carry, block])
        n = (len(data) - self.win) // self.hop + 1 if len(data) >= self.win else 0
        if n:
            frames = np.lib.stride_tricks.sliding_window_view(data, self.win)[: n * self.hop: self.hop] * self.window
            spec = scipy.fft.rfft(frames, n=self.n_fft, axis=1)[:, self.bins]   # float32 in, complex64 out
            power = spec.real ** 2 + spec.imag ** 2
            rows = np.concatenate([self.tail, (power @ self.band_matrix).astype(np.float64)])
            self.tail = rows[-(SPAN - 1):]
            if len(rows) >= SPAN:
                self._code(rows)
        self.carry = data[n * self.hop:]

    def _code(self, rows: np.ndarray) -> None:
        """Codes of the 200 ms frames that these FFT frames' band energies complete."""
        run = np.concatenate([np.zeros((1, BANDS)), np.cumsum(rows, axis=0)])
        e = np.log(np.maximum(run[SPAN:] - run[:-SPAN], 0.0) + 1e-10)   # 200 ms band energies
        d = e[:, :-1] - e[:, 1:]                              # band differences ...
        if self.last_diff is not None:
            d = np.concatenate([self.last_diff[None], d])
        bits = (d[1:] - d[:-1]) > 0                            # ... and their change over time
        self.last_diff = d[-1]
        codes = (bits.astype(np.uint32) @ self.weights).astype(np.uint16)
        self.codes.append(codes)
        self.n_codes += len(codes)

    def result(self) -> tuple[str, np.ndarray]:
        """(sha256 of the 16-bit PCM, uint16 code per frame)."""
        codes = np.concatenate(self.codes) if self.codes else np.zeros(0, np.uint16)
        return self.sha.hexdigest(), codes[:MAX_FRAMES]


def bit_error_rate(a: np.ndarray, b: np.ndarray) -> float:
    x = np.bitwise_xor(a.astype(np.uint16), b.astype(np.uint16))
    return float(np.unpackbits(x.view(np.uint8)).sum()) / (len(a) * (BANDS - 1)) if len(a) else 1.0


def near_duplicates(codes: dict[str, np.ndarray], min_votes: int = 20, max_ber: float = 0.3,
                    min_overlap: int = 120) -> list[tuple[str, str, float]]:
    """Pairs (a, b, bit error rate) of recordings whose fingerprints match at some offset.

    An inverted index on pairs of consecutive frame codes proposes (pair, offset)
    candidates; a candidate with `min_votes` agreeing codes is checked over its
    whole overlap.  Near-linear in the number of frames for unrelated audio."""
    index: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for key in sorted(codes):
        c = codes[key].astype(np.uint32)
        for t, h in enumerate((c[:-1] << 16) | c[1:]):
            index[int(h)].append((key, t))
    votes: Counter = Counter()
    for postings in index.values():
        if len(postings) > 200:  # a code everywhere (silence) says nothing
            continue
        for i, (ka, ta) in enumerate(postings):
            for kb, tb in postings[i + 1:]:
                if ka != kb:
                    a, b, off = (ka, kb, tb - ta) if ka < kb else (kb, ka, ta - tb)
                    votes[(a, b, off)] += 1
    found: dict[tuple[str, str], float] = {}
    for (a, b, off), n in votes.items():
        if n < min_votes or (a, b) in found:
            continue
        ca, cb = codes[a], codes[b]
        start_a, start_b = max(0, -off), max(0, off)
        length = min(len(ca) - start_a, len(cb) - start_b)
        if length < min_overlap:
            continue
        ber = bit_error_rate(ca[start_a:start_a + length], cb[start_b:start_b + length])
        if ber <= max_ber:
            found[(a, b)] = ber
    return sorted((a, b, ber) for (a, b), ber in found.items())


def dhash(data: bytes, size: int = 8) -> int:
    """64-bit difference hash of an image (grey, 9x8): near-identical images differ in few bits."""
    from bestiary.media.images import MAX_PIXELS, ImageError
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ImageError("image_too_large", str(err)[:100]) from None
    if img.size[0] * img.size[1] > MAX_PIXELS:  # never decode a decompression bomb
        raise ImageError("image_too_large", f"{img.size[0]}x{img.size[1]}")
    img.draft("L", (size * 4, size * 4))
    grey = np.asarray(img.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


SKETCH_BITS, SKETCH_FRAMES = 7, 3   # a sketch feature: the 7 lowest-band bits of 3 consecutive frames
SKETCH_SIZE = 16                    # features kept per recording (bottom-k of their hashes)


def _mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer, vectorised: a fixed order over feature values unrelated to the values."""
    x = x.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x


def sketch(codes: np.ndarray, k: int = SKETCH_SIZE) -> list[int]:
    """A recording's MinHash sketch: the k smallest hashes of its features, where a feature is the low-band
    bits of a few consecutive frame codes.  Low bands survive re-encoding and resampling best (on the sample
    archive's re-uploads their bits flip 2-4 % of the time, the top bands' up to 30 %), so two copies of one
    recording share most of their sketch (its two re-uploads: 16 of 16), while unrelated recordings share
    two at most, bar one pair of one species with seven (the sample archive's 278 probed recordings, pair by
    pair; the frame-by-frame match then tells that pair apart).  Position-free: a trimmed copy keeps its features.
    Flat frames (feature 0) are left out: every recording has them."""
    c = np.asarray(codes, dtype=np.uint64) & np.uint64((1 << SKETCH_BITS) - 1)
    if len(c) < SKETCH_FRAMES:
        return []
    n = len(c) - SKETCH_FRAMES + 1
    f = np.zeros(n, np.uint64)
    for i in range(SKETCH_FRAMES):
        f = (f << np.uint64(SKETCH_BITS)) | c[i:n + i]
    f = np.unique(f[f != 0])
    return sorted(int(v) for v in np.sort(_mix(f))[:k])
