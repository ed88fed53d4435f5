"""An embedding index over windows of recordings: built from a folder of files (soundscapes hours long
included) or from a built dataset's shards, searched by text, by example, or both, with filters.

```python
from bestiary.search import Index
index = Index.create("idx/", "run/checkpoint.pt")        # or Index.open("idx/") to add to / search one
index.add_files(["site3/2024-05-01.wav"])                  # windows, embedded in batches, saved
index.add_shards("OUT/shards")                             # every sample, with its species and licence
hits = Index.open("idx/").search_text("owl hooting at night", top=10, species=["Strix aluco"])
hits[0]   # {'rank': 1, 'score': 0.41, 'path': ..., 'offset_s': 35.0, 'seconds': 10.0, 'species': ..., ...}
```

Layout of an index folder: `index.json` (format, model and its sha256, window and hop, the next id),
`vectors.usearch` (the HNSW graph), `windows/part-*.parquet` (one row per window: where it is and what is
known of it) and `sources.parquet` (files and shards already indexed, so a rerun embeds only new ones).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bestiary.schemas.records import date_and_precision
from bestiary.search.store import FILE as VECTORS, VectorStore
from bestiary.search.windows import stream_windows, window_starts

FORMAT = "bestiary-index/1"
AUDIO_EXT = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".aif", ".aiff"}

WINDOWS = pa.schema([
    ("id", pa.uint64()), ("origin", pa.string()), ("path", pa.string()),
    ("member_offset", pa.int64()), ("member_size", pa.int64()),   # the FLAC member inside a shard's tar
    ("sample_key", pa.string()), ("split", pa.string()),
    ("offset_s", pa.float64()), ("seconds", pa.float64()), ("rms_db", pa.float32()),
    ("species", pa.string()), ("common_name", pa.string()), ("license", pa.string()),
    ("attribution", pa.string()), ("recorded_on", pa.string()), ("lat", pa.float64()), ("lon", pa.float64()),
    ("captions", pa.list_(pa.string())),
])
SOURCES = pa.schema([("path", pa.string()), ("kind", pa.string()), ("version", pa.string()),
                     ("windows", pa.int64())])


class SearchError(ValueError):
    """An index that cannot be built or searched as asked (the CLI prints it in one line, exit 2)."""


def model_sha256(path: str) -> str:
    """What identifies a model: the checkpoint's bytes, or an export's weights."""
    from bestiary.training import storage
    target = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    try:
        return hashlib.sha256(storage.read_bytes(target)).hexdigest()
    except FileNotFoundError:
        raise SearchError(f"no model at {path} (a checkpoint.pt or a folder `bestiary export` wrote)") from None


def date_key(value: str | None) -> str | None:
    """A date of any precision as a comparable ISO day (partial dates count as their first day)."""
    day, _ = date_and_precision(str(value).strip() if value else None)
    return day.isoformat() if day else None


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(x) for x in text.split(","))
    except ValueError:
        raise SearchError(f"--bbox wants W,S,E,N in degrees, got {text!r}") from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
        raise SearchError(f"--bbox {text!r}: longitudes in [-180, 180], latitudes in [-90, 90], south <= north")
    return w, s, e, n


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class Index:
    """A folder of window embeddings.  Create or open it, add files or shards, search it."""

    def __init__(self, path: str, meta: dict, model=None):
        self.path, self.meta, self._model = path, meta, model
        self.store = VectorStore(meta["dim"], os.path.join(path, VECTORS))
        self._drop_unsaved()
        parts = sorted(glob.glob(os.path.join(path, "windows", "part-*.parquet")))
        self.windows = pa.concat_tables([pq.read_table(p, schema=WINDOWS) for p in parts]) if parts \
            else WINDOWS.empty_table()
        src = os.path.join(path, "sources.parquet")
        self.sources = {r["path"]: r for r in pq.read_table(src).to_pylist()} if os.path.exists(src) else {}
        self._new: list[pa.Table] = []
        self._removed: set[int] = set()

    # ------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str, model_path: str, window_s: float | None = None, hop_s: float | None = None,
               device: str = "cpu") -> "Index":
        """A new index for this model, or the one already at `path` (which must be for the same model)."""
        if os.path.exists(os.path.join(path, "index.json")):
            index = cls.open(path, device=device)
            if index.meta["model_sha256"] != model_sha256(model_path):
                raise SearchError(f"{path} was built with another model ({index.meta['model']}); "
                                  "index into a new folder")
            for name, want in (("window_s", window_s), ("hop_s", hop_s)):
                if want is not None and abs(index.meta[name] - want) > 1e-9:
                    raise SearchError(f"{path} has {name} {index.meta[name]}, not {want}; index into a new folder")
            return index
        from bestiary.training.inference import Model
        model = Model.load(model_path, device)
        window = float(window_s or model.cfg.clip_seconds)
        hop = float(hop_s or window / 2)
        if window <= 0 or hop <= 0:
            raise SearchError("--window and --hop must be positive")
        dim = int(model.embed_texts(["x"]).shape[1])
        meta = {"format": FORMAT, "model": os.path.abspath(model_path) if "://" not in model_path else model_path,
                "model_sha256": model_sha256(model_path), "dim": dim, "sample_rate": model.cfg.sample_rate,
                "window_s": window, "hop_s": hop, "next_id": 0, "windows": 0}
        os.makedirs(os.path.join(path, "windows"), exist_ok=True)
        _write_atomic(os.path.join(path, "index.json"), json.dumps(meta, indent=2).encode())
        return cls(path, meta, model)

    @classmethod
    def open(cls, path: str, model=None, device: str = "cpu") -> "Index":
        try:
            with open(os.path.join(path, "index.json")) as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise SearchError(f"no index at {path} (make one with `bestiary index`)") from None
        if meta.get("format") != FORMAT:
            raise SearchError(f"{path}: not a bestiary index (format {meta.get('format')!r})")
        index = cls(path, meta, model)
        index._device = device
        return index

    @property
    def model(self):
        if self._model is None:
            from bestiary.training.inference import Model
            self._model = Model.load(self.meta["model"], getattr(self, "_device", "cpu"))
        return self._model

    def __len__(self) -> int:
        return self.windows.num_rows + sum(t.num_rows for t in self._new) - len(self._removed)

    def _drop_unsaved(self) -> None:
        """Leftovers of a run killed before it saved: parts and vectors past the saved next id."""
        nxt = self.meta["next_id"]
        for p in glob.glob(os.path.join(self.path, "windows", "part-*.parquet")):
            if int(os.path.basename(p)[5:17]) >= nxt:
                os.remove(p)
        if len(self.store):
            keys = np.asarray(self.store.index.keys, np.uint64)
            self.store.remove(keys[keys >= nxt])

    # ------------------------------------------------------------ adding

    def add_files(self, files: Iterable[str], batch: int = 32, progress: bool = False) -> dict:
        """Embed every window of these audio files; files indexed before and unchanged are skipped, changed
        ones are re-embedded.  Returns counts and the files that could not be read (path, reason)."""
        todo, skipped = [], 0
        for f in files:
            p = os.path.abspath(f)
            try:
                st = os.stat(p)
            except OSError as err:
                raise SearchError(f"{f}: {err.strerror}") from None
            version = f"{st.st_size}:{st.st_mtime_ns}"
            old = self.sources.get(p)
            if old and old["version"] == version:
                skipped += 1
                continue
            if old:
                self._remove_where(pc.equal(self.windows["path"], p))
            todo.append((p, version))
        from bestiary.search.windows import duration_seconds
        total = sum(self._windows_in(duration_seconds(p) or 0) for p, _ in todo)
        errors, added = [], 0
        bar = _bar(total, "windows", progress)
        for p, version in todo:
            rows = {"origin": "file", "path": p, "member_offset": -1, "member_size": -1}
            try:
                n = self._embed(stream_windows(p, self.meta["sample_rate"], self.meta["window_s"],
                                               self.meta["hop_s"]), rows, batch, bar)
            except Exception as err:  # one unreadable file is a reported error, never the end of the run
                errors.append({"path": p, "reason": _reason(err)})
                continue
            self.sources[p] = {"path": p, "kind": "file", "version": version, "windows": n}
            added += n
        bar.close()
        self.save()
        return {"files": len(todo) - len(errors), "skipped": skipped, "windows": added, "errors": errors}

    def add_shards(self, spec: str, splits: tuple[str, ...] = ("train", "val", "test", "unseen"),
                   batch: int = 32, progress: bool = False) -> dict:
        """Embed every live sample of a built dataset (its clips, windowed), with species, licence, date,
        place and captions from the sample's json.  Shards indexed before are skipped; samples tombstoned
        since are removed."""
        from bestiary.training import storage
        from bestiary.training.data import read_manifest
        from bestiary.training.tombstones import Tombstones
        manifest = read_manifest(spec)
        base = spec if not spec.endswith(".json") else os.path.dirname(spec)
        tombs = Tombstones(storage.join(base, "manifest.json"), manifest)
        if tombs and self.windows.num_rows:   # one shard's tombstones at a time
            paths, keys = self.windows["path"], self.windows["sample_key"]
            gone = None
            for file in tombs.files():
                here = pc.and_(pc.equal(paths, storage.join(base, file)),
                               pc.is_in(keys, value_set=pa.array(sorted(tombs.of(file)), pa.string())))
                gone = here if gone is None else pc.or_(gone, here)
            self._remove_where(gone)
        entries = [s for s in manifest.shards_of(splits) if self.sources.get(storage.join(base, s.file), {})
                   .get("version") != s.sha256]
        bar = _bar(sum(s.samples for s in entries) * self._windows_in(manifest.clip_seconds), "windows", progress)
        added, errors = 0, []
        for entry in entries:
            url = storage.join(base, entry.file)
            n = 0
            try:
                dead = tombs.of(entry.file)
                for key, meta, offset, size, flac in _shard_samples(url):
                    if key in dead:
                        continue
                    rows = {"origin": "shard", "path": url, "member_offset": offset, "member_size": size,
                            "sample_key": key, **_sample_fields(meta)}
                    n += self._embed(stream_windows(flac, self.meta["sample_rate"], self.meta["window_s"],
                                                    self.meta["hop_s"]), rows, batch, bar)
            except Exception as err:
                errors.append({"path": url, "reason": _reason(err)})
                continue
            self.sources[url] = {"path": url, "kind": "shard", "version": entry.sha256, "windows": n}
            added += n
        bar.close()
        self.save()
        return {"shards": len(entries) - len(errors), "windows": added, "errors": errors}

    def _windows_in(self, seconds: float) -> int:
        """How many windows a recording this long gets (the progress bar's total)."""
        rate = self.meta["sample_rate"]
        return len(window_starts(int(seconds * rate), int(self.meta["window_s"] * rate),
                                 int(self.meta["hop_s"] * rate)))

    def _embed(self, windows: Iterator, fields: dict, batch: int, bar) -> int:
        import torch
        pending, n = [], 0

        def flush() -> None:
            if not pending:
                return
            with torch.no_grad():
                x = torch.from_numpy(np.stack([w.samples for w in pending])).to(self.model.device)
                vec = self.model.net.encode_audio(x).float().cpu().numpy()
            first = self.meta["next_id"]
            ids = np.arange(first, first + len(pending), dtype=np.uint64)
            self.store.add(ids, vec)
            self.meta["next_id"] = first + len(pending)
            cols = {f.name: [fields.get(f.name)] * len(pending) for f in WINDOWS}
            cols.update(id=ids, offset_s=[w.offset_s for w in pending], seconds=[w.seconds for w in pending],
                        rms_db=[w.rms_db for w in pending])
            self._new.append(pa.table(cols, schema=WINDOWS))
            bar.update(len(pending))
            pending.clear()

        for w in windows:
            pending.append(w)
            n += 1
            if len(pending) >= batch:
                flush()
        flush()
        return n

    def _remove_where(self, mask) -> None:
        gone = self.windows.filter(mask)["id"].to_numpy()
        self.store.remove(gone)
        self._removed.update(int(i) for i in gone)

    def save(self) -> None:
        """Parts first, then the vectors, then index.json: a run killed between them is undone on open."""
        wdir = os.path.join(self.path, "windows")
        os.makedirs(wdir, exist_ok=True)
        if self._removed:  # rewrite the parts that lost rows
            gone = pa.array(sorted(self._removed), pa.uint64())
            for p in sorted(glob.glob(os.path.join(wdir, "part-*.parquet"))):
                t = pq.read_table(p, schema=WINDOWS)
                kept = t.filter(pc.invert(pc.is_in(t["id"], value_set=gone)))
                if kept.num_rows == 0:
                    os.remove(p)
                elif kept.num_rows < t.num_rows:
                    pq.write_table(kept, p + ".tmp")
                    os.replace(p + ".tmp", p)
            self.windows = self.windows.filter(pc.invert(pc.is_in(self.windows["id"], value_set=gone)))
            self._removed.clear()
        if self._new:
            new = pa.concat_tables(self._new)
            first = int(new["id"][0].as_py())
            pq.write_table(new, os.path.join(wdir, f"part-{first:012d}.parquet.tmp"))
            os.replace(os.path.join(wdir, f"part-{first:012d}.parquet.tmp"),
                       os.path.join(wdir, f"part-{first:012d}.parquet"))
            self.windows = pa.concat_tables([self.windows, new])
            self._new = []
        self.store.save(os.path.join(self.path, VECTORS))
        pq.write_table(pa.Table.from_pylist(sorted(self.sources.values(), key=lambda r: r["path"]),
                                            schema=SOURCES), os.path.join(self.path, "sources.parquet"))
        self.meta["windows"] = self.windows.num_rows
        _write_atomic(os.path.join(self.path, "index.json"), json.dumps(self.meta, indent=2).encode())

    # ------------------------------------------------------------ searching

    def search_text(self, text: str, **kw) -> list[dict]:
        return self.search(text=text, **kw)

    def search_audio(self, audio, **kw) -> list[dict]:
        """`audio`: a path, encoded bytes, or (samples, rate)."""
        return self.search(audio=audio, **kw)

    def query_vector(self, text: str | None = None, audio=None) -> np.ndarray:
        """The query as one unit vector: the text's, the audio example's, or their normalized mean."""
        parts = []
        if text:
            parts.append(self.model.embed_texts([text])[0])
        if audio is not None:
            if isinstance(audio, tuple):
                parts.append(self.model.embed_audio(*audio))
            else:
                data = Path(audio).read_bytes() if isinstance(audio, (str, os.PathLike)) else audio
                from bestiary.media.audio import AudioError
                try:
                    tensor, _ = self.model._clip(data)
                except AudioError as err:
                    raise SearchError(f"query audio {audio if isinstance(audio, str) else ''}: {err}") from None
                parts.append(self.model._audio_tensors([tensor])[0])
        if not parts:
            raise SearchError("search needs a text, an audio example, or both")
        v = np.mean(parts, axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def search(self, text: str | None = None, audio=None, top: int = 10, species: list[str] | None = None,
               since: str | None = None, bbox: tuple[float, float, float, float] | None = None,
               vector: np.ndarray | None = None) -> list[dict]:
        """Ranked windows (best first) with where they are, their score (cosine) and what is known of them."""
        if top <= 0:
            raise SearchError("--top must be at least 1")
        q = vector if vector is not None else self.query_vector(text, audio)
        allowed = self._allowed(species, since, bbox)
        ids, scores = self.store.search(q, top, allowed)
        if not len(ids):
            return []
        table = self.windows.filter(pc.is_in(self.windows["id"], value_set=pa.array(ids, pa.uint64())))
        by_id = {r["id"]: r for r in table.to_pylist()}
        out = []
        for rank, (i, s) in enumerate(zip(ids, scores), 1):
            row = by_id.get(int(i))
            if row is None:
                continue
            out.append({"rank": rank, "score": round(float(s), 4), **row})
        return out

    def _days(self) -> pa.Array:
        """Each window's date as an ISO day, parsed once per windows table (not once per search)."""
        if getattr(self, "_days_of", None) is not self.windows:
            self._days_cache = pa.array([date_key(v) for v in self.windows["recorded_on"].to_pylist()], pa.string())
            self._days_of = self.windows
        return self._days_cache

    def _allowed(self, species, since, bbox) -> np.ndarray | None:
        if not (species or since or bbox):
            return None
        t, mask = self.windows, None

        def both(m):
            return m if mask is None else pc.and_(mask, m)
        if species:
            names = pa.array([s.strip().lower() for s in species])
            mask = both(pc.or_(pc.fill_null(pc.is_in(pc.utf8_lower(t["species"]), value_set=names), False),
                               pc.fill_null(pc.is_in(pc.utf8_lower(t["common_name"]), value_set=names), False)))
        if since:
            day = date_key(since)
            if day is None:
                raise SearchError(f"--since wants a date like 2021-05-01, got {since!r}")
            mask = both(pc.fill_null(pc.greater_equal(self._days(), day), False))
        if bbox:
            w, s, e, n = bbox
            lat, lon = t["lat"], t["lon"]
            in_lat = pc.and_(pc.greater_equal(lat, s), pc.less_equal(lat, n))
            in_lon = pc.and_(pc.greater_equal(lon, w), pc.less_equal(lon, e)) if w <= e else \
                pc.or_(pc.greater_equal(lon, w), pc.less_equal(lon, e))   # across the antimeridian
            mask = both(pc.fill_null(pc.and_(in_lat, in_lon), False))
        return t.filter(mask)["id"].to_numpy()

    # ------------------------------------------------------------ a window's audio

    def window_audio(self, row: dict) -> tuple[np.ndarray, int]:
        """The window's samples (mono, at the recording's own rate for files, the clip's for shards)."""
        import io
        import soundfile as sf
        if row["origin"] == "file":
            with sf.SoundFile(row["path"]) as f:
                f.seek(int(row["offset_s"] * f.samplerate))
                x = f.read(int(row["seconds"] * f.samplerate), dtype="float32", always_2d=True)
                return x.mean(axis=1), f.samplerate
        data = _member_bytes(row["path"], row["member_offset"], row["member_size"])
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        lo = int(row["offset_s"] * rate)
        return x[lo:lo + int(row["seconds"] * rate)].mean(axis=1), rate


# ---------------------------------------------------------------- shards

def _shard_samples(url: str):
    """(key, sample json, FLAC member offset, size, FLAC bytes) for each sample of a shard's tar."""
    import tarfile
    from bestiary.training import storage
    local = url if "://" not in url else None
    fh = open(local, "rb") if local else storage.open_url(url)
    with fh, tarfile.open(fileobj=fh, mode="r|" if not local else "r:") as tar:
        current, meta, flac = None, None, None
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key != current:
                if current is not None and meta is not None and flac is not None:
                    yield current, meta, flac[0], flac[1], flac[2]
                current, meta, flac = key, None, None
            if ext == "json":
                meta = json.loads(tar.extractfile(member).read())
            elif ext == "flac":
                flac = (member.offset_data, member.size, tar.extractfile(member).read())
        if current is not None and meta is not None and flac is not None:
            yield current, meta, flac[0], flac[1], flac[2]


def _member_bytes(url: str, offset: int, size: int) -> bytes:
    if "://" not in url:
        with open(url, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    from bestiary.training import storage
    return storage.read_bytes(url)[offset:offset + size]


def _sample_fields(meta: dict) -> dict:
    taxon, loc = meta.get("taxon") or {}, meta.get("location") or {}
    return {"split": meta.get("split"), "species": taxon.get("accepted_name"), "common_name": taxon.get("common_name"),
            "license": meta.get("license"), "attribution": meta.get("attribution") or meta.get("recordist"),
            "recorded_on": meta.get("recorded_on"), "lat": loc.get("lat"), "lon": loc.get("lon"),
            "captions": [c.get("text") for c in meta.get("captions") or [] if c.get("text")]}


def _reason(err: Exception) -> str:
    return getattr(err, "reason", None) or f"{type(err).__name__}: {str(err)[:120]}"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, unit: str, show: bool):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, unit_scale=True, dynamic_ncols=True, desc="index")


def audio_files(path: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise SearchError(f"no such file or folder: {path}")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [str(f) for f in files if f.suffix.lower() in AUDIO_EXT]
