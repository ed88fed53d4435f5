"""The content-addressed media cache, on any filesystem Beam knows (local, gs://, s3://).

`urls/{sha256(url)}` names `blobs/{sha256(body)}`: paths are hashes only, never
archive-provided names, and every worker of a distributed run shares one cache.
A blob is written before the URL that points at it, each atomically, so a killed
download leaves nothing that looks finished.
"""
from __future__ import annotations

import hashlib

from bestiary.connectors.http import HttpClient
from bestiary.pipelines import io


class MediaCache:
    def __init__(self, root: str):
        self.root = root

    @staticmethod
    def url_hash(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    def _ref(self, url: str) -> str:
        return io.join(self.root, "urls", self.url_hash(url))

    def lookup(self, url: str) -> str | None:
        """The blob's path for a URL already fetched, else None."""
        ref = self._ref(url)
        if io.exists(ref):
            blob = io.join(self.root, "blobs", io.read_bytes(ref).decode().strip())
            if io.exists(blob):
                return blob
        return None

    def put(self, url: str, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()
        blob = io.join(self.root, "blobs", digest)
        if not io.exists(blob):
            io.write_bytes(blob, body)
        io.write_bytes(self._ref(url), digest.encode())
        return blob

    def fetch(self, client: HttpClient, url: str, expect: tuple[str, ...] = ()) -> bytes:
        hit = self.lookup(url)
        if hit is not None:
            return io.read_bytes(hit)
        body = client.get_bytes(url, expect=expect)
        self.put(url, body)
        return body
