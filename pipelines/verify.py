"""`bestiary verify`: every shard's sha256 matches the manifest and every member decodes."""
from __future__ import annotations

import hashlib
import io as _io
import json
import tarfile

from PIL import Image

from bestiary.media.audio import read_clip
from bestiary.pipelines import io
from bestiary.pipelines.materialize import MEMBER_ORDER


AUDIO_TEXT = set(MEMBER_ORDER) - {"jpg"}   # a sample without an image of its species


def verify_shard(data: bytes, expected_sha: str, expected_samples: int, sample_rate: int,
                 expected_with_image: int | None = None) -> list[str]:
    """Problems found in one shard (empty when it is sound)."""
    problems, image_null = [], set()
    if hashlib.sha256(data).hexdigest() != expected_sha:
        problems.append("sha256 differs from the manifest")
    samples: dict[str, set] = {}
    with tarfile.open(fileobj=_io.BytesIO(data)) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            samples.setdefault(key, set()).add(ext)
            body = tar.extractfile(m).read()
            try:
                if ext == "flac":
                    clip, rate = read_clip(body)
                    if rate != sample_rate or not len(clip):
                        problems.append(f"{m.name}: rate {rate}, {len(clip)} frames")
                elif ext == "jpg":
                    Image.open(_io.BytesIO(body)).verify()
                elif ext == "json":
                    if json.loads(body).get("image") is None:
                        image_null.add(key)
                elif ext == "txt":
                    if not body.decode("utf-8").strip():
                        problems.append(f"{m.name}: empty caption")
            except Exception as err:  # any decode failure is a finding, not a crash
                problems.append(f"{m.name}: {type(err).__name__}: {err}")
    for key, exts in samples.items():
        if exts != set(MEMBER_ORDER) and exts != AUDIO_TEXT:
            problems.append(f"{key}: members {sorted(exts)}")
        elif ("jpg" in exts) == (key in image_null):
            problems.append(f"{key}: the json's image is {'null' if key in image_null else 'set'} but the jpg is "
                            f"{'there' if 'jpg' in exts else 'missing'}")
    if len(samples) != expected_samples:
        problems.append(f"{len(samples)} samples, manifest says {expected_samples}")
    with_image = sum("jpg" in exts for exts in samples.values())
    if expected_with_image is not None and with_image != expected_with_image:
        problems.append(f"{with_image} samples with an image, manifest says {expected_with_image}")
    return problems


def verify(out: str) -> dict:
    manifest = io.read_json(io.join(out, "shards", "manifest.json"))
    report = {"shards": 0, "samples": 0, "problems": {}}
    from bestiary.pipelines import progress
    for sh in progress.bar(manifest["shards"], len(manifest["shards"]), "verify", "shard"):
        data = io.read_bytes(io.join(out, "shards", sh["file"]))
        problems = verify_shard(data, sh["sha256"], sh["samples"], manifest["sample_rate"], sh.get("samples_with_image"))
        report["shards"] += 1
        report["samples"] += sh["samples"]
        if problems:
            report["problems"][sh["file"]] = problems
    report["ok"] = not report["problems"]
    return report
