"""The shard plan: splits, image pairing and shard assignment, as per-key functions and keyed joins.

Splits never depend on what else is in the catalog: a species is 'unseen' by
a hash of its accepted taxon id; seen species split into train/val/test by a
hash of the observation, so every clip of a recording (and every medium of an
observation) lands on one side.  Images are paired inside a split only.  A
record's shard is its split and a bucket: records hash into virtual buckets,
and each split's shards take contiguous runs of those buckets, balanced by a
per-split histogram (bounded by the bucket count), so one GroupByKey gathers
each shard's records for the one worker that writes it.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import defaultdict

import apache_beam as beam

from bestiary.connectors.registry import code_of
from bestiary.pipelines.singletons import one
from bestiary.schemas.config import ShardConfig, SplitConfig
from bestiary.schemas.records import reject

SPLITS = ("train", "val", "test", "unseen")
SCARCE_FIRST = {"test": 0, "val": 1, "unseen": 2, "train": 3}
VBUCKETS = 1 << 16        # virtual buckets per split; a shard is a contiguous run of them


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def taxon_is_unseen(taxon_id: str, cfg: SplitConfig) -> bool:
    return unit_hash(cfg.salt, "taxon", str(taxon_id)) < cfg.unseen_fraction


def split_of(taxon_id: str, observation_id: str, cfg: SplitConfig) -> str:
    if taxon_is_unseen(taxon_id, cfg):
        return "unseen"
    u = unit_hash(cfg.salt, "observation", observation_id)
    if u < cfg.test_fraction:
        return "test"
    if u < cfg.test_fraction + cfg.val_fraction:
        return "val"
    return "train"


def clip_bytes(clip_seconds: float, rate: int = 48000) -> float:
    """A sample's expected size: 16-bit FLAC of field audio keeps ~60 % of PCM, plus image and json."""
    return clip_seconds * rate * 2 * 0.6 + 30_000


