"""The caption cache: one small JSON file per answer, named by a hash of model, prompt version and inputs.

It lives on the output's filesystem (`OUT/cache/captions/`, local, gs:// or s3://),
content-addressed like the media cache, so every worker of a cluster run sees
every answer and a rebuild or an incremental run never asks the LLM twice for
the same inputs.  A file is written whole or not at all.
"""
from __future__ import annotations

import hashlib
import json
import threading


def cache_key(model: str, prompt_version: str, inputs: dict) -> str:
    blob = json.dumps({"model": model, "prompt": prompt_version, "inputs": inputs}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CaptionCache:
    def __init__(self, root: str):
        self.root = root

    def _path(self, key: str) -> str:
        from bestiary.pipelines import io
        return io.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> tuple[str, dict] | None:
        from bestiary.pipelines import io
        path = self._path(key)
        if not io.exists(path):
            return None
        entry = io.read_json(path)
        return entry["text"], entry.get("meta", {})

    def put(self, key: str, text: str, meta: dict) -> None:
        from bestiary.pipelines import io
        io.write_json(self._path(key), {"text": text, "meta": meta})


class Budget:
    """A run's LLM budget (requests, tokens).  All of a run's LLM requests go through one process (the LLM
    host is rate-limited, so host-keyed work gives it one group), so this count is the run's."""

    def __init__(self, max_requests: int | None, max_tokens: int | None):
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.requests = self.tokens = 0
        self.lock = threading.Lock()

    def spend(self, requests: int, tokens: int) -> bool:
        """Take from the budget; False (nothing taken) when it would overdraw."""
        with self.lock:
            r, t = self.requests + requests, self.tokens + tokens
            if (self.max_requests is not None and r > self.max_requests) or \
                    (self.max_tokens is not None and t > self.max_tokens and requests):
                return False
            self.requests, self.tokens = r, t
            return True
