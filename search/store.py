"""The vector store: usearch's HNSW graph in one file, keyed by window id (see bench/search.py for why
usearch and not FAISS).  Vectors are unit vectors, so inner product is cosine similarity."""
from __future__ import annotations

import os

import numpy as np

FILE = "vectors.usearch"
EXACT_BELOW = 20_000   # smaller candidate sets (a filtered search) are scored exactly, not through the graph


class VectorStore:
    def __init__(self, dim: int, path: str | None = None):
        from usearch.index import Index
        self.dim = dim
        # f16 storage: half of f32's memory; recall@10 0.977 at 1 M in bench/search.py (i8: 0.870); M 16, ef 128
        self.index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128,
                           expansion_search=128)
        if path and os.path.exists(path):
            self.index.load(path)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add(np.asarray(ids, np.uint64), np.asarray(vectors, np.float32), log=False)

    def remove(self, ids) -> None:
        ids = [int(i) for i in ids]
        if ids:
            self.index.remove(ids)

    def get(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.get(np.asarray(ids, np.uint64)), np.float32).reshape(len(ids), self.dim)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine) best first.  `allowed` (ids a filter kept): exact scores over those when few,
        else the graph asked for more and filtered, widening until k are found."""
        query = np.asarray(query, np.float32).reshape(-1)
        if len(self) == 0 or k <= 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.float32)
        if allowed is not None and len(allowed) <= EXACT_BELOW:
            if not len(allowed):
                return np.zeros(0, np.uint64), np.zeros(0, np.float32)
            scores = self.get(allowed) @ query
            order = np.argsort(-scores, kind="stable")[:k]
            return np.asarray(allowed, np.uint64)[order], scores[order]
        want = k if allowed is None else 4 * k
        allowed_set = None if allowed is None else set(int(i) for i in allowed)
        while True:
            m = self.index.search(query, min(want, len(self)))
            ids, dist = np.asarray(m.keys, np.uint64), np.asarray(m.distances, np.float32)
            keep = np.ones(len(ids), bool) if allowed_set is None else np.array(
                [int(i) in allowed_set for i in ids], bool)
            if keep.sum() >= k or want >= len(self):
                ids, scores = ids[keep][:k], 1.0 - dist[keep][:k]   # usearch gives 1 - cosine
                return ids, scores
            want *= 4

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        self.index.save(tmp)
        os.replace(tmp, path)   # a killed save leaves the previous index whole