def expected_clips(duration_s: float | None, clip_seconds: float, max_clips: int) -> int:
    if not duration_s:
        return 1
    return max(1, min(max_clips, int(duration_s // clip_seconds)))


def image_split(img: dict, has_audio: bool, fixed: str | None, needed: list[str], first_obs: list[str],
                cfg: SplitConfig) -> str:
    """An image's split: where a published sample put it; else its observation's (when the observation has
    sound); else dealt over the splits where its species has recordings (test and val first), the species'
    first image observations in hash order round-robin so each such split gets one, the rest by hash."""
    if fixed:
        return fixed
    if has_audio:
        return split_of(img["taxon_id"], img["observation_id"], cfg)
    splits = needed or ["train"]
    if img["observation_id"] in first_obs:
        return splits[first_obs.index(img["observation_id"]) % len(splits)]
    return splits[int(unit_hash(cfg.salt, "img-deal", img["observation_id"]) * len(splits))]


def choose_image(rec: dict, pool_same_obs: list[str], pool_species: list[str]) -> tuple[str | None, str]:
    """The paired image and how it was paired: same observation, else same species by key hash."""
    if pool_same_obs:
        return sorted(pool_same_obs)[0], "same_observation"
    if pool_species:
        ordered = sorted(pool_species)
        return ordered[int(unit_hash("pair", rec["key"]) * len(ordered))], "same_species"
    return None, "none"


def vbucket(key: str) -> int:
    return int(unit_hash("order", key) * VBUCKETS)


def shard_cuts(hist: list[tuple[int, int]], shard_cfg: ShardConfig, clip_seconds: float,
               rate: int) -> list[int]:
    """One split's shards from its (virtual bucket, clips) histogram: the first bucket of each shard.

    As many shards as the count and size caps ask (at least `min_shards_per_split`, never more than
    nonempty buckets); each takes a run of buckets holding about the same number of clips."""
    hist = sorted(hist)
    total = sum(c for _, c in hist)
    by_count = math.ceil(total / shard_cfg.samples_per_shard)
    by_size = math.ceil(total * clip_bytes(clip_seconds, rate) / (shard_cfg.max_mb * 1e6)) if shard_cfg.max_mb else 1
    n = min(len(hist), max(shard_cfg.min_shards_per_split, by_count, by_size))
    cuts, acc, i = [hist[0][0]], 0, 1
    for b, c in hist:
        while i < n and acc >= total * i / n and b > cuts[-1]:
            cuts.append(b)
            i += 1
        acc += c
    # fewer cuts than shards only when buckets ran out: then every bucket left starts one
    rest = [b for b, _ in hist if b > cuts[-1]]
    cuts += rest[: n - len(cuts)]
    return sorted(cuts)


def shard_index(key: str, cuts: list[int]) -> int:
    return max(0, bisect.bisect_right(cuts, vbucket(key)) - 1)


def sample_key(source: str, source_id: str, offset_s: float) -> str:
    """Stable, tar- and WebDataset-safe: letters, digits, '-' and '_' only (no dots)."""
    code = code_of(source)
    safe = "".join(c if c.isalnum() else "-" for c in str(source_id))
    if len(safe) > 40 or not safe:
        safe = hashlib.sha256(str(source_id).encode()).hexdigest()[:16]
    return f"{code}_{safe}_{int(round(offset_s * 1000)):08d}"


def task_fingerprint(task: dict) -> str:
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- Beam

def _has_audio(item):
    _, got = item
    for img in got["img"]:
        yield img["key"], (img, bool(got["audio"]))


def _with_fixed(item, needed: dict, first: dict, cfg: SplitConfig):
    _, got = item
    fixed = next(iter(got["fixed"]), None)
    for img, has_audio in got["img"]:
        s = image_split(img, has_audio, fixed, needed.get(img["taxon_id"], []), first.get(img["taxon_id"], []), cfg)
        yield {**img, "split": s}


NO_IMAGE = {"image_key": None, "image_url": None, "image_license": None, "image_license_url": None,
            "image_attribution": None, "image_recordist": None, "image_derived": None, "image_blob": None,
            "image_size": None, "pairing": "none"}


def _pair(item):
    """(image key, (recording, pairing)) per recording with an image; 'alone' the keys of those without."""
    (split, _), got = item
    by_obs = defaultdict(list)
    for img in got["img"]:
        by_obs[img[1]].append(img[0])
    pool = sorted(k for k, _ in got["img"])
    for rec_key, obs in got["audio"]:
        img_key, pairing = choose_image({"key": rec_key}, by_obs.get(obs, []), pool)
        if img_key is None:
            yield beam.pvalue.TaggedOutput("alone", (rec_key, split))
        else:
            yield img_key, (rec_key, pairing)


def _image_info(item):
    _, got = item
    for img in got["img"]:
        for rec_key, pairing in got["recs"]:
            yield rec_key, {"image_key": img["key"], "image_url": img["media_url"], "image_license": img["license"],
                            "image_license_url": img.get("license_url"), "image_attribution": img["attribution"],
                            "image_recordist": img.get("recordist"),
                            "image_derived": img.get("derived"), "image_blob": img.get("blob"),
                            "image_size": [img.get("width"), img.get("height")],
                            "pairing": pairing}


def _planned(item, clip_seconds: float, max_clips: int):
    _, got = item
    for rec in got["rec"]:
        for info in got["image"]:
            yield {**rec, **info, "expected_clips": expected_clips(rec.get("duration_s"), clip_seconds, max_clips)}


def _cuts(hists: list, shard_cfg: ShardConfig, clip_seconds: float, rate: int) -> dict:
    by_split = defaultdict(list)
    for (split, b), clips in hists:
        by_split[split].append((b, clips))
    return {s: shard_cuts(h, shard_cfg, clip_seconds, rate) for s, h in by_split.items()}


def _assign(rec: dict, cuts: dict, first: dict) -> dict:
    i = first.get(rec["split"], 0) + shard_index(rec["key"], cuts[rec["split"]])
    return {**rec, "shard": f"{rec['split']}-{i:06d}", "shard_index": i}


class Plan(beam.PTransform):
    """(audio, images, fixed image splits) -> planned audio rows (split, paired image, shard), and rejects.

    `audio` rows carry `taxon_id` (accepted) and `observation_id`; `images` rows their probe's `derived`
    JPEG; `fixed` is (image key, split) for images already in published samples.  `first` is the first free
    shard index per split (an incremental run appends after the published shards)."""

    def __init__(self, split_cfg: SplitConfig, shard_cfg: ShardConfig, clip_seconds: float, max_clips: int,
                 rate: int = 48000, first: dict | None = None):
        super().__init__()
        self.split_cfg, self.shard_cfg, self.clip_seconds = split_cfg, shard_cfg, clip_seconds
        self.max_clips, self.rate, self.first = max_clips, rate, dict(first or {})

    def expand(self, inputs):
        audio, images, fixed = inputs
        cfg = self.split_cfg
        audio = audio | "split" >> beam.Map(lambda r: {**r, "split": split_of(r["taxon_id"], r["observation_id"], cfg)})
        needed = (audio | "taxon splits" >> beam.Map(lambda r: (r["taxon_id"], r["split"])) | "distinct" >> beam.Distinct()
                  | "per taxon" >> beam.GroupByKey()
                  | "scarce first" >> beam.MapTuple(lambda t, ss: (t, sorted(set(ss), key=SCARCE_FIRST.get))))
        audio_obs = audio | "audio obs" >> beam.Map(lambda r: (r["observation_id"], 1))
        imgs = ({"img": images | "img by obs" >> beam.Map(lambda i: (i["observation_id"], i)), "audio": audio_obs}
                | "obs join" >> beam.CoGroupByKey() | "has audio" >> beam.FlatMap(_has_audio))
        first_obs = (imgs | "loose obs" >> beam.FlatMap(
                        lambda kv: [] if kv[1][1] else [(kv[1][0]["taxon_id"], kv[1][0]["observation_id"])])
                     | "distinct loose" >> beam.Distinct()
                     | "hash order" >> beam.MapTuple(lambda t, o: (t, (unit_hash(cfg.salt, "img", o), o)))
                     | "first four" >> beam.combiners.Top.PerKey(len(SPLITS), reverse=True)
                     | "obs only" >> beam.MapTuple(lambda t, top: (t, [o for _, o in sorted(top)])))
        images = ({"img": imgs, "fixed": fixed} | "fixed join" >> beam.CoGroupByKey()
                  | "image split" >> beam.FlatMap(_with_fixed, beam.pvalue.AsDict(needed),
                                                  beam.pvalue.AsDict(first_obs), cfg))
        paired = ({"audio": audio | "audio by taxon" >> beam.Map(
                      lambda r: ((r["split"], r["taxon_id"]), (r["key"], r["observation_id"]))),
                   "img": images | "img by taxon" >> beam.Map(
                       lambda i: ((i["split"], i["taxon_id"]), (i["key"], i["observation_id"])))}
                  | "pool join" >> beam.CoGroupByKey() | "pair" >> beam.FlatMap(_pair).with_outputs("alone", main="pairs"))
        infos = ({"img": images | "img info by key" >> beam.Map(lambda i: (i["key"], i)),
                  "recs": paired.pairs} | "image join" >> beam.CoGroupByKey() | "image info" >> beam.FlatMap(_image_info))
        if self.shard_cfg.require_image:
            rejects = paired.alone | "no image" >> beam.MapTuple(
                lambda key, split: reject(key, "plan", "no_image", f"no image of its species in split {split}"))
        else:   # an audio-text sample: the image terms of training and the image tasks of eval leave it out
            infos = (infos, paired.alone | "audio only" >> beam.MapTuple(lambda key, _: (key, dict(NO_IMAGE)))
                     ) | "with audio-only" >> beam.Flatten()
            rejects = paired.alone | "no rejects" >> beam.FlatMap(lambda _: [])
        planned = ({"rec": audio | "audio by key" >> beam.Map(lambda r: (r["key"], r)), "image": infos}
                   | "record join" >> beam.CoGroupByKey()
                   | "planned" >> beam.FlatMap(_planned, self.clip_seconds, self.max_clips))
        cuts = (planned | "buckets" >> beam.Map(lambda r: ((r["split"], vbucket(r["key"])), r["expected_clips"]))
                | "bucket clips" >> beam.CombinePerKey(sum) | "histogram" >> beam.combiners.ToList().without_defaults()
                | "cuts" >> beam.Map(_cuts, self.shard_cfg, self.clip_seconds, self.rate))
        # no histogram means no planned rows, and then nothing reads the cuts
        assigned = planned | "assign" >> beam.Map(_assign, one(cuts, None), self.first)
        return assigned, rejects
