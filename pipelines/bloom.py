"""A fixed-size Bloom filter over strings, built by a Beam combine and tested on whole Arrow columns.

Used to cut a big table down before a keyed join: the filter's size does not
depend on how many keys went in (more keys only mean more false positives,
which the join then drops), so as a side input it is bounded whatever N is.
The hash is a position-weighted byte sum mixed by splitmix64, computed with
numpy over an Arrow string column's buffers, the same in every process
(Python's own `hash` of a str is salted per process).  `seed` keeps several
kinds of key (names, genera, ids) apart in one filter.
"""
from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BITS = 1 << 24      # 2 MiB; at 3 M keys about 7 % of other strings pass, at 30 k none to speak of
HASHES = 4
_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash64(values: pa.Array | Iterable[str], seed: int) -> np.ndarray:
    """One uint64 per string (nulls hash as the empty string)."""
    if isinstance(values, pa.ChunkedArray):   # a table's column
        values = values.combine_chunks()
    arr = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    _, offs_buf, data_buf = arr.buffers()
    offs = np.frombuffer(offs_buf, np.int64)[arr.offset: arr.offset + n + 1]
    start, stop = int(offs[0]), int(offs[-1])
    data = np.frombuffer(data_buf, np.uint8)[start:stop].astype(np.uint64) if stop > start else np.zeros(0, np.uint64)
    lengths = np.diff(offs)
    pos = np.arange(stop - start, dtype=np.int64) - np.repeat(offs[:-1] - start, lengths)
    longest = int(lengths.max()) if n else 0
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(max(longest, 1), _PRIME, np.uint64))  # P^1 .. P^L, wrapping
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum((data + np.uint64(1)) * powers[pos])])
        h = sums[offs[1:] - start] - sums[offs[:-1] - start]
        return _mix(h ^ (lengths.astype(np.uint64) * _GOLDEN) ^ _mix(np.full(n, seed, np.uint64) + _GOLDEN))


def _positions(h: np.ndarray) -> np.ndarray:
    """HASHES bit positions per hash (double hashing), shape (n, HASHES)."""
    with np.errstate(over="ignore"):
        h2 = _mix(h) | np.uint64(1)
        steps = np.arange(HASHES, dtype=np.uint64)
        return (h[:, None] + steps[None, :] * h2[:, None]) & np.uint64(BITS - 1)


class Bloom:
    def __init__(self, bits: np.ndarray | None = None):
        self.bits = bits if bits is not None else np.zeros(BITS // 8, np.uint8)

    def add(self, values: Iterable[str], seed: int) -> None:
        p = np.sort(_positions(hash64(values, seed)).ravel())
        if not len(p):
            return
        byte = (p >> np.uint64(3)).astype(np.int64)
        mask = (np.uint8(1) << (p & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])  # bytes are sorted: OR each run at once
        self.bits[byte[first]] |= np.bitwise_or.reduceat(mask, first)

    def contains(self, values: pa.Array | Iterable[str], seed: int) -> np.ndarray:
        """A boolean per value: False means surely not added."""
        p = _positions(hash64(values, seed))
        hit = (self.bits[(p >> np.uint64(3)).astype(np.int64)] >> (p & np.uint64(7)).astype(np.uint8)) & 1
        return hit.all(axis=1) if len(p) else np.zeros(0, bool)

    def union(self, other: "Bloom") -> "Bloom":
        return Bloom(self.bits | other.bits)


class BuildBloom(beam.CombineFn):
    """(seed, string) elements -> one Bloom; strings wait in small batches so the hashing stays vectorised."""
    BATCH = 4096

    def create_accumulator(self):
        return Bloom(), []

    def add_input(self, acc, item):
        bloom, pending = acc
        pending.append(item)
        if len(pending) >= self.BATCH:
            self._flush(acc)
        return acc

    @staticmethod
    def _flush(acc) -> None:
        bloom, pending = acc
        for seed in sorted({s for s, _ in pending}):
            bloom.add([v for s, v in pending if s == seed], seed)
        pending.clear()

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            self._flush(acc)
            out = acc[0] if out is None else out.union(acc[0])
        return (out or Bloom()), []

    def compact(self, acc):
        self._flush(acc)
        return acc

    def extract_output(self, acc):
        self._flush(acc)
        return acc[0]
