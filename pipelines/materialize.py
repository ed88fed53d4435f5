"""Materialize: one worker fetches, decodes, clips and writes one whole shard.

No media passes through a shuffle (img2dataset's pattern).  The tar is
written under a temporary name and renamed; its stats sidecar is written
after, and doubles as the resume marker: a shard whose sidecar names the same
task fingerprint is not built again.  Member order, mtimes and owners are
fixed so the same inputs give byte-identical tars.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import tarfile
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam

from bestiary.connectors.http import AUDIO_TYPES, IMAGE_TYPES, FetchError, HttpClient, policy_from
from bestiary.media.audio import AudioError, make_clips
from bestiary.media.images import ImageError, prepare_image
from bestiary.pipelines import io
from bestiary.pipelines.cache import MediaCache
from bestiary.pipelines.killpoints import killpoint
from bestiary.pipelines.plan import sample_key, task_fingerprint
from bestiary.schemas.config import BuildConfig
from bestiary.schemas.records import TAXON_RANKS, reject
from bestiary.taxonomy.traits import TRAITS

log = logging.getLogger(__name__)
MEMBER_ORDER = ("flac", "jpg", "json", "txt")


def sample_json(rec: dict, clip, info, image_meta: dict, captions: list[dict], key: str, rate: int) -> dict:
    lineage = {r: rec.get(r) for r in TAXON_RANKS}
    return {
        "key": key, "source": rec["source"], "source_id": rec["source_id"], "record_key": rec["key"],
        "observation_id": rec["observation_id"], "split": rec["split"],
        "taxon": {"taxon_id": rec["taxon_id"], "accepted_name": rec["accepted_name"],
                  "common_name": rec.get("taxon_common_name"), "lineage": lineage,
                  "lineage_ids": {r: rec.get(f"{r}_id") for r in TAXON_RANKS},
                  "name_as_given": rec["scientific_name"], "resolution": rec.get("method")},
        "traits": {t: (rec.get("traits") or {}).get(t) for t in TRAITS},  # None: the tables do not say
        "license": rec["license"], "license_url": rec.get("license_url"), "attribution": rec.get("attribution"),
        "recordist": rec.get("recordist"),
        "audio": {"offset_s": clip.offset_s, "seconds": clip.seconds, "sample_rate": rate,
                  "original_sample_rate": info.sample_rate, "original_channels": info.channels,
                  "original_seconds": round(info.seconds, 3), "rms_dbfs": clip.rms_db,
                  "ultrasonic_content_lost": info.sample_rate > rate, "pcm_sha256": rec.get("pcm_sha256")},
        "image": image_meta,
        "captions": captions,
        "location": {"lat": rec.get("lat"), "lon": rec.get("lon"), "country": rec.get("country")},
        "recorded_on": rec.get("recorded_on"), "sound_type": rec.get("sound_type"), "quality": rec.get("quality"),
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


class MaterializeShard(beam.DoFn):
    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self) -> None:
        self.client = HttpClient(policy_from(self.cfg.http, self.cfg.sources))
        self.cache = MediaCache(io.join(self.cfg.out, "cache", "media"))

    def prefetch(self, records: list[dict], threads: int = 8) -> dict[str, FetchError]:
        """Download a shard's media into the cache concurrently (the rate limiter still applies);
        returns the URLs that failed for good, so they are not tried twice."""
        jobs = {r["media_url"]: AUDIO_TYPES for r in records} | {r["image_url"]: IMAGE_TYPES for r in records}

        def one(item):
            url, expect = item
            try:
                self.cache.fetch(self.client, url, expect=expect)
                return url, None
            except FetchError as err:
                return url, err

        with ThreadPoolExecutor(threads) as pool:
            return {url: err for url, err in pool.map(one, sorted(jobs.items())) if err is not None}

    def _fetch(self, url: str, expect: tuple[str, ...]) -> bytes:
        if url in self.failed:
            raise self.failed[url]
        return self.cache.fetch(self.client, url, expect=expect)

    def _image(self, rec: dict) -> tuple[bytes, dict]:
        raw = self._fetch(rec["image_url"], IMAGE_TYPES)
        jpg, size = prepare_image(raw, self.cfg.media.image_size)
        return jpg, {"key": rec["image_key"], "pairing": rec["pairing"], "license": rec["image_license"],
                     "attribution": rec["image_attribution"], "original_size": list(size)}

    def _record(self, rec: dict, image_cache: dict) -> list[tuple[str, dict[str, bytes]]]:
        m = self.cfg.media
        raw = self._fetch(rec["media_url"], AUDIO_TYPES)
        info, clips = make_clips(raw, m.sample_rate, m.clip_seconds, m.max_clips_per_recording,
                                 m.min_seconds, m.min_source_rate)
        if rec["image_key"] not in image_cache:
            image_cache[rec["image_key"]] = self._image(rec)
        jpg, image_meta = image_cache[rec["image_key"]]
        captions = json.loads(rec["captions"])
        out = []
        for clip in clips:
            key = sample_key(rec["source"], rec["source_id"], clip.offset_s) + rec.get("sample_suffix", "")
            meta = sample_json(rec, clip, info, image_meta, captions, key, m.sample_rate)
            out.append((key, {"flac": clip.flac, "jpg": jpg, "txt": rec["caption"].encode(),
                              "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()}))
        return out

    def process(self, task: dict):
        shards = io.join(self.cfg.out, "shards")
        tar_path, stats_path = io.join(shards, f"{task['name']}.tar"), io.join(shards, f"{task['name']}.json")
        fp = task_fingerprint(task)
        if io.exists(stats_path) and io.exists(tar_path):
            stats = io.read_json(stats_path)
            if stats.get("task_fingerprint") == fp:
                yield stats
                return
        self.failed = self.prefetch(task["records"])
        rejects, recs_ok, members, image_cache = [], [], [], {}
        n_samples, seconds = 0, 0.0
        with io.AtomicWriter(tar_path) as fh:  # streamed: one recording's clips in memory at a time
            tar = TarStream(fh)
            for rec in sorted(task["records"], key=record_order):
                try:
                    got = self._record(rec, image_cache)
                except (FetchError, AudioError, ImageError) as err:
                    rejects.append(reject(rec["key"], "materialize", err.reason, err.detail))
                    continue
                if not got:
                    rejects.append(reject(rec["key"], "materialize", "no_usable_clip", ""))
                    continue
                for key, sample in sorted(got, key=lambda s: s[0]):
                    tar.add_sample(key, sample)
                    seconds += json.loads(sample["json"])["audio"]["seconds"]
                n_samples += len(got)
                recs_ok.append(rec["key"])
                members.append({"record": rec["key"], "observation": rec["observation_id"], "image": rec["image_key"],
                                "pcm_sha256": rec.get("pcm_sha256"), "split": rec["split"],
                                "samples": sorted(k for k, _ in got)})
            tar.close()
        killpoint("materialize:tar")
        stats = {"name": task["name"], "split": task["split"], "file": f"{task['name']}.tar",
                 "samples": n_samples, "bytes": tar.size, "sha256": tar.sha.hexdigest(),
                 "recordings": sorted(recs_ok), "members": sorted(members, key=lambda m: m["record"]),
                 "rejects": rejects, "task_fingerprint": fp,
                 "species": sorted({r["taxon_id"] for r in task["records"] if r["key"] in set(recs_ok)}),
                 "seconds": round(seconds, 2)}
        io.write_json(stats_path, stats)  # after the tar: its presence marks the shard finished
        log.info("shard %s: %d samples, %d rejects", task["name"], n_samples, len(rejects))
        yield stats
