"""Probe and deduplicate before planning: every selected medium is fetched into the cache
once and fingerprinted; exact and near duplicates (across sources) are kept once; the
leak check proves no recording, observation, image or fingerprint sits on two sides."""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import numpy as np
import pyarrow as pa

from bestiary.connectors.http import AUDIO_TYPES, IMAGE_TYPES, FetchError, HttpClient, HttpPolicy
from bestiary.media.audio import AudioError, check_recording, fingerprint_audio
from bestiary.media.fingerprints import dhash, hamming, near_duplicates
from bestiary.media.images import ImageError
from bestiary.pipelines.cache import MediaCache
from bestiary.pipelines.errors import LeakError
from bestiary.schemas.config import MediaConfig
from bestiary.schemas.records import reject

SOURCE_PRIORITY = {"xeno-canto": 0, "inaturalist": 1, "macaulay": 2, "gbif": 3}  # originals before mirrors


class ProbeMedia(beam.DoFn):
    """(kind, key, url) -> probe row: fetched into the cache, fingerprinted, or the reason it failed."""

    def __init__(self, cache_root: str, media: MediaConfig, policy: HttpPolicy,
                 durations: dict[str, float] | None = None):
        self.cache_root, self.media, self.policy = cache_root, media, policy
        self.durations = durations or {}  # what the archive says, to catch files cut short at the source

    def setup(self) -> None:
        self.client = HttpClient(self.policy)
        self.cache = MediaCache(self.cache_root)

    def process(self, item: tuple[str, str, str]):
        kind, key, url = item
        try:
            body = self.cache.fetch(self.client, url, expect=AUDIO_TYPES if kind == "audio" else IMAGE_TYPES)
            if kind == "audio":
                info, sha, codes = fingerprint_audio(body)
                check_recording(info, self.media.min_source_rate, self.media.min_seconds, self.durations.get(key))
                yield {"kind": kind, "key": key, "pcm_sha256": sha, "codes": codes.tobytes(),
                       "sample_rate": info.sample_rate, "channels": info.channels, "seconds": info.seconds}
            else:
                try:
                    yield {"kind": kind, "key": key, "dhash": f"{dhash(body):016x}"}
                except ImageError:
                    raise
                except Exception as err:  # Pillow's many error types
                    raise ImageError("undecodable_image", type(err).__name__) from None
        except (FetchError, AudioError, ImageError) as err:
            yield {"kind": kind, "key": key, "reason": err.reason, "detail": err.detail}


class _Groups:
    """Union-find over keys; each group's representative is the preferred record."""

    def __init__(self, rank):
        self.parent: dict[str, str] = {}
        self.rank = rank

    def find(self, k: str) -> str:
        while self.parent.get(k, k) != k:
            k = self.parent[k]
        return k

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            keep, drop = sorted((ra, rb), key=self.rank)
            self.parent[drop] = keep


def dedupe_audio(audio: list[dict], probes: dict[str, dict],
                 published: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Records kept (one per duplicate group) and rejects naming the record each duplicates.  `published`
    records (already in shards) win their group, so an incremental run never displaces them."""
    by_key = {r["key"]: r for r in audio}
    groups = _Groups(lambda k: (k not in published, SOURCE_PRIORITY.get(by_key[k]["source"], 9), k))
    by_sha: dict[str, list[str]] = defaultdict(list)
    by_taxon: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for r in audio:
        p = probes[r["key"]]
        by_sha[p["pcm_sha256"]].append(r["key"])
        by_taxon[r["taxon_id"]][r["key"]] = np.frombuffer(p["codes"], dtype=np.uint16)
    for keys in by_sha.values():
        for k in keys[1:]:
            groups.union(keys[0], k)
    near = set()
    for codes in by_taxon.values():  # mirrors and re-uploads are of the same species
        for a, b, _ber in near_duplicates(codes):
            if groups.find(a) != groups.find(b):
                near.add(a)
                near.add(b)
            groups.union(a, b)
    kept, rejects = [], []
    for r in sorted(audio, key=lambda r: r["key"]):
        rep = groups.find(r["key"])
        if rep == r["key"]:
            kept.append(r)
        else:
            same = probes[rep]["pcm_sha256"] == probes[r["key"]]["pcm_sha256"]
            rejects.append(reject(r["key"], "dedupe", "duplicate_audio" if same else "near_duplicate_audio", f"of {rep}"))
    return kept, rejects


def dedupe_images(images: list[dict], probes: dict[str, dict], max_bits: int = 4) -> tuple[list[dict], int]:
    """Images kept (near-identical ones within a species once); and how many were dropped."""
    kept: list[dict] = []
    seen: dict[str, list[int]] = defaultdict(list)
    for img in sorted(images, key=lambda i: (SOURCE_PRIORITY.get(i["source"], 9), i["key"])):
        h = int(probes[img["key"]]["dhash"], 16)
        if any(hamming(h, o) <= max_bits for o in seen[img["taxon_id"]]):
            continue
        seen[img["taxon_id"]].append(h)
        kept.append(img)
    return sorted(kept, key=lambda i: i["key"]), len(images) - len(kept)


def leak_check(members: list[dict]) -> None:
    """Each sample's recording, observation, image and PCM hash must belong to one split only."""
    sides: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in members:
        for field in ("record", "observation", "image", "pcm_sha256"):
            if m.get(field):
                sides[(field, m[field])].add(m["split"])
    leaks = sorted(f"{field} {value} in {', '.join(sorted(s))}" for (field, value), s in sides.items() if len(s) > 1)
    if leaks:
        raise LeakError(f"{len(leaks)} leak(s) across splits, e.g. {'; '.join(leaks[:3])}")


PROBE_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("pcm_sha256", pa.string()),
                          ("codes", pa.binary()), ("sample_rate", pa.int64()), ("channels", pa.int64()),
                          ("seconds", pa.float64()), ("dhash", pa.string()), ("reason", pa.string()),
                          ("detail", pa.string())])
