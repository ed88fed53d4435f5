"""A deterministic archive generated from a seed: records in the archives' formats, and their media.

Sounds and images follow the taxonomy (family: frequency band and palette;
genus: call pattern and shape; species: pitch, rhythm and colour offsets), so a
model trained on the sample archive learns something real, and an unseen
species can be placed by its genus and family.
"""
from __future__ import annotations

import colorsys
import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageDraw, ImageFilter

from bestiary.sample_archive.species import DEMO, Species, World
from bestiary.sample_archive.world import Difficulty

XC_LICENSES = ["//creativecommons.org/licenses/by-nc-sa/4.0/", "//creativecommons.org/licenses/by-sa/4.0/",
               "//creativecommons.org/licenses/by-nc-nd/4.0/", "//creativecommons.org/licenses/by/4.0/",
               "//creativecommons.org/licenses/by-nc-sa/3.0/"]
INAT_LICENSES = ["cc-by-nc", "cc-by", "cc0", "cc-by-nc-sa", None]
SOUND_TYPES = ["song", "call", "call, flight call", "alarm call", "song, call"]
RECORDISTS = ["Ana Souza", "Jonas Berg", "Mei Tanaka", "Oluwaseun Adeyemi", "Chloé Martin", "Rafael Ortiz"]
COUNTRIES = [("United States", "US", 40.0, -95.0), ("Germany", "DE", 51.0, 10.0), ("Japan", "JP", 36.0, 138.0),
             ("Brazil", "BR", -15.0, -50.0), ("France", "FR", 46.5, 2.5)]


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def species_position(sp: Species) -> float:
    """Where a species sits inside its genus, 0..1, so siblings differ but stay close."""
    return sp.position


@dataclass
class Recording:
    """One audio item the archive holds, whichever archive serves it."""
    archive: str
    id: int
    species: Species
    seconds: float
    rate: int
    channels: int
    fmt: str                 # "mp3" | "wav"
    license: str | None
    date: str
    uploaded: str
    lat: float
    lon: float
    country: str
    country_code: str
    recordist: str
    sound_type: str
    quality: str
    remarks: str
    also: list[str] = field(default_factory=list)
    observation: int | None = None
    mirror_of: tuple[str, int, int] | None = None  # (archive, id, rate) of the recording this re-uploads
    given: dict | None = None  # the archive's own naming when it differs: {"name", "common", "code", "ssp"}


@dataclass
class Photo:
    archive: str
    id: int
    species: Species
    license: str | None
    width: int
    height: int
    observation: int | None = None


@dataclass
class Observation:
    id: int
    species: Species
    date: str
    updated: str
    lat: float
    lon: float
    obscured: bool
    user: str
    sounds: list[Recording]
    photos: list[Photo]
    description: str | None


@dataclass
class Archive:
    seed: int
    species: list[Species]
    xc: list[Recording]
    inat: list[Observation]
    ml_audio: list[Recording]
    ml_photos: list[Photo]
    gbif_audio: list[Recording] = field(default_factory=list)  # sound archives only GBIF publishes
    world: World = field(default_factory=lambda: DEMO)
    difficulty: Difficulty = Difficulty()

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.species}
        recs = self.xc + self.ml_audio + self.gbif_audio + [s for o in self.inat for s in o.sounds]
        photos = self.ml_photos + [p for o in self.inat for p in o.photos]
        self.recordings = {(r.archive, r.id): r for r in recs}
        self.photos = {(p.archive, p.id): p for p in photos}


