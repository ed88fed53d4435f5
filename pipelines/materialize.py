"""Materialize: one worker writes one whole shard from its records' metadata.

No media passes through a shuffle (img2dataset's pattern): the records of a
shard meet in one group, and the worker reads their clips and images from the
cache.  The tar is written under a temporary name and renamed; the shard's
summary is written after, and doubles as the resume marker: a shard whose
summary names the same task fingerprint is not built again.  Member order,
mtimes and owners are fixed so the same inputs give byte-identical tars.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import tarfile

import apache_beam as beam

import pyarrow as pa

from bestiary.media.audio import AudioError, analyze_audio
from bestiary.media.derived import unpack_clips
from bestiary.media.images import ImageError, prepare_image
from bestiary.pipelines import io
from bestiary.pipelines.killpoints import killpoint
from bestiary.pipelines.plan import sample_key, task_fingerprint
from bestiary.pipelines.tables import write_part
from bestiary.schemas.config import BuildConfig
from bestiary.connectors.licenses import license_url, pair_license
from bestiary.schemas.records import REJECT_SCHEMA, iso_date, TAXON_RANKS, reject
from bestiary.taxonomy.traits import TRAITS

log = logging.getLogger(__name__)
MEMBER_ORDER = ("flac", "jpg", "json", "txt")


def sample_json(rec: dict, clip, info, image_meta: dict, captions: list[dict], key: str, rate: int) -> dict:
    lineage = {r: rec.get(r) for r in TAXON_RANKS}
    pair = pair_license(rec["license"], (image_meta or {}).get("license"))   # the pair's (audio only: its own)
    return {
        "key": key, "source": rec["source"], "source_id": rec["source_id"], "record_key": rec["key"],
        "observation_id": rec["observation_id"], "split": rec["split"],
        "taxon": {"taxon_id": rec["taxon_id"], "accepted_name": rec["accepted_name"],
                  "common_name": rec.get("taxon_common_name"), "lineage": lineage,
                  "lineage_ids": {r: rec.get(f"{r}_id") for r in TAXON_RANKS},
                  "name_as_given": rec["scientific_name"], "resolution": rec.get("method")},
        "traits": {t: (rec.get("traits") or {}).get(t) for t in TRAITS},  # None: the tables do not say
        "license": pair, "license_url": license_url(pair), "attribution": rec.get("attribution"),
        "recordist": rec.get("recordist"),
        "audio": {"license": rec["license"], "license_url": rec.get("license_url") or license_url(rec["license"]),
                  "offset_s": clip.offset_s, "seconds": clip.seconds, "sample_rate": rate,
                  "original_sample_rate": info.sample_rate * info.time_expansion, "original_channels": info.channels,
                  "original_seconds": round(info.seconds / info.time_expansion, 3), "rms_dbfs": clip.rms_db,
                  "ultrasonic_share": info.ultrasonic_share, "time_expansion": info.time_expansion,
                  # kept as it was (ultrasonic: keep), the energy above the target Nyquist is not in the clip
                  "ultrasonic_content_lost": info.time_expansion == 1 and info.ultrasonic_share > 0.01,
                  "pcm_sha256": rec.get("pcm_sha256")},
        "image": image_meta,
        "captions": captions,
        "location": {"lat": rec.get("lat"), "lon": rec.get("lon"), "country": rec.get("country")},
        "recorded_on": iso_date(rec.get("recorded_on"), rec.get("recorded_on_precision")), "sound_type": rec.get("sound_type"), "quality": rec.get("quality"),
        "background_species": rec.get("background_species") or [],
    }


def member_header(name: str, size: int) -> bytes:
    """A USTAR header with fixed mtime, mode and owners (tarfile's own encoder)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


class TarStream:
    """Writes a WebDataset tar member by member to a file object, hashing as it goes.

    Headers come from tarfile; bodies are written whole (not in 16 KB chunks), so
    this is as fast as a plain `tarfile` loop and byte-identical to what tarfile
    writes for the same members (tested).  Only one sample is held at a time."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)

    def add_sample(self, key: str, members: dict[str, bytes]) -> None:
        """One sample's members, adjacent, in a fixed order."""
        for ext in MEMBER_ORDER:
            body = members.get(ext)
            if body is None:
                continue
            if not isinstance(body, (bytes, bytearray)):
                raise TypeError(f"{key}.{ext}: members must be bytes")
            self._write(member_header(f"{key}.{ext}", len(body)))
            self._write(body)
            self._write(tarfile.NUL * (-len(body) % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))             # end-of-archive marker
        self._write(tarfile.NUL * (-self.size % tarfile.RECORDSIZE))   # padded to a whole record, as tarfile does


def write_tar(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A whole tar in memory, samples in key order (tests and benchmarks)."""
    buf = _io.BytesIO()
    stream = TarStream(buf)
    for key, members in sorted(samples, key=lambda s: s[0]):
        stream.add_sample(key, members)
    stream.close()
    return buf.getvalue()


def record_order(rec: dict) -> str:
    """Records in this order, clips by offset, give samples in key order (keys end in fixed-width offsets)."""
    return sample_key(rec["source"], rec["source_id"], 0)[:-8]


MEMBER_SCHEMA = pa.schema([
    ("shard", pa.string()), ("file", pa.string()), ("split", pa.string()), ("record", pa.string()),
    ("observation", pa.string()), ("image", pa.string()), ("pcm_sha256", pa.string()),
    ("samples", pa.list_(pa.string())), ("taxon_id", pa.string()), ("accepted_name", pa.string()),
    ("duration_s", pa.float64()), ("license", pa.string()), ("lat", pa.float64()), ("lon", pa.float64()),
    # who made the works and under what licence: the attribution table (finalize)
    ("source", pa.string()), ("recordist", pa.string()), ("attribution", pa.string()), ("audio_license", pa.string()),
    ("image_recordist", pa.string()), ("image_attribution", pa.string()), ("image_license", pa.string()),
    ("pairing", pa.string())])


def meta_path(out: str, name: str, what: str) -> str:
    """A shard's build records (`work/shards/`): its summary (.json, written last: the resume marker), its
    members and its rejects (Parquet)."""
    return io.join(out, "work", "shards", f"{name}.{what}")


class MaterializeShard(beam.DoFn):
    """(shard name, planned records) -> the tar, then its members, rejects and summary; the summary goes on.

    Clips and images come from the probe's derived cache (no medium is decoded twice); a derived file that
    has gone missing is made again from the cached medium."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def _clips(self, rec: dict):
        try:
            return unpack_clips(io.read_bytes(io.join(self.cfg.out, *rec["derived"].split("/"))))
        except (FileNotFoundError, OSError, KeyError, tarfile.TarError):
            m = self.cfg.media
            blob = io.read_bytes(io.join(self.cfg.out, "cache", "media", "blobs", rec["blob"]))
            a = analyze_audio(blob, m.sample_rate, m.clip_seconds, m.max_clips_per_recording, m.min_seconds,
                              m.min_source_rate, ultrasonic=m.ultrasonic_policy())
            return a.info, a.clips

    def _image(self, rec: dict, cache: dict) -> tuple[bytes | None, dict | None]:
        if rec.get("image_key") is None:   # an audio-text sample
            return None, None
        if rec["image_key"] not in cache:
            try:
                jpg = io.read_bytes(io.join(self.cfg.out, *rec["image_derived"].split("/")))
            except (FileNotFoundError, OSError):
                raw = io.read_bytes(io.join(self.cfg.out, "cache", "media", "blobs", rec["image_blob"]))
                jpg, _ = prepare_image(raw, self.cfg.media.image_size)
            cache[rec["image_key"]] = jpg, {
                "key": rec["image_key"], "pairing": rec["pairing"], "license": rec["image_license"],
                "license_url": rec.get("image_license_url") or license_url(rec["image_license"]),
                "attribution": rec["image_attribution"],
                "original_size": list(rec.get("image_size") or [])}
        return cache[rec["image_key"]]

    def _samples(self, rec: dict, image_cache: dict) -> list[tuple[str, dict[str, bytes]]]:
        info, clips = self._clips(rec)
        jpg, image_meta = self._image(rec, image_cache)
        captions = [{"kind": c["kind"], "text": c["text"], "source": c.get("source"), "reason": c.get("reason")}
                    for c in rec["captions"]]
        out = []
        for clip in clips:
            key = sample_key(rec["source"], rec["source_id"], clip.offset_s) + (rec.get("sample_suffix") or "")
            meta = sample_json(rec, clip, info, image_meta, captions, key, self.cfg.media.sample_rate)
            members = {"flac": clip.flac, "txt": rec["caption"].encode(),
                       "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()}
            if jpg is not None:
                members["jpg"] = jpg
            out.append((key, members))
        return out

    def process(self, item):
        name, records = item
        records = sorted(records, key=lambda r: (record_order(r), r["key"]))
        out = self.cfg.out
        tar_path, summary_path = io.join(out, "shards", f"{name}.tar"), meta_path(out, name, "json")
        fp = task_fingerprint({"name": name, "records": records})
        if io.exists(summary_path) and io.exists(tar_path):
            summary = io.read_json(summary_path)
            if summary.get("task_fingerprint") == fp:
                yield summary
                return
        split = records[0]["split"]
        rejects, members, image_cache, seconds, species, with_image = [], [], {}, 0.0, set(), 0
        with io.AtomicWriter(tar_path) as fh:  # streamed: one recording's clips in memory at a time
            tar = TarStream(fh)
            for rec in records:
                try:
                    got = self._samples(rec, image_cache)
                except (AudioError, ImageError) as err:
                    rejects.append(reject(rec["key"], "materialize", err.reason, err.detail))
                    continue
                except Exception as err:  # noqa: BLE001 - the last guard: a record's fault is its reject
                    beam.metrics.Metrics.counter("guarded", "materialize").inc()
                    rejects.append(reject(rec["key"], "materialize", "materialize_error", f"{type(err).__name__}: {err}"))
                    continue
                if not got:
                    rejects.append(reject(rec["key"], "materialize", "no_usable_clip", ""))
                    continue
                for key, sample in sorted(got, key=lambda s: s[0]):
                    tar.add_sample(key, sample)
                    seconds += json.loads(sample["json"])["audio"]["seconds"]
                    with_image += "jpg" in sample
                species.add(rec["taxon_id"])
                members.append({"shard": name, "file": f"{name}.tar", "split": split, "record": rec["key"],
                                "observation": rec["observation_id"], "image": rec["image_key"],
                                "pcm_sha256": rec.get("pcm_sha256"), "samples": sorted(k for k, _ in got),
                                "taxon_id": rec["taxon_id"], "accepted_name": rec["accepted_name"],
                                "duration_s": rec.get("duration_s"),
                                "license": pair_license(rec["license"], rec["image_license"]),
                                "lat": rec.get("lat"), "lon": rec.get("lon"), "source": rec["source"],
                                "recordist": rec.get("recordist"), "attribution": rec.get("attribution"),
                                "audio_license": rec["license"], "image_recordist": rec.get("image_recordist"),
                                "image_attribution": rec.get("image_attribution"),
                                "image_license": rec.get("image_license"), "pairing": rec.get("pairing")})
            tar.close()
        killpoint("materialize:tar")
        write_part(meta_path(out, name, "members.parquet"), members, MEMBER_SCHEMA)
        write_part(meta_path(out, name, "rejects.parquet"), rejects, REJECT_SCHEMA)
        summary = {"name": name, "split": split, "file": f"{name}.tar",
                   "samples": sum(len(m["samples"]) for m in members), "samples_with_image": with_image,
                   "bytes": tar.size, "sha256": tar.sha.hexdigest(),
                   "recordings": len(members), "rejects": len(rejects), "task_fingerprint": fp,
                   "species": sorted(species), "seconds": round(seconds, 2)}
        io.write_json(summary_path, summary)  # last: its presence marks the shard finished
        log.info("shard %s: %d samples, %d rejects", name, summary["samples"], len(rejects))
        yield summary


class Materialize(beam.PTransform):
    """Planned records -> one tar per shard (a GroupByKey gathers each shard's records for one worker)."""

    def __init__(self, cfg: BuildConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, planned):
        return (planned | "by shard" >> beam.Map(lambda r: (r["shard"], r)) | "shards" >> beam.GroupByKey()
                | "write shard" >> beam.ParDo(MaterializeShard(self.cfg)))
