"""Tombstones: the samples a later incremental run superseded (their records changed or were deleted).

Each shard that has any keeps them in a sidecar beside the manifest, a JSON list of sample keys that its
manifest entry names (`tombstones`, with the count in `deleted`).  A reader loads one shard's sidecar
when it opens that shard, so what it holds is bounded by a shard, not by the dataset's history.  A
manifest from before sidecars lists them all in `deleted` ('{shard file}/{sample key}'): still honoured.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

from bestiary.schemas.manifest import Manifest
from bestiary.training import storage


class Tombstones:
    """`tombs.of(file)`: the sample keys of that shard file that readers skip (picklable, for loader workers;
    it caches the last shard's set only)."""

    def __init__(self, manifest_url: str, manifest: Manifest):
        self.manifest_url = manifest_url
        self.sidecars = {s.file: s.tombstones for s in manifest.shards if s.tombstones}
        self.legacy: dict[str, frozenset[str]] = {}
        for d in manifest.deleted:
            file, _, key = d.partition("/")
            self.legacy[file] = self.legacy.get(file, frozenset()) | {key}
        self._last: tuple[str | None, frozenset[str]] = (None, frozenset())

    def __bool__(self) -> bool:
        return bool(self.sidecars or self.legacy)

    def files(self) -> list[str]:
        """The shard files that have tombstones."""
        return sorted(set(self.sidecars) | set(self.legacy))

    def of(self, file: str) -> frozenset[str]:
        if self._last[0] != file:
            keys = self.legacy.get(file, frozenset())
            if file in self.sidecars:
                keys = keys | frozenset(json.loads(storage.read_bytes(storage.sibling(self.manifest_url,
                                                                                       self.sidecars[file]))))
            self._last = (file, keys)
        return self._last[1]

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        """A webdataset stage after the tar expansion: samples of tombstoned keys dropped (shard by shard, so
        before any shuffle buffer mixes shards)."""
        for sample in src:
            if self and sample["__key__"] in self.of(os.path.basename(sample.get("__url__", ""))):
                continue
            yield sample
