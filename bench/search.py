"""Vector search at archive size: usearch (HNSW, what `bestiary index` uses) and FAISS (IVF-Flat and HNSW)
against brute-force numpy on the same vectors, in one run.

    python bench/search.py --n 1000000 --dim 512 --queries 200

The vectors are unit vectors drawn around clusters (`--clusters`, like windows of the same species and
site), because uniformly random 512-d vectors have no neighbours worth finding and no index beats a
scan on them.  Queries are fresh draws from the same clusters.  Prints per method: build seconds,
query latency p50/p99 (one query at a time, as a user searches), speed-up over brute force at p50,
and recall@10 against the exact top 10.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for lo in range(0, n, step):  # in blocks: the noise for 1 M x 512 at once would double the peak
        hi = min(n, lo + step)
        x = centers[rng.integers(0, clusters, hi - lo)] + spread * rng.standard_normal((hi - lo, dim)).astype(
            np.float32) / np.sqrt(dim)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ base.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def latencies(search_one, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search_one(q))
        times.append(time.perf_counter() - t)
    return times, np.array(found)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=0, help="default n / 50: about 50 windows per cluster")
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm around a cluster centre (1 = cosine "
                    "~0.5 to the centre)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--methods", default="usearch-f16,usearch-i8,faiss-ivf,faiss-hnsw")
    a = ap.parse_args()
    k = a.k
    a.clusters = a.clusters or max(1, a.n // 50)

    t = time.perf_counter()
    base = clustered(a.n, a.dim, a.clusters, a.spread, 0)
    queries = clustered(a.queries, a.dim, a.clusters, a.spread, 0)  # same centres (seed 0), fresh noise below
    rng = np.random.default_rng(1)
    queries = queries + 0.3 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(a.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"{a.n:,} x {a.dim} unit vectors around {a.clusters:,} clusters in {time.perf_counter() - t:.1f} s; "
          f"{a.queries} queries, k={k}")
    truth = exact_top(base, queries, k)

    def brute(q: np.ndarray) -> np.ndarray:
        s = base @ q
        top = np.argpartition(-s, k)[:k]
        return top[np.argsort(-s[top])]

    rows = []
    times, found = latencies(brute, queries[: min(50, len(queries))])
    rows.append(("numpy brute force", 0.0, times, recall(found, truth[: len(found)])))
    brute_p50 = float(np.percentile(times, 50))

    methods = a.methods.split(",")
    for dtype in ("f16", "i8"):
        if f"usearch-{dtype}" not in methods:
            continue
        from usearch.index import Index
        t = time.perf_counter()
        index = Index(ndim=a.dim, metric="cos", dtype=dtype, connectivity=16, expansion_add=128,
                      expansion_search=128)
        index.add(np.arange(a.n, dtype=np.uint64), base, log=False)
        build = time.perf_counter() - t
        times, found = latencies(lambda q: index.search(q, k).keys, queries)
        rows.append((f"usearch HNSW {dtype} (M 16, ef 128)", build, times, recall(found, truth)))
        del index
    if "faiss-ivf" in methods or "faiss-hnsw" in methods:
        import faiss
        if "faiss-ivf" in methods:
            t = time.perf_counter()
            nlist = int(4 * np.sqrt(a.n))
            quant = faiss.IndexFlatIP(a.dim)
            ivf = faiss.IndexIVFFlat(quant, a.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(base[np.random.default_rng(2).choice(a.n, min(a.n, 40 * nlist), replace=False)])
            ivf.add(base)
            build = time.perf_counter() - t
            ivf.nprobe = 32
            times, found = latencies(lambda q: ivf.search(q[None], k)[1][0], queries)
            rows.append((f"faiss IVF-Flat (nlist {nlist}, nprobe 32)", build, times, recall(found, truth)))
            del ivf
        if "faiss-hnsw" in methods:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(a.dim, 16, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 128
            hnsw.add(base)
            build = time.perf_counter() - t
            hnsw.hnsw.efSearch = 128
            times, found = latencies(lambda q: hnsw.search(q[None], k)[1][0], queries)
            rows.append(("faiss HNSW-Flat (M 16, ef 128)", build, times, recall(found, truth)))
            del hnsw

    print(f"{'method':<42} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs brute':>9} {'recall@10':>10}")
    for name, build, times, rec in rows:
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        print(f"{name:<42} {build:8.1f} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {brute_p50 / p50:8.1f}x {rec:10.3f}")
    print("goals at 1 M: >= 10x faster than brute force at p50, recall@10 >= 0.95")
    return 0


if __name__ == "__main__":
    sys.exit(main())
