"""Duplicates as keyed work, and the leak check.

Audio: exact copies meet by PCM hash (GroupByKey); each group keeps its best
record (published first, then the original archive, then the key).  The
groups' representatives then meet as near copies: every recording's sketch
(`media.fingerprints.sketch`, 16 features) keys it into groups by (taxon,
feature); a pair sharing `MIN_SHARED` features is a candidate, checked bit by
bit (`near_duplicates`) on its two fingerprints alone, joined by key.  No group
is all-pairs: a feature shared by more than `GROUP_CAP` recordings says nothing
and is skipped.  The near-copy graph's components (per taxon) keep their best
record.  Images: a 64-bit dHash cut into 5 bands, so two hashes within 4 bits
share a band exactly; an image is dropped when a better-ranked image of its
species is within 4 bits.
"""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import numpy as np

from bestiary.connectors.registry import priority_of
from bestiary.media.fingerprints import near_duplicates, sketch
from bestiary.pipelines.errors import LeakError
from bestiary.schemas.records import reject

MIN_SHARED = 3
GROUP_CAP = 200
IMAGE_BITS = 4
IMAGE_BANDS = ((0, 13), (13, 26), (26, 39), (39, 52), (52, 64))  # 5 bands: <= 4 differing bits miss one


def audio_rank(rec: dict) -> tuple:
    """Lower wins: what is already published, then originals before mirrors, then the key."""
    return (not rec.get("published", False), priority_of(rec["source"]), rec["key"])


def image_rank(img: dict) -> tuple:
    return (priority_of(img["source"]), img["key"])


# ---------------------------------------------------------------- pure parts

def exact_groups(recs: list[dict]) -> tuple[dict, list[tuple[str, str]]]:
    """One PCM hash's records -> (the kept record, [(duplicate key, kept key)])."""
    recs = sorted(recs, key=lambda r: r["rank"])
    return recs[0], [(r["key"], recs[0]["key"]) for r in recs[1:]]


def candidate_pairs(members: list[tuple]) -> list[tuple[str, str]]:
    """The pairs of one (taxon, feature) group, or none when the feature is too common to say anything."""
    if len(members) < 2 or len(members) > GROUP_CAP:
        return []
    keys = sorted({m[1] for m in members})
    return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]


def components(edges: list[tuple[tuple, tuple]]) -> dict[str, str]:
    """Union-find over (rank, key) edges: each key that is not its component's best -> that best key."""
    parent: dict[tuple, tuple] = {}

    def find(x):
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            keep, drop = sorted((ra, rb))
            parent[drop] = keep
    return {x[-1]: find(x)[-1] for x in parent if find(x) != x}


def image_band_keys(h: int) -> list[tuple[int, int]]:
    return [(i, (h >> lo) & ((1 << (hi - lo)) - 1)) for i, (lo, hi) in enumerate(IMAGE_BANDS)]


def image_drops(members: list[tuple]) -> list[tuple[str, str]]:
    """(dropped key, better key) within one band group of (rank, key, hex hash): vectorised all-pairs; the group
    is small, since its members agree on a whole band."""
    members = sorted(set(members))
    if len(members) < 2:
        return []
    hashes = np.array([int(m[2], 16) for m in members], dtype=np.uint64)  # hex: 64-bit unsigned
    out = []
    for i in range(1, len(members)):  # compare each to the better-ranked ones before it
        x = np.bitwise_xor(hashes[:i], hashes[i])
        bits = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        near = np.nonzero(bits <= IMAGE_BITS)[0]
        if len(near):
            out.append((members[i][1], members[int(near[0])][1]))
    return out


# ---------------------------------------------------------------- Beam

def _exact(item):
    _, recs = item
    keep, dups = exact_groups(list(recs))
    yield keep
    for dup, rep in dups:
        yield beam.pvalue.TaggedOutput("dups", (dup, rep))


def _features(rec: dict):
    codes = np.frombuffer(rec["codes"] or b"", dtype=np.uint16)
    for f in sketch(codes):
        yield (rec["taxon_id"], f), (rec["rank"], rec["key"])


def _verify(item):
    _, got = item
    got = {k: (rank, taxon, codes) for k, rank, taxon, codes in got}
    if len(got) != 2:
        return
    (a, (ra, ta, ca)), (b, (rb, _, cb)) = sorted(got.items())
    if near_duplicates({a: np.frombuffer(ca, np.uint16), b: np.frombuffer(cb, np.uint16)}):
        yield ta, (ra, rb)


def _pair_with_codes(item):
    key, got = item
    for rank, taxon, codes in got["rec"]:
        for pair in got["pairs"]:
            yield pair, (key, rank, taxon, codes)


