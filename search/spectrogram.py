"""A window as a picture: a log-mel spectrogram PNG (for the explore page), and as a playable WAV."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def spectrogram_png(samples: np.ndarray, rate: int, height: int = 128, width: int = 480,
                    fmax: float = 16000.0) -> bytes:
    """Log-mel power, 80 dB of range, time left to right and low frequencies at the bottom."""
    import librosa
    from PIL import Image
    from matplotlib import colormaps

    mel = librosa.feature.melspectrogram(y=np.asarray(samples, np.float32), sr=rate, n_fft=1024,
                                         hop_length=max(1, len(samples) // width), n_mels=height,
                                         fmax=min(fmax, rate / 2))
    db = librosa.power_to_db(mel, ref=max(float(mel.max()), 1e-10), top_db=80.0)
    scaled = (db + 80.0) / 80.0
    rgb = (colormaps["magma"](scaled[::-1])[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb).resize((width, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV: what every browser's <audio> plays."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, np.float32), -1, 1), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
