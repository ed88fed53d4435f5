"""Where shards, manifests and checkpoints live: local paths, file://, http(s)://, s3:// and gs://.

One opener per scheme, each a well-kept client: files; `requests` (streamed) for HTTP; boto3 (which reads
its credentials and `AWS_ENDPOINT_URL` from the environment) for S3; google-cloud-storage or gcsfs, if
installed, for GCS.  `ShardCache` keeps a local copy of each remote shard, checked against the manifest's
sha256, so a second epoch or a second run reads the disk.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit

from braceexpand import braceexpand


def scheme(url: str) -> str:
    return urlsplit(url).scheme if "://" in url else "file"


def join(base: str, name: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


def sibling(url: str, name: str) -> str:
    """The file `name` in the same folder as `url`."""
    if "://" in url:
        return url.rsplit("/", 1)[0] + "/" + name
    return os.path.join(os.path.dirname(url), name)


def expand(spec: str) -> list[str]:
    """A brace pattern (`s3://b/shards/train-{000000..000009}.tar`) as its URLs."""
    return list(braceexpand(spec))


def _local(url: str) -> BinaryIO:
    return open(url[len("file://"):] if url.startswith("file://") else url, "rb")


def _http(url: str) -> BinaryIO:
    import requests
    resp = requests.get(url, stream=True, timeout=(10, 120), headers={"User-Agent": "bestiary-training"})
    if resp.status_code >= 400:
        resp.close()
        raise FileNotFoundError(f"{url}: HTTP {resp.status_code}")
    resp.raw.decode_content = True
    return resp.raw


def _s3(url: str) -> BinaryIO:
    import boto3
    parts = urlsplit(url)
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    try:
        return client.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"]
    except client.exceptions.NoSuchKey:
        raise FileNotFoundError(url) from None


def _gs(url: str) -> BinaryIO:
    parts = urlsplit(url)
    try:
        from google.cloud import storage  # type: ignore[import-not-found]
        return io.BytesIO(storage.Client().bucket(parts.netloc).blob(parts.path.lstrip("/")).download_as_bytes())
    except ImportError:
        pass
    try:
        import fsspec
        return fsspec.open(url, "rb").open()
    except (ImportError, ValueError):
        raise RuntimeError(f"{url}: gs:// needs google-cloud-storage or gcsfs (pip install gcsfs)") from None


OPENERS: dict[str, Callable[[str], BinaryIO]] = {"file": _local, "http": _http, "https": _http, "s3": _s3, "gs": _gs}


def open_url(url: str) -> BinaryIO:
    """A readable binary stream; FileNotFoundError when it is not there."""
    try:
        return OPENERS[scheme(url)](url)
    except KeyError:
        raise ValueError(f"{url}: no opener for {scheme(url)}:// (known: {', '.join(OPENERS)})") from None


def read_bytes(url: str) -> bytes:
    with open_url(url) as fh:
        return fh.read()


def write_bytes(url: str, data: bytes) -> None:
    """A whole file to a local path (temporary name, then renamed) or to s3:// (visible once complete)."""
    if scheme(url) == "file":
        path = url[len("file://"):] if url.startswith("file://") else url
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    elif scheme(url) == "s3":
        import boto3
        parts = urlsplit(url)
        client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        client.put_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data)
    else:
        raise ValueError(f"{url}: bestiary writes run files to local paths or s3:// only")


def exists(url: str) -> bool:
    try:
        open_url(url).close()
        return True
    except (FileNotFoundError, OSError):
        return False


class ShardCache:
    """A local copy of each remote shard: downloaded once (to a temporary name, then renamed), checked
    against its sha256 when the manifest gives one."""

    def __init__(self, root: str, expected: dict[str, str] | None = None):
        self.root, self.expected = root, expected or {}
        os.makedirs(root, exist_ok=True)

    def path(self, url: str) -> str:
        return os.path.join(self.root, hashlib.sha256(url.encode()).hexdigest()[:24] + "-" + os.path.basename(url))

    def get(self, url: str) -> str:
        if scheme(url) == "file":
            return url
        local = self.path(url)
        if os.path.exists(local):
            return local
        tmp = f"{local}.tmp-{os.getpid()}"
        digest = hashlib.sha256()
        with open_url(url) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
        want = self.expected.get(os.path.basename(url))
        if want and digest.hexdigest() != want:
            os.remove(tmp)
            raise OSError(f"{url}: sha256 {digest.hexdigest()[:12]} differs from the manifest's {want[:12]}")
        os.replace(tmp, local)
        return local

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
