"""Windows over recordings of any length: which windows (a pure function) and their samples, streamed.

A soundscape hours long is never decoded whole: blocks are read at the source rate, mixed to mono,
resampled as a stream (soxr) to the model's rate, and each window is handed on as soon as its last
sample has arrived.  Memory stays about one window plus one block.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

BLOCK_SECONDS = 5.0


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Starts of windows of `window` samples every `hop` over `n` samples; the last window is the first
    that reaches the end (padded there), so every sample is in some window and none is only padding."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(starts[-1] + hop)
    return starts


@dataclass(frozen=True)
class Window:
    offset_s: float       # start in the recording
    seconds: float        # audio present (the last window may be padded past the end)
    samples: np.ndarray   # mono float32 at the target rate, exactly the window's length
    rms_db: float


def _mono_blocks(src) -> tuple[int, Iterator[np.ndarray]]:
    """(source rate, mono float32 blocks): libsndfile for what it reads, else PyAV (AAC in M4A)."""
    try:
        f = sf.SoundFile(src if isinstance(src, (str, Path)) else io.BytesIO(src))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        from bestiary.media.audio import _Source
        data = Path(src).read_bytes() if isinstance(src, (str, Path)) else src
        s = _Source(data)
        return s.info.sample_rate, s.blocks(int(BLOCK_SECONDS * s.info.sample_rate))

    def blocks():
        with f:
            while True:
                b = f.read(int(BLOCK_SECONDS * f.samplerate), dtype="float32", always_2d=True)
                if not len(b):
                    return
                yield b.mean(axis=1)
    return f.samplerate, blocks()


def stream_windows(src, rate: int, window_s: float, hop_s: float) -> Iterator[Window]:
    """Windows of `window_s` every `hop_s` over a recording (a path or encoded bytes), at `rate`."""
    source_rate, blocks = _mono_blocks(src)
    w, h = int(round(window_s * rate)), int(round(hop_s * rate))
    resampler = soxr.ResampleStream(source_rate, rate, 1, dtype="float32", quality="HQ") \
        if source_rate != rate else None
    buf, buf_at, next_start = np.zeros(0, np.float32), 0, 0

    def cut(start: int, total: int | None) -> Window:
        piece = buf[start - buf_at:start - buf_at + w]
        present = len(piece) if total is None else min(len(piece), total - start)
        piece = np.pad(piece, (0, w - len(piece))).astype(np.float32)
        rms = float(np.sqrt(np.mean(piece[:max(1, present)] ** 2) + 1e-20))
        return Window(round(start / rate, 3), round(present / rate, 3), piece, round(20 * np.log10(rms), 2))

    def more(chunk: np.ndarray) -> Iterator[Window]:
        nonlocal buf, buf_at, next_start
        buf = np.concatenate([buf, chunk])
        while next_start + w <= buf_at + len(buf):
            yield cut(next_start, None)
            next_start += h
        drop = min(next_start - buf_at, len(buf))   # samples no later window needs
        buf, buf_at = buf[drop:], buf_at + drop

    for block in blocks:
        out = resampler.resample_chunk(block) if resampler else block
        yield from more(out.astype(np.float32, copy=False))
    if resampler:
        yield from more(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    total = buf_at + len(buf)
    if total == 0:
        return
    emitted = next_start  # windows before this start are out; the rest follow the pure rule
    for start in window_starts(total, w, h):
        if start >= emitted and (start < total or start == 0):
            yield cut(start, total)


def duration_seconds(src) -> float | None:
    """The recording's length from its header, without decoding (None when the header does not say)."""
    try:
        info = sf.info(src if isinstance(src, (str, Path)) else io.BytesIO(src))
        return info.frames / info.samplerate if info.samplerate and 0 < info.frames < 2 ** 62 else None
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
