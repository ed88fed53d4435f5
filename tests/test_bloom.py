"""The Bloom filter the keyed joins are thinned by: nothing added is ever missed, the same hashes in every
process (workers build and test filters apart), and a false-positive rate that stays small at a fixed size."""
from __future__ import annotations

import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa

from bestiary.pipelines.bloom import Bloom, BuildBloom, hash64
from tests.beam_helpers import run_transform


def test_no_false_negatives_and_few_false_positives():
    added = [f"genus{i} epithet{i % 977}" for i in range(200_000)]
    bloom = Bloom()
    bloom.add(added, seed=1)
    assert bloom.contains(pa.array(added), seed=1).all()
    strangers = pa.array([f"other{i} name{i}" for i in range(200_000)])
    assert bloom.contains(strangers, seed=1).mean() < 0.001          # 2^24 bits, 4 hashes, 200k keys
    assert bloom.contains(pa.array(added[:1000]), seed=2).mean() < 0.001   # another seed is another set


def test_hashes_of_slices_nulls_and_non_ascii():
    arr = pa.array(["Gyps rüppelli", None, "", "parus major", "Parus major"])
    h = hash64(arr, 3)
    assert h[1] == h[2]                                  # null hashes as the empty string
    assert len(set(h.tolist())) == 4                     # case matters; the caller lower-cases
    assert (hash64(arr.slice(3), 3) == h[3:]).all()      # a slice of a column hashes as its values
    assert (hash64(["Gyps rüppelli"], 3) == h[:1]).all()


def test_the_same_hashes_in_another_process():
    """Python's own str hash is salted per process; this one must not be (a worker builds the filter,
    another tests rows against it)."""
    values = ["parus major", "strix aluco", "x" * 300]
    code = ("from bestiary.pipelines.bloom import hash64; "
            f"print(','.join(str(v) for v in hash64({values!r}, 5)))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout.split()[-1]
            for seed in (1, 2)}
    assert runs == {",".join(str(v) for v in hash64(values, 5))}


def test_the_combine_equals_one_filter():
    """BuildBloom in a real Beam pipeline (bundles combined, merged) gives the bits of one filter."""
    items = [(1, f"name{i}") for i in range(10_000)] + [(2, f"genus{i}") for i in range(3000)]
    (got,) = run_transform(beam.CombineGlobally(BuildBloom()), items)
    one = Bloom()
    one.add([v for s, v in items if s == 1], 1)
    one.add([v for s, v in items if s == 2], 2)
    assert np.array_equal(got.bits, one.bits) and got.bits.any()
