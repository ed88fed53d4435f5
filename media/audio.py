"""The one audio path: decode -> mono -> salient windows -> 48 kHz clips -> FLAC.

Long files are never loaded whole: a first pass streams blocks to build an
energy envelope at the source rate, the clip windows are chosen from it, and
only those windows are read again and resampled (soxr).  libsndfile decodes
WAV/FLAC/OGG/MP3; PyAV decodes what it cannot (AAC in M4A).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from bestiary.media.quiet import quiet_native_stderr
from bestiary.media.salience import SalienceMeter

HOP_SECONDS = 0.25          # envelope resolution
BLOCK_SECONDS = 30.0        # streaming block size


class AudioError(ValueError):
    """Audio that cannot become a sample; `reason` is the reject code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    ultrasonic_share: float = 0.0   # energy above the target rate's Nyquist frequency, of all energy
    time_expansion: int = 1         # > 1: the clips are the recording slowed down by this factor

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class Clip:
    offset_s: float          # where the clip starts in the original recording
    seconds: float           # audio actually present (shorter recordings are padded)
    flac: bytes
    rms_db: float
    clipped_fraction: float


class _Source:
    """Blockwise mono reader: libsndfile when it can, else PyAV, both streaming (never the whole file)."""

    def __init__(self, data: bytes):
        if not data:
            raise AudioError("empty_media")
        self.data = data
        self._sf = None
        try:
            self._sf = sf.SoundFile(io.BytesIO(data))
            self.info = AudioInfo(self._sf.samplerate, self._sf.channels, self._sf.frames)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            rate, channels = _probe_pyav(data)
            self.info = AudioInfo(rate, channels, 0)
        # Stream muxers may write FLAC without a frame count, and PyAV gives none: count while streaming.
        if self.info.frames <= 0 or self.info.frames >= 2**62:
            total = sum(len(b) for b in self.blocks(int(BLOCK_SECONDS * self.info.sample_rate)))
            if total == 0:
                raise AudioError("undecodable_audio", "no frames")
            self.info = AudioInfo(self.info.sample_rate, self.info.channels, total)

    def blocks(self, size: int):
        if self._sf is None:
            yield from _rechunk(_pyav_blocks(self.data), size)
            return
        self._sf.seek(0)
        while True:
            try:
                block = self._sf.read(size, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError("undecodable_audio", str(err)[:100]) from None
            if not len(block):
                return
            yield _mono(block)

    def read(self, start: int, frames: int) -> np.ndarray:
        if self._sf is None:
            out, pos = [], 0
            for block in _pyav_blocks(self.data):  # decode forward to the window: exact, and memory stays one block
                lo, hi = max(start, pos), min(start + frames, pos + len(block))
                if lo < hi:
                    out.append(block[lo - pos:hi - pos])
                pos += len(block)
                if pos >= start + frames:
                    break
            return np.concatenate(out) if out else np.zeros(0, np.float32)
        self._sf.seek(start)
        return _mono(self._sf.read(frames, dtype="float32", always_2d=True))


def _mono(block: np.ndarray) -> np.ndarray:
    """The channels' mean, bit for bit what `block.mean(axis=1)` gives: numpy's reduction over a short
    inner axis costs more than the decode, so a few channels are summed column by column (the same order
    of additions, then the same division); a mono block is returned as it is."""
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    if channels >= 8:   # numpy sums eight or more pairwise: leave it to numpy
        return block.mean(axis=1)
    acc = block[:, 0].copy()
    for c in range(1, channels):
        acc += block[:, c]
    acc /= channels
    return acc


def _rechunk(blocks, size: int):
    buf, n = [], 0
    for b in blocks:
        buf.append(b)
        n += len(b)
        while n >= size:
            joined = np.concatenate(buf)
            yield joined[:size]
            rest = joined[size:]
            buf, n = [rest], len(rest)
    if n:
        yield np.concatenate(buf)


def _probe_pyav(data: bytes) -> tuple[int, int]:
    import av  # imported lazily: only formats libsndfile cannot read need it

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError("undecodable_audio", "no audio stream")
            return int(stream.codec_context.sample_rate or 0), int(stream.codec_context.channels or 1)
    except AudioError:
        raise
    except Exception as err:  # PyAV raises many error types for bad input
        raise AudioError("undecodable_audio", type(err).__name__) from None


def _pyav_blocks(data: bytes):
    """Mono float32 blocks as PyAV decodes them."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next(s for s in container.streams if s.type == "audio")
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.dtype.kind in "iu":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                if not frame.format.is_planar:  # packed: (1, n * channels)
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                yield arr.mean(axis=0).astype(np.float32)
    except Exception as err:
        raise AudioError("undecodable_audio", type(err).__name__) from None


def energy_envelope(source: _Source) -> np.ndarray:
    """Mean square per HOP_SECONDS window, streamed block by block."""
    rate = source.info.sample_rate
    hop = max(1, int(HOP_SECONDS * rate))
    block = hop * max(1, int(BLOCK_SECONDS / HOP_SECONDS))
    out, carry = [], np.zeros(0, np.float32)
    for chunk in source.blocks(block):
        chunk = np.concatenate([carry, chunk])
        n = len(chunk) // hop
        if n:
            out.append((chunk[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
        carry = chunk[n * hop:]
    if len(carry):
        out.append(np.array([(carry ** 2).mean()], np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def salient_envelope(source: _Source) -> np.ndarray:
    """Per-hop salience (media/salience.py), streamed; broadband energy where the rate leaves no band."""
    rate = source.info.sample_rate
    hop = max(1, int(HOP_SECONDS * rate))
    meter = SalienceMeter(rate, hop)
    if not meter.ok:
        return energy_envelope(source)
    for chunk in source.blocks(hop * max(1, int(BLOCK_SECONDS / HOP_SECONDS))):
        meter.update(chunk)
    return meter.result()


def select_windows(envelope: np.ndarray, clip_hops: int, max_clips: int, min_ratio: float = 0.25) -> list[int]:
    """Start hops of up to `max_clips` non-overlapping windows that hold the most energy.

    Each window is worth its energy minus `min_ratio` x the loudest window's, so
    a window is taken only when it is salient (mostly silence, or a sliver of a
    call another window already holds, is not worth it).  The placement with the
    most total worth wins (dynamic programming over hops, O(hops x clips)), so a
    loud call in the middle does not crowd out a second clip.  Pure, deterministic.
    """
    n = len(envelope)
    if n == 0:
        return []
    if n <= clip_hops:
        return [0]
    csum = np.concatenate([[0.0], np.cumsum(envelope, dtype=np.float64)])
    scores = csum[clip_hops:] - csum[:-clip_hops]          # energy of the window starting at hop i
    worth = scores - scores.max() * min_ratio
    m, neg = len(scores), -np.inf
    # best[k, i]: most worth from k windows that all start before hop i
    best = np.full((max_clips + 1, m + 1), neg)
    best[0, :] = 0.0
    take = np.zeros_like(best, dtype=bool)
    for k in range(1, max_clips + 1):
        for i in range(1, m + 1):
            start = i - 1
            prev = best[k - 1, max(0, start - clip_hops + 1)] if k > 1 else 0.0
            with_it = prev + worth[start] if worth[start] > 0 and prev > neg else neg
            if with_it > best[k, i - 1]:
                best[k, i], take[k, i] = with_it, True
            else:
                best[k, i] = best[k, i - 1]
    k = int(np.argmax(best[:, m]))
    if k == 0:  # only when every window is equal: take the first
        return [0]
    starts, i = [], m
    while k > 0 and i > 0:
        if take[k, i]:
            starts.append(i - 1)
            i, k = max(0, i - clip_hops), k - 1
        else:
            i -= 1
    return sorted(starts)


def encode_flac(mono: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(mono, -1, 1), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def check_recording(info: AudioInfo, min_source_rate: int, min_seconds: float,
                    declared_seconds: float | None = None) -> None:
    """Whole-recording filters: too low a rate to mean anything at 48 kHz, too short, cut short at the source."""
    if info.sample_rate < min_source_rate:
        raise AudioError("sample_rate_too_low", f"{info.sample_rate} Hz")
    if info.seconds < min_seconds:
        raise AudioError("too_short", f"{info.seconds:.2f} s")
    if declared_seconds and info.seconds < 0.8 * declared_seconds - 1.0:
        raise AudioError("truncated_audio", f"{info.seconds:.1f} s of the {declared_seconds:.1f} s the archive lists")


def _envelope_step(chunk: np.ndarray, hop: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Mean squares of the whole hops in `chunk`, and what is left over for the next block."""
    n = len(chunk) // hop
    done = (chunk[: n * hop].reshape(n, hop) ** 2).mean(axis=1) if n else None
    return done, chunk[n * hop:]


def clips_from(read_window, info: AudioInfo, env: np.ndarray, rate: int, clip_seconds: float, max_clips: int,
               silence_db: float = -60.0, max_clipped: float = 0.01) -> list[Clip]:
    """The chosen windows, each resampled to `rate`, padded to exactly `clip_seconds`, FLAC-encoded.
    `read_window(start, frames)` gives mono samples at the source rate.  Raises AudioError when silent or
    clipped throughout."""
    hop = max(1, int(HOP_SECONDS * info.sample_rate))
    clip_hops = int(round(clip_seconds / HOP_SECONDS))
    clips = []
    for start_hop in select_windows(env, clip_hops, max_clips):
        start = start_hop * hop
        mono = read_window(start, int(clip_seconds * info.sample_rate))
        present = len(mono) / info.sample_rate
        out = soxr.resample(mono, info.sample_rate, rate, quality="HQ") if info.sample_rate != rate else mono
        want = int(round(clip_seconds * rate))
        out = np.pad(out, (0, max(0, want - len(out))))[:want].astype(np.float32)
        rms = float(np.sqrt(np.mean(out[: int(present * rate)] ** 2) + 1e-20))
        clipped = float(np.mean(np.abs(out) >= 0.999))
        clips.append(Clip(round(start / info.sample_rate, 3), round(min(present, clip_seconds), 3),
                          encode_flac(out, rate), round(float(20 * np.log10(rms)), 2), clipped))
    if not clips or max(c.rms_db for c in clips) < silence_db:
        raise AudioError("silent", f"loudest window {max((c.rms_db for c in clips), default=-200):.1f} dBFS")
    if all(c.clipped_fraction > max_clipped for c in clips):
        raise AudioError("clipping", f"{clips[0].clipped_fraction:.1%} of samples at full scale")
    return [c for c in clips if c.rms_db >= silence_db and c.clipped_fraction <= max_clipped]


def make_clips(data: bytes, rate: int = 48000, clip_seconds: float = 10.0, max_clips: int = 3,
               min_seconds: float = 1.0, min_source_rate: int = 8000,
               silence_db: float = -60.0, max_clipped: float = 0.01) -> tuple[AudioInfo, list[Clip]]:
    """Salient clips of one recording, each 48 kHz mono FLAC of exactly `clip_seconds`.

    Raises AudioError with a reason code when the recording as a whole is unusable.
    """
    with quiet_native_stderr():
        src = _Source(data)
        info = src.info
        check_recording(info, min_source_rate, min_seconds)
        return info, clips_from(src.read, info, salient_envelope(src), rate, clip_seconds, max_clips, silence_db,
                                max_clipped)


KEEP_SAMPLES = 16_000_000   # decoded samples kept for the clips after the one pass (64 MB); longer: seek again


@dataclass(frozen=True)
class Analysis:
    """Everything one pass over a recording gives: info, PCM hash, fingerprint codes, clips."""
    info: AudioInfo
    pcm_sha256: str
    codes: np.ndarray
    clips: list[Clip]


@dataclass(frozen=True)
class Ultrasonic:
    """What to do with recordings whose energy lies mostly above the target rate's Nyquist frequency (bats,
    rodents, insects): reject them (`ultrasonic_content`), time-expand them by `factor` (the bat-detector
    convention: x10 brings 20-200 kHz to 2-20 kHz), or keep them as they are (what is above is lost)."""
    mode: str = "reject"
    share: float = 0.5      # the share of energy above Nyquist that makes a recording ultrasonic
    factor: int = 10


def band_split(block: np.ndarray, rate: int, cutoff: float) -> tuple[float, float]:
    """(energy above `cutoff` Hz, all energy) of one block, from its power spectrum."""
    power = np.abs(np.fft.rfft(block.astype(np.float64))) ** 2
    first = int(np.ceil(cutoff * len(block) / rate))
    return float(power[first:].sum()), float(power.sum())


def analyze_audio(data: bytes, rate: int = 48000, clip_seconds: float = 10.0, max_clips: int = 3,
                  min_seconds: float = 1.0, min_source_rate: int = 8000,
                  declared_seconds: float | None = None, ultrasonic: Ultrasonic = Ultrasonic()) -> Analysis:
    """Decode once: the PCM hash, the spectral fingerprint, the energy envelope and the energy above the
    target Nyquist frequency in one streaming pass, then the clips from the samples kept (recordings up to
    KEEP_SAMPLES) or by seeking (longer ones).  Ultrasonic recordings are rejected, time-expanded or kept as
    `ultrasonic` says."""
    with quiet_native_stderr():
        return _analyze(data, rate, clip_seconds, max_clips, min_seconds, min_source_rate, declared_seconds,
                        ultrasonic)


def _analyze(data: bytes, rate: int, clip_seconds: float, max_clips: int, min_seconds: float,
             min_source_rate: int, declared_seconds: float | None, ultrasonic: Ultrasonic) -> Analysis:
    from bestiary.media.fingerprints import Fingerprinter

    src = _Source(data)
    info = src.info
    check_recording(info, min_source_rate, min_seconds, declared_seconds)
    fp = Fingerprinter(info.sample_rate)
    hop = max(1, int(HOP_SECONDS * info.sample_rate))
    meter = SalienceMeter(info.sample_rate, hop)
    env, carry = [], np.zeros(0, np.float32)
    kept: list[np.ndarray] | None = [] if info.frames <= KEEP_SAMPLES else None
    above = total = 0.0
    for block in src.blocks(int(5 * info.sample_rate)):
        fp.update(block)
        if info.sample_rate > rate:   # only a rate above the target's can hold what the target cannot
            a, t = band_split(block, info.sample_rate, rate / 2)
            above, total = above + a, total + t
        if meter.ok:   # clips where the animal is, not where the wind is
            meter.update(block)
        else:          # no band to measure at this rate: broadband energy
            done, carry = _envelope_step(np.concatenate([carry, block]), hop)
            if done is not None:
                env.append(done)
        if kept is not None:
            kept.append(block)
    if len(carry):
        env.append(np.array([(carry ** 2).mean()], np.float32))
    sha, codes = fp.result()
    if meter.ok:
        envelope = meter.result()
    else:
        envelope = np.concatenate(env) if env else np.zeros(0, np.float32)
    if kept is not None:
        whole = np.concatenate(kept) if kept else np.zeros(0, np.float32)
        read = lambda start, frames: whole[start:start + frames]  # noqa: E731
    else:
        read = src.read
    share = above / total if total > 0 else 0.0
    info = AudioInfo(info.sample_rate, info.channels, info.frames, round(share, 4))
    if share <= ultrasonic.share or ultrasonic.mode == "keep":
        return Analysis(info, sha, codes, clips_from(read, info, envelope, rate, clip_seconds, max_clips))
    if ultrasonic.mode != "time_expand":
        raise AudioError("ultrasonic_content", f"{share:.1%} of the energy above {rate // 2} Hz "
                         f"(recorded at {info.sample_rate} Hz)")
    # slowed down `factor` times: the same samples at rate / factor, clips chosen again in expanded time
    f = ultrasonic.factor
    slow = AudioInfo(max(1, info.sample_rate // f), info.channels, info.frames, round(share, 4), f)
    hop = max(1, int(HOP_SECONDS * slow.sample_rate))
    env_parts, carry = [], np.zeros(0, np.float32)
    for start in range(0, info.frames, 5 * info.sample_rate):
        done, carry = _envelope_step(np.concatenate([carry, read(start, 5 * info.sample_rate)]), hop)
        if done is not None:
            env_parts.append(done)
    slow_env = np.concatenate(env_parts) if env_parts else np.zeros(0, np.float32)
    return Analysis(slow, sha, codes, clips_from(read, slow, slow_env, rate, clip_seconds, max_clips))


def fingerprint_audio(data: bytes) -> tuple[AudioInfo, str, np.ndarray]:
    """Stream a recording once: its info, the sha256 of its 16-bit mono PCM, and its frame codes."""
    from bestiary.media.fingerprints import Fingerprinter

    with quiet_native_stderr():
        src = _Source(data)
        fp = Fingerprinter(src.info.sample_rate)
        for block in src.blocks(int(5 * src.info.sample_rate)):  # short blocks: the FFT frames overlap 8x
            fp.update(block)
        sha, codes = fp.result()
    return src.info, sha, codes


def read_clip(flac: bytes) -> tuple[np.ndarray, int]:
    """Decode a clip (as written by make_clips) to float32 mono."""
    data, rate = sf.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    return data.mean(axis=1), rate
