"""The content-addressed media cache, on any filesystem Beam knows (local, gs://, s3://).

`urls/{sha256(url)}` names `blobs/{sha256(body)}`: paths are hashes only, never
archive-provided names, and every worker of a distributed run shares one cache.
A blob is written before the URL that points at it, each atomically, so a killed
download leaves nothing that looks finished.
"""
from __future__ import annotations

import hashlib
import json

from bestiary.connectors.http import FetchError, HttpClient
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

    def fetch(self, client: HttpClient, url: str, expect: tuple[str, ...] = (), paths: bool = False) -> bytes:
        """A medium from the cache, else fetched (and kept); `paths`: a path may name it (the files source
        only: an archive's URL goes through the HTTP client, which refuses anything but http(s))."""
        hit = self.lookup(url)
        if hit is not None:
            return io.read_bytes(hit)
        if paths and not url.startswith(("http://", "https://")):
            body = read_file(url, client.policy.max_body_bytes)
        else:
            body = client.get_bytes(url, expect=expect)
        self.put(url, body)
        return body


def read_file(path: str, max_bytes: int) -> bytes:
    """A medium named by a path (local, s3://, gs://: the `files` source), kept in the cache like a download
    so a rebuild reads nothing outside the output; the size cap of downloads holds for files too."""
    from apache_beam.io.filesystems import FileSystems
    try:
        if not io.exists(path):
            raise FetchError("missing_file", f"{path}: no such file")
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        if size > max_bytes:
            raise FetchError("body_too_large", f"{path}: {size} bytes, over {max_bytes}")
        return io.read_bytes(path)
    except FetchError:
        raise
    except (OSError, ValueError) as err:
        raise FetchError("unreadable_file", f"{path}: {type(err).__name__}: {err}") from None


def cached_json(client: HttpClient, root: str, url: str, params: dict | None = None):
    """An API answer kept by a hash of its URL and parameters (never of a key: secrets are left out),
    so a rebuild asks nothing twice and runs offline."""
    safe = {k: v for k, v in sorted((params or {}).items()) if k.lower() not in SECRET_PARAMS}
    path = io.join(root, hashlib.sha256(json.dumps([url, safe], sort_keys=True).encode()).hexdigest() + ".json")
    if io.exists(path):
        return json.loads(io.read_bytes(path))
    body = client.get_json(url, params)
    io.write_bytes(path, json.dumps(body, sort_keys=True).encode())
    return body


SECRET_PARAMS = {"key", "api_key", "apikey", "token", "access_token"}
