"""The shard plan: a pure function from catalog metadata to shard tasks.

Splits never depend on what else is in the catalog: a species is 'unseen' by
a hash of its accepted taxon id; seen species split into train/val/test by a
hash of the observation, so every clip of a recording (and every medium of an
observation) lands on one side.  Images are paired inside a split only.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict

from bestiary.schemas.config import ShardConfig, SplitConfig
from bestiary.schemas.records import reject

SPLITS = ("train", "val", "test", "unseen")
SOURCE_CODES = {"xeno-canto": "xc", "inaturalist": "inat", "macaulay": "ml", "gbif": "gbif"}


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


def assign_image_splits(images: list[dict], audio_split: dict[str, str], needed: dict[str, list[str]],
                        cfg: SplitConfig, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Image key -> split.  An image of an observation with sound follows it; the other
    image observations of a species are dealt round-robin (in hash order) to the
    splits where the species has recordings, so each such split gets images."""
    out: dict[str, str] = dict(fixed or {})   # images already in published samples keep their split
    loose: dict[str, list[dict]] = defaultdict(list)
    for img in images:
        if img["key"] in out:
            continue
        if img["observation_id"] in audio_split:
            out[img["key"]] = audio_split[img["observation_id"]]
        else:
            loose[img["taxon_id"]].append(img)
    for taxon, imgs in loose.items():
        splits = needed.get(taxon) or ["train"]
        obs = sorted({i["observation_id"] for i in imgs}, key=lambda o: (unit_hash(cfg.salt, "img", o), o))
        obs_split = {o: splits[n % len(splits)] for n, o in enumerate(obs)}
        for img in imgs:
            out[img["key"]] = obs_split[img["observation_id"]]
    return out


def choose_image(rec: dict, pool_same_obs: list[str], pool_species: list[str]) -> tuple[str | None, str]:
    """The paired image and how it was paired: same observation, else same species by key hash."""
    if pool_same_obs:
        return sorted(pool_same_obs)[0], "same_observation"
    if pool_species:
        ordered = sorted(pool_species)
        return ordered[int(unit_hash("pair", rec["key"]) * len(ordered))], "same_species"
    return None, "none"


def plan_shards(audio: list[dict], images: list[dict], split_cfg: SplitConfig, shard_cfg: ShardConfig,
                clip_seconds: float, max_clips: int, fixed_image_splits: dict[str, str] | None = None,
                first_index: dict[str, int] | None = None) -> tuple[list[dict], list[dict]]:
    """Shard tasks and rejects.  `audio`/`images` rows carry `taxon_id` (accepted) already.  An incremental
    run passes the splits of images already published and the first free shard index per split."""
    rejects: list[dict] = []
    audio_split = {}
    for rec in audio:
        audio_split.setdefault(rec["observation_id"], split_of(rec["taxon_id"], rec["observation_id"], split_cfg))
    needed: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(audio, key=lambda r: r["key"]):
        s = audio_split[rec["observation_id"]]
        if s not in needed[rec["taxon_id"]]:
            needed[rec["taxon_id"]].append(s)
    for taxon in needed:  # test and val first: they are the scarce ones
        needed[taxon].sort(key=lambda s: {"test": 0, "val": 1, "unseen": 2, "train": 3}[s])
    img_split = assign_image_splits(images, audio_split, needed, split_cfg, fixed_image_splits)
    by_obs: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_species: dict[tuple[str, str], list[str]] = defaultdict(list)
    img_by_key = {i["key"]: i for i in images}
    for img in images:
        s = img_split[img["key"]]
        by_obs[(s, img["observation_id"])].append(img["key"])
        by_species[(s, img["taxon_id"])].append(img["key"])
    per_split: dict[str, list[dict]] = defaultdict(list)
    for rec in audio:
        s = audio_split[rec["observation_id"]]
        img_key, pairing = choose_image(rec, by_obs.get((s, rec["observation_id"]), []),
                                        by_species.get((s, rec["taxon_id"]), []))
        if img_key is None:
            rejects.append(reject(rec["key"], "plan", "no_image", f"no image of {rec['taxon_id']} in split {s}"))
            continue
        img = img_by_key[img_key]
        per_split[s].append({**rec, "split": s, "image_key": img_key, "image_url": img["media_url"],
                             "image_license": img["license"], "image_attribution": img["attribution"],
                             "pairing": pairing,
                             "expected_clips": expected_clips(rec.get("duration_s"), clip_seconds, max_clips)})
    tasks = []
    for split in SPLITS:
        recs = sorted(per_split.get(split, []), key=lambda r: (unit_hash("order", r["key"]), r["key"]))
        if not recs:
            continue
        total = sum(r["expected_clips"] for r in recs)
        by_count = math.ceil(total / shard_cfg.samples_per_shard)
        by_size = math.ceil(total * clip_bytes(clip_seconds) / (shard_cfg.max_mb * 1e6)) if shard_cfg.max_mb else 1
        n = min(len(recs), max(shard_cfg.min_shards_per_split, by_count, by_size))
        start = (first_index or {}).get(split, 0)
        for i in range(n):
            members = recs[i::n]
            tasks.append({"split": split, "index": start + i, "name": f"{split}-{start + i:06d}",
                          "records": sorted(members, key=lambda r: r["key"])})
    return tasks, rejects


def sample_key(source: str, source_id: str, offset_s: float) -> str:
    """Stable, tar- and WebDataset-safe: letters, digits, '-' and '_' only (no dots)."""
    code = SOURCE_CODES.get(source, source)
    safe = "".join(c if c.isalnum() else "-" for c in str(source_id))
    if len(safe) > 40 or not safe:
        safe = hashlib.sha256(str(source_id).encode()).hexdigest()[:16]
    return f"{code}_{safe}_{int(round(offset_s * 1000)):08d}"


def task_fingerprint(task: dict) -> str:
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:16]