def _components(item):
    _, edges = item
    yield from components(list(edges)).items()


def _final_verdict(item):
    """Exact copies whose kept record is itself a near copy point at the component's best."""
    rep, got = item
    root = next(iter(got["near"]), None)
    for dup in got["dups"]:
        yield (dup, ("near_duplicate_audio", root)) if root else (dup, ("duplicate_audio", rep))
    if root:
        yield rep, ("near_duplicate_audio", root)


class DedupeAudio(beam.PTransform):
    """Slim records {key, source, taxon_id, pcm_sha256, codes, published} -> rejects of the duplicates."""

    def expand(self, slim):
        ranked = slim | "rank" >> beam.Map(lambda r: {**r, "rank": audio_rank(r)})
        exact = (ranked | "by pcm" >> beam.Map(lambda r: (r["pcm_sha256"], r)) | "same pcm" >> beam.GroupByKey()
                 | "exact" >> beam.FlatMap(_exact).with_outputs("dups", main="reps"))
        reps = exact.reps
        pairs = (reps | "features" >> beam.FlatMap(_features) | "feature groups" >> beam.GroupByKey()
                 | "pairs" >> beam.FlatMap(lambda kv: [(p, 1) for p in candidate_pairs(list(kv[1]))])
                 | "votes" >> beam.CombinePerKey(sum)
                 | "candidates" >> beam.FlatMap(lambda kv: [kv[0]] if kv[1] >= MIN_SHARED else []))
        edges = ({"pairs": pairs | "both ends" >> beam.FlatMap(lambda ab: [(ab[0], ab), (ab[1], ab)]),
                  "rec": reps | "codes by key" >> beam.Map(lambda r: (r["key"], (r["rank"], r["taxon_id"], r["codes"])))}
                 | "join codes" >> beam.CoGroupByKey() | "pair codes" >> beam.FlatMap(_pair_with_codes)
                 | "by pair" >> beam.GroupByKey() | "verify" >> beam.FlatMap(_verify))
        near = edges | "by taxon" >> beam.GroupByKey() | "components" >> beam.FlatMap(_components)
        verdicts = ({"dups": exact.dups | "dup by rep" >> beam.Map(lambda d: (d[1], d[0])), "near": near}
                    | "join near" >> beam.CoGroupByKey() | "verdicts" >> beam.FlatMap(_final_verdict))
        return verdicts | "rejects" >> beam.MapTuple(
            lambda key, v: reject(key, "dedupe", v[0], f"of {v[1]}"))


class DedupeImages(beam.PTransform):
    """Slim images {key, source, taxon_id, dhash (hex)} -> keys of the dropped ones."""

    def expand(self, slim):
        return (slim | "bands" >> beam.FlatMap(
                    lambda i: [((i["taxon_id"], b, v), (image_rank(i), i["key"], i["dhash"]))
                               for b, v in image_band_keys(int(i["dhash"], 16))])
                | "band groups" >> beam.GroupByKey()
                | "drops" >> beam.FlatMap(lambda kv: [d for d, _ in image_drops(list(kv[1]))])
                | "dropped" >> beam.Distinct())


# ---------------------------------------------------------------- the leak check

LEAK_FIELDS = ("record", "observation", "image", "pcm_sha256")


def leak_sides(member: dict):
    for field in LEAK_FIELDS:
        if member.get(field):
            yield (field, member[field]), member["split"]


def leaks_of(members: list[dict]) -> list[str]:
    sides: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in members:
        for k, split in leak_sides(m):
            sides[k].add(split)
    return sorted(f"{f} {v} in {', '.join(sorted(s))}" for (f, v), s in sides.items() if len(s) > 1)


def leak_check(members: list[dict]) -> None:
    """Each sample's recording, observation, image and PCM hash must belong to one split only."""
    leaks = leaks_of(members)
    if leaks:
        raise LeakError(f"{len(leaks)} leak(s) across splits, e.g. {'; '.join(leaks[:3])}")


class FindLeaks(beam.PTransform):
    """Members -> 'field value in split, split' for everything on two sides (none, when the build is sound)."""

    def expand(self, members):
        return (members | "sides" >> beam.FlatMap(leak_sides) | "distinct sides" >> beam.Distinct()
                | "by value" >> beam.GroupByKey()
                | "two sides" >> beam.FlatMap(lambda kv: [f"{kv[0][0]} {kv[0][1]} in {', '.join(sorted(kv[1]))}"]
                                              if len(set(kv[1])) > 1 else []))

