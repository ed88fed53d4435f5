"""The audio and image paths on real recordings and real formats."""
import io

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from bestiary.media.audio import AudioError, make_clips, read_clip, select_windows
from bestiary.media.images import ImageError, prepare_image
from tests.conftest import bomb_png, fixture_path


def wav_bytes(name):
    return fixture_path("audio", name).read_bytes()


def test_real_stereo_44k_recording_becomes_48k_mono_clips():
    info, clips = make_clips(wav_bytes("pykanto_XC663885_european_storm_petrel.wav"), max_clips=3)
    assert (info.sample_rate, info.channels) == (44100, 2) and 15 < info.seconds < 16
    assert len(clips) == 1  # 15.4 s holds one non-overlapping 10 s window
    x, rate = read_clip(clips[0].flac)
    assert rate == 48000 and len(x) == 480000
    data, _ = sf.read(io.BytesIO(clips[0].flac), always_2d=True)
    assert data.shape[1] == 1
    assert 0 <= clips[0].offset_s <= info.seconds - 10 + 0.25


def test_clip_content_is_the_resampled_original():
    raw = wav_bytes("pykanto_bengalese_finch_348.wav")
    orig, orig_rate = sf.read(io.BytesIO(raw), dtype="float32")
    info, clips = make_clips(raw, max_clips=2)
    assert orig_rate == 32000 and len(clips) == 2
    assert clips[1].offset_s - clips[0].offset_s >= 10  # two clips, not overlapping
    for clip in clips:
        x, _ = read_clip(clip.flac)
        back = soxr.resample(x, 48000, orig_rate)  # back to the original rate, to compare sample by sample
        start = int(round(clip.offset_s * orig_rate))
        ref = orig[start:start + 9 * orig_rate]
        assert np.corrcoef(ref, back[: len(ref)])[0, 1] > 0.99


def test_short_recording_is_padded_and_too_short_rejected():
    raw = wav_bytes("pykanto_great_tit_2021-B32-0415_05-11.wav")
    info, clips = make_clips(raw)
    assert info.sample_rate == 22050 and 2.4 < info.seconds < 2.6  # the file, not its sidecar json
    assert len(clips) == 1 and abs(clips[0].seconds - info.seconds) < 0.01
    assert len(read_clip(clips[0].flac)[0]) == 480000
    with pytest.raises(AudioError) as err:
        make_clips(wav_bytes("vocalpy_zebra_finch_WhiLbl0010.wav"), min_seconds=1.0)
    assert err.value.reason == "too_short"


def test_bad_audio_gets_reasons():
    for data, reason in [(b"", "empty_media"), (b"<html><body>Not found</body></html>", "undecodable_audio"),
                         (wav_bytes("pykanto_great_tit_2021-B32-0415_05-11.wav")[:100], None)]:
        with pytest.raises(AudioError) as err:
            make_clips(data)
        if reason:
            assert err.value.reason == reason
    silent = io.BytesIO()
    sf.write(silent, np.zeros(48000 * 3, np.float32), 48000, format="WAV")
    with pytest.raises(AudioError) as err:
        make_clips(silent.getvalue())
    assert err.value.reason == "silent"
    low = io.BytesIO()
    sf.write(low, np.random.default_rng(0).normal(0, 0.1, 5000).astype(np.float32), 1000, format="WAV")
    with pytest.raises(AudioError) as err:
        make_clips(low.getvalue())
    assert err.value.reason == "sample_rate_too_low"


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("WAV", "PCM_U8")])
def test_flac_ogg_and_8bit_wav_decode(fmt, subtype):
    raw = wav_bytes("pykanto_great_tit_2021-B32-0415_05-11.wav")
    x, rate = sf.read(io.BytesIO(raw), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    info, clips = make_clips(buf.getvalue())
    assert info.sample_rate == rate and abs(info.seconds - len(x) / rate) < 0.05
    back = soxr.resample(read_clip(clips[0].flac)[0], 48000, rate)[: len(x)]
    assert np.corrcoef(x, back)[0, 1] > 0.95


def test_mp3_and_m4a_decode():
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(44100 * 4) / 44100)).astype(np.float32)
    mp3 = io.BytesIO()
    sf.write(mp3, tone, 44100, format="MP3")
    info, clips = make_clips(mp3.getvalue())
    assert info.sample_rate == 44100 and len(clips) == 1
    m4a = io.BytesIO()
    with av.open(m4a, "w", format="mp4") as out:  # AAC in M4A, as phones upload to iNaturalist
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info, clips = make_clips(m4a.getvalue())
    assert info.sample_rate == 44100 and 3.5 < info.seconds < 4.5
    x, _ = read_clip(clips[0].flac)
    spectrum = np.abs(np.fft.rfft(x[:48000]))
    assert abs(np.argmax(spectrum) - 1000) <= 2  # the 1 kHz tone survives decode and resampling


def test_select_windows_prefers_energy_and_never_overlaps():
    env = np.full(200, 1e-6)
    env[120:140] = 1.0
    env[20:30] = 0.5
    starts = select_windows(env, clip_hops=40, max_clips=3)
    assert len(starts) >= 2
    assert any(s <= 120 and s + 40 >= 140 for s in starts)
    assert all(abs(a - b) >= 40 for a in starts for b in starts if a != b)
    assert select_windows(np.ones(10), 40, 3) == [0]
    assert select_windows(np.zeros(0), 40, 3) == []


def _jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_images_orientation_cmyk_and_resize():
    img = Image.new("RGB", (400, 200), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    out, size = prepare_image(_jpeg(img, exif=exif), longest_side=100)
    got = Image.open(io.BytesIO(out))
    assert size == (400, 200) and got.size == (50, 100) and got.mode == "RGB"
    out, _ = prepare_image(_jpeg(Image.new("CMYK", (64, 64), (0, 255, 255, 0))), 64)
    r, g, b = Image.open(io.BytesIO(out)).getpixel((32, 32))
    assert r > 200 and g < 60 and b < 60


def test_bad_images_get_reasons():
    for data, reason in [(b"", "empty_media"), (b"<html>oops</html>", "undecodable_image"),
                         (_jpeg(Image.new("RGB", (64, 64)))[:200], "undecodable_image")]:
        with pytest.raises(ImageError) as err:
            prepare_image(data)
        assert err.value.reason == reason
    with pytest.raises(ImageError) as err:  # 50,000 x 50,000: rejected before decoding
        prepare_image(bomb_png())
    assert err.value.reason == "image_too_large"


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 7, 8, 12])
def test_mono_mix_is_numpys_channel_mean_bit_for_bit(channels):
    """The column-by-column mix gives exactly numpy's mean, so PCM hashes do not depend on which is used."""
    from bestiary.media.audio import _mono
    block = np.random.default_rng(channels).uniform(-1, 1, (48_000, channels)).astype(np.float32)
    assert np.array_equal(_mono(block), block.mean(axis=1))
    assert _mono(block).dtype == np.float32