def _date(rng: np.random.Generator, unknown_parts: bool = False) -> str:
    y, m, d = int(rng.integers(2008, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    if unknown_parts and rng.random() < 0.08:
        return f"{y}-{m:02d}-00" if rng.random() < 0.5 else f"{y}-00-00"
    return f"{y}-{m:02d}-{d:02d}"


def _seconds(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.06:
        return round(float(rng.uniform(3, 5)), 2)
    if u < 0.94:
        return round(float(rng.uniform(5, 30)), 2)
    return round(float(rng.uniform(45, 90)), 2)


def _recording(archive: str, rid: int, sp: Species, rng: np.random.Generator, licenses: list, wav_share: float,
               all_sp: list[Species], observation: int | None = None) -> Recording:
    country, code, lat0, lon0 = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
    others = [s.name for s in all_sp if s.klass == sp.klass and s.name != sp.name]
    remarks = "" if rng.random() < 0.5 else "Recorded at dawn near a stream.\r\n\r\nLight wind."
    return Recording(
        archive=archive, id=rid, species=sp, seconds=_seconds(rng),
        rate=int(rng.choice([22050, 32000, 44100, 48000])), channels=int(rng.choice([1, 2])),
        fmt="wav" if rng.random() < wav_share else "mp3",
        license=licenses[int(rng.integers(len(licenses)))], date=_date(rng, unknown_parts=True),
        uploaded=_date(rng), lat=round(lat0 + float(rng.normal(0, 3)), 4), lon=round(lon0 + float(rng.normal(0, 3)), 4),
        country=country, country_code=code, recordist=RECORDISTS[int(rng.integers(len(RECORDISTS)))],
        sound_type=str(rng.choice(SOUND_TYPES)), quality=str(rng.choice(list("ABCDE"))), remarks=remarks,
        also=[str(rng.choice(others))] if others and rng.random() < 0.3 else [], observation=observation,
    )


def build_archive(seed: int = 7, scale: float = 1.0, max_seconds: float | None = None,
                  audio_format: str | None = None, world: World = DEMO,
                  difficulty: Difficulty = Difficulty(), max_rate: int | None = None) -> Archive:
    """The whole archive's metadata; media are rendered on demand from the same seed.

    `max_seconds`, `audio_format` ("wav" or "mp3") and `max_rate` (mono, at most this sample rate) make
    lighter archives for benchmarks; `world` (default:
    the demo's 34 species) and `difficulty` make bigger, harder ones (world.py)."""
    species = world.species
    rng = _rng("archive", seed)
    xc, inat, ml_audio, ml_photos = [], [], [], []
    per = lambda lo, hi: max(1, int(round(int(rng.integers(lo, hi + 1)) * scale)))  # noqa: E731
    for sp in species:
        for _ in range(per(4, 7)):
            xc.append(_recording("xc", 0, sp, rng, XC_LICENSES, 0.2, species))
        for _ in range(per(3, 4)):
            o = Observation(id=0, species=sp, date=_date(rng), updated="", lat=0, lon=0,
                            obscured=bool(rng.random() < 0.15), user=RECORDISTS[int(rng.integers(len(RECORDISTS)))].lower().replace(" ", "_"),
                            sounds=[], photos=[], description=None if rng.random() < 0.6 else "Heard and seen at the edge of the wood.")
            if rng.random() < 0.8:
                o.sounds.append(_recording("inat", 0, sp, rng, INAT_LICENSES, 0.4, species))
            for _ in range(int(rng.integers(1, 3))):
                o.photos.append(Photo("inat", 0, sp, INAT_LICENSES[int(rng.integers(4))],
                                      *[(256, 256), (320, 240), (240, 320), (400, 300)][int(rng.integers(4))]))
            inat.append(o)
        if sp.code:
            for _ in range(per(1, 2)):
                ml_audio.append(_recording("ml", 0, sp, rng, [None], 0.0, species))
            for _ in range(per(2, 2)):
                ml_photos.append(Photo("ml", 0, sp, None, 480, 320))
    # ids are handed out in a shuffled order so species interleave in id space, as in a real archive
    for items, start in ((xc, 600000), (inat, 90000000), (ml_audio, 400000000), (ml_photos, 410000000)):
        for new_id, idx in enumerate(rng.permutation(len(items))):
            items[idx].id = start + new_id * 7
    sounds = [s for o in inat for s in o.sounds]
    photos = [p for o in inat for p in o.photos]
    for items, start in ((sounds, 200000), (photos, 300000000)):
        for new_id, idx in enumerate(rng.permutation(len(items))):
            items[idx].id = start + new_id * 3
    _add_mirrors(xc, ml_audio, rng)
    for o in inat:
        country, code, lat0, lon0 = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        o.lat, o.lon = round(lat0 + float(rng.normal(0, 3)), 5), round(lon0 + float(rng.normal(0, 3)), 5)
        o.updated = f"{o.date}T12:00:00+00:00"
        for item in o.sounds + o.photos:
            item.observation = o.id
    gbif_rng = _rng("gbif", seed)  # its own stream: the other archives stay as they were
    gbif_audio = [_recording("gbif", 700000 + 11 * i, sp, gbif_rng, ["http://creativecommons.org/licenses/by/4.0/legalcode"],
                             1.0, species) for i, sp in enumerate(species[::4])]
    _name_as_archives_do(xc, ml_audio)
    for rec in xc + ml_audio + gbif_audio + [snd for o in inat for snd in o.sounds]:
        if max_seconds:
            rec.seconds = min(rec.seconds, max_seconds)
        if audio_format:
            rec.fmt = audio_format
        if max_rate:
            rec.rate, rec.channels = min(rec.rate, max_rate), 1
    return Archive(seed, species, sorted(xc, key=lambda r: r.id), sorted(inat, key=lambda o: o.id),
                   sorted(ml_audio, key=lambda r: r.id), sorted(ml_photos, key=lambda p: p.id), gbif_audio,
                   world, difficulty)


def _add_mirrors(xc: list[Recording], ml_audio: list[Recording], rng: np.random.Generator) -> None:
    """Some Xeno-canto recordings also sit in the Macaulay-style archive, as in real life:
    every other one re-encoded at another sample rate (a near duplicate), the rest the same
    PCM (an exact duplicate).  A dataset must keep each once."""
    birds = sorted({r.species.name for r in xc if r.species.code})
    next_id = max((r.id for r in ml_audio), default=400000000) + 7
    for n, name in enumerate(birds[::6]):
        orig = min((r for r in xc if r.species.name == name), key=lambda r: r.id)
        rate = orig.rate if n % 2 else {22050: 32000, 32000: 44100, 44100: 48000, 48000: 44100}[orig.rate]
        ml_audio.append(Recording(**{**orig.__dict__, "archive": "ml", "id": next_id, "rate": rate, "license": None,
                                     "mirror_of": ("xc", orig.id, orig.rate), "also": []}))
        next_id += 7


# Names as the archives really write them: older names (synonyms), subspecies, a misspelling, and eBird
# codes for a spuh, a hybrid and a subspecies group.  Every one is real taxonomy (eBird/Clements v2025).
SYNONYMS = {"Dryophytes versicolor": "Hyla versicolor", "Spinus spinus": "Carduelis spinus",
            "Haemorhous mexicanus": "Carpodacus mexicanus"}
MISSPELLED = {"Catharus guttatus": "Catharus guttatas"}
EBIRD_EXTRA = [("chicka1", "Poecile sp.", "chickadee sp."),
               ("x00195", "Poecile carolinensis x atricapillus", "Carolina x Black-capped Chickadee (hybrid)")]


def _name_as_archives_do(xc: list[Recording], ml_audio: list[Recording]) -> None:
    for r in xc:
        if r.species.name in SYNONYMS and r.id % 2 == 0:
            r.given = {"name": SYNONYMS[r.species.name]}
        elif r.species.name == "Parus major" and r.id % 3 == 0:
            r.given = {"ssp": "major"}
        elif r.species.name in MISSPELLED and r.id % 2 == 0:
            r.given = {"name": MISSPELLED[r.species.name]}
    great = [r for r in ml_audio if r.species.name == "Parus major" and r.mirror_of is None]
    if great:
        great[0].given = {"name": "Parus major [major Group]", "common": "Great Tit (Great)", "code": "gretit3"}
    chickadees = [r for r in ml_audio if r.species.name == "Poecile atricapillus"]
    next_id = max((r.id for r in ml_audio), default=400000000) + 7
    for i, (code, name, common) in enumerate(EBIRD_EXTRA if chickadees else []):
        ml_audio.append(Recording(**{**chickadees[0].__dict__, "id": next_id + 7 * i, "mirror_of": None,
                                     "given": {"name": name, "common": common, "code": code}}))


# ---------------------------------------------------------------- sound

def _note(pattern: str, f0: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    if pattern == "whistle":
        sig = np.sin(2 * np.pi * f0 * t)
    elif pattern in ("sweep_down", "sweep_up"):
        f1, f2 = (f0 * 1.35, f0 * 0.75) if pattern == "sweep_down" else (f0 * 0.75, f0 * 1.35)
        phase = 2 * np.pi * (f1 * t + (f2 - f1) * t ** 2 / (2 * max(dur, 1e-3)))
        sig = np.sin(phase)
    elif pattern == "trill":
        sig = np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 28 * t)))
    elif pattern == "warble":
        sig = np.sin(2 * np.pi * f0 * t + (f0 * 0.08 / 9) * np.sin(2 * np.pi * 9 * t))
    elif pattern == "harmonic":
        sig = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    elif pattern == "buzz":
        carrier = np.sin(2 * np.pi * f0 * t)
        sig = carrier * (np.sin(2 * np.pi * 70 * t) > 0.3)
    else:
        raise ValueError(pattern)
    env = np.hanning(len(t)) if len(t) > 2 else np.ones(len(t))
    return (sig * env).astype(np.float32)


def _phrases(sp: Species, seconds: float, sr: int, rng: np.random.Generator, out: np.ndarray, wobble: float,
             jitter: tuple[float, float] = (1.0, 1.0), gain: float = 1.0) -> None:
    """A species' phrases added into `out`: pitch from its family band and place in the genus (times the
    recording's `wobble`), notes per phrase and tempo from that place; `jitter` (pitch, tempo) is an
    individual's spread."""
    pos = species_position(sp)
    lo, hi = sp.band
    f0 = (lo + (hi - lo) * (0.15 + 0.7 * pos)) * wobble * jitter[0]
    notes = 2 + int(round(pos * 4))                     # species: notes per phrase
    note_dur = {"harmonic": 0.35, "buzz": 0.25}.get(sp.pattern, 0.08 + 0.12 * pos) * jitter[1]
    gap = (0.04 + 0.1 * (1 - pos)) * jitter[1]
    n = len(out)
    t = float(rng.uniform(0.2, 1.0))
    while t < seconds - 0.5:
        for k in range(notes):
            start = int((t + k * (note_dur + gap)) * sr)
            f = f0 * (1.0 if k % 2 == 0 or sp.pattern != "whistle" else 0.8)
            note = _note(sp.pattern, f, note_dur, sr, rng) * float(rng.uniform(0.25, 0.5)) * gain
            end = min(n, start + len(note))
            if start >= n:
                break
            out[start:end] += note[: end - start]
        t += notes * (note_dur + gap) + float(rng.uniform(0.8, 2.5))


def _filtered(x: np.ndarray, cutoff: float, sr: int, kind: str = "lowpass") -> np.ndarray:
    from scipy.signal import butter, sosfilt
    return sosfilt(butter(2, min(cutoff, sr * 0.45), btype=kind, fs=sr, output="sos"), x).astype(np.float32)


def _field_noise(n: int, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Brown-ish background (wind, distant traffic) with slow gusts, at `level` peak."""
    white = rng.normal(0, 1, n).astype(np.float32)
    bed = _filtered(white, 600.0, sr) * 4 + white * 0.15
    gust = 0.6 + 0.4 * np.sin(2 * np.pi * float(rng.uniform(0.05, 0.3)) * np.arange(n) / sr + float(rng.uniform(0, 6)))
    bed *= gust.astype(np.float32)
    return (bed / (np.abs(bed).max() + 1e-9) * level).astype(np.float32)


def synth_audio(rec: Recording, difficulty: Difficulty | None = None,
                others: dict[str, Species] | None = None) -> np.ndarray:
    """(frames, channels) float32 in [-1, 1] for a recording, from its species and id; with a difficulty,
    field conditions drawn for this recording on their own random stream (the clean sound stays as it was).
    `others` names the species a background species (`also`) can be voiced by."""
    if rec.mirror_of:  # the original's sound, resampled to this copy's rate
        archive, rid, rate = rec.mirror_of
        orig = synth_audio(Recording(**{**rec.__dict__, "archive": archive, "id": rid, "rate": rate, "mirror_of": None}),
                           difficulty, others)
        return orig if rate == rec.rate else soxr.resample(orig, rate, rec.rate).astype(np.float32)
    sp, sr = rec.species, rec.rate
    rng = _rng("audio", rec.archive, rec.id)
    wobble = float(rng.uniform(0.98, 1.02))
    n = int(rec.seconds * sr)
    out = (rng.normal(0, 1, n) * 0.004).astype(np.float32)  # quiet background
    d = difficulty if difficulty is not None and difficulty.any() else None
    if d is None:
        _phrases(sp, rec.seconds, sr, rng, out, wobble)
    else:
        conds = _rng("field", rec.archive, rec.id)
        v = d.variation
        jitter = (1 + float(conds.uniform(-v, v)), 1 + float(conds.uniform(-v, v)))
        calls = np.zeros(n, np.float32)
        _phrases(sp, rec.seconds, sr, rng, calls, wobble, jitter)
        if conds.random() < d.distance:   # far away: quieter, and the highs lost on the way
            calls = _filtered(calls, float(conds.uniform(1500, 4000)), sr) * float(conds.uniform(0.15, 0.4))
        out += calls
        back = (others or {}).get(rec.also[0]) if rec.also else None
        if back is not None and conds.random() < d.overlap:   # the background species is heard too
            _phrases(back, rec.seconds, sr, conds, out, float(conds.uniform(0.98, 1.02)),
                     gain=float(conds.uniform(0.3, 0.8)))
        if d.noise:
            out += _field_noise(n, sr, 0.4 * d.noise * float(conds.uniform(0.4, 1.0)), conds)
        if d.recorder:   # the recordist's kit, the same on every one of their recordings
            kit = _rng("recorder", rec.recordist)
            cut, level, drive = float(kit.uniform(80, 1200)), float(kit.uniform(0.5, 1.6)), float(kit.uniform(1, 4))
            out = _filtered(out, cut * d.recorder, sr, "highpass")
            out = (np.tanh(out * level * (1 + (drive - 1) * d.recorder)) / np.tanh(drive)).astype(np.float32)
    out = np.clip(out, -1, 1)
    if rec.channels == 2:
        return np.stack([out, out * 0.9], axis=1)
    return out[:, None]


def render_audio(rec: Recording, difficulty: Difficulty | None = None,
                 others: dict[str, Species] | None = None) -> tuple[bytes, str]:
    """Encoded bytes and content type for a recording (MP3 or WAV)."""
    data = synth_audio(rec, difficulty, others)
    buf = io.BytesIO()
    if rec.fmt == "wav":
        sf.write(buf, data, rec.rate, format="WAV", subtype="PCM_16")
        return buf.getvalue(), "audio/x-wav"
    sf.write(buf, data, rec.rate, format="MP3")
    return buf.getvalue(), "audio/mpeg"


# ---------------------------------------------------------------- image

def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)


SHAPES_ALL = ("circle", "square", "triangle", "diamond")


def render_image(photo: Photo, width: int | None = None, difficulty: Difficulty | None = None) -> bytes:
    """A JPEG: family palette for the background, genus shape, species colour and stripes; with weak image
    cues (difficulty.image_cues < 1) the species colour fades toward the family's, the stripes may be hidden
    and a distractor shape may stand in the picture (drawn on their own random stream)."""
    cues = difficulty.image_cues if difficulty is not None else 1.0
    sp = photo.species
    rng = _rng("image", photo.archive, photo.id)
    w, h = photo.width, photo.height
    if width:
        w, h = width, max(1, int(round(photo.height * width / photo.width)))
    pos = species_position(sp)
    bg = np.zeros((h, w, 3), np.float32)
    top, bottom = np.array(_rgb(sp.hue, 0.25, 0.9)), np.array(_rgb(sp.hue + 20, 0.35, 0.6))
    ramp = np.linspace(0, 1, h)[:, None, None]
    bg[:] = top * (1 - ramp) + bottom * ramp
    bg += rng.normal(0, 10, bg.shape)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = min(w, h) * float(rng.uniform(0.22, 0.32))
    cx, cy = w * float(rng.uniform(0.35, 0.65)), h * float(rng.uniform(0.35, 0.65))
    weak = _rng("image-cues", photo.archive, photo.id) if cues < 1 else None
    if weak is not None and weak.random() > cues:   # something else in the frame, of any shape and colour
        dr = r * float(weak.uniform(0.4, 0.9))
        _shape(draw, SHAPES_ALL[int(weak.integers(4))], w * float(weak.uniform(0.1, 0.9)), h * float(weak.uniform(0.1, 0.9)),
               dr, _rgb(float(weak.uniform(0, 360)), 0.7, 0.6))
    if weak is None:
        body = _rgb(sp.hue + 180 + 90 * (pos - 0.5), 0.75, 0.55 + 0.3 * pos)
    else:   # the species' own colour blended toward one shared by its family
        blend = cues * float(weak.uniform(0.5, 1.0))
        body = _rgb(sp.hue + 180 + 90 * (pos - 0.5) * blend, 0.75, 0.7 + (0.55 + 0.3 * pos - 0.7) * blend)
    _shape(draw, sp.shape, cx, cy, r, body)
    stripes = int(round(pos * 3)) if weak is None or weak.random() < cues else 0
    for k in range(stripes):
        y = cy - r * 0.5 + k * r * 0.45
        draw.rectangle([cx - r * 0.6, y, cx + r * 0.6, y + r * 0.12], fill=_rgb(sp.hue, 0.1, 0.95))
    _shape(draw, "circle", cx + r * 0.35, cy - r * 0.35, r * 0.1, (20, 20, 20))  # an eye
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def describe(archive: Archive) -> dict:
    """Counts for the README and tests."""
    return {
        "species": len(archive.species),
        "genera": len({s.genus for s in archive.species}),
        "families": len({s.family for s in archive.species}),
        "xeno_canto_recordings": len(archive.xc),
        "inaturalist_observations": len(archive.inat),
        "inaturalist_sounds": sum(len(o.sounds) for o in archive.inat),
        "inaturalist_photos": sum(len(o.photos) for o in archive.inat),
        "macaulay_audio": len(archive.ml_audio),
        "macaulay_photos": len(archive.ml_photos),
        "audio_hours": round(sum(r.seconds for r in archive.recordings.values()) / 3600, 2),
        "seconds_range": [min(r.seconds for r in archive.recordings.values()),
                          max(r.seconds for r in archive.recordings.values())],
    }
