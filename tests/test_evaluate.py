"""Benchmark code on hand-built embeddings whose right answers are known."""
import numpy as np
import pytest

from bestiary.training.evaluate import taxon_retrieval, topk_hits, zero_shot


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_topk_hits_counts_ties_against():
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.1], [0.1, 0.2, 0.3]])
    got = topk_hits(scores, np.array([0, 1, 0]), ks=(1, 2))
    assert got == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}


def test_zero_shot_exact_figures():
    classes = ["a", "b", "c", "d"]
    cls = np.eye(4)
    audio = unit([[1, 0.1, 0, 0], [0, 1, 0.5, 0], [0, 0.9, 1, 0], [0.2, 0, 0, 0.1]])
    labels = ["a", "b", "c", "d"]  # the last one's best class is "a": a top-1 miss, a top-2 hit
    r = zero_shot(audio, labels, classes, cls, ks=(1, 2))
    assert r["top1"] == 0.75 and r["top2"] == 1.0
    assert r["chance_top1"] == 0.25 and r["chance_top2"] == 0.5 and r["classes"] == 4


def test_retrieval_scores_a_taxon_by_its_best_sample():
    # taxon X has one sample exactly on the query and one far away: max pooling must find the near one
    query = unit([[1, 0, 0]])
    cand = unit([[-1, 0, 0.01], [1, 0, 0], [0.7, 0.7, 0], [0.6, 0.8, 0]])
    taxa = ["X", "X", "Y", "Z"]
    r = taxon_retrieval(query, ["X"], cand, taxa, n_candidates=100, ks=(1,))
    assert r["top1"] == 1.0 and r["candidates"] == 3 and r["chance_top1"] == pytest.approx(1 / 3)
    # with mean pooling X would lose to Y (mean 0 vs 0.7): make sure max is what counts
    r = taxon_retrieval(unit([[0.7, 0.7, 0]]), ["X"], cand, taxa, ks=(1,))
    assert r["top1"] == 0.0


def test_retrieval_draws_99_distractors_deterministically():
    rng = np.random.default_rng(0)
    taxa = [f"t{i}" for i in range(300)]
    cand = unit(rng.normal(size=(300, 16)))
    query = cand[:50] + 0.01  # each query sits on its own taxon's sample
    r1 = taxon_retrieval(query, taxa[:50], cand, taxa, n_candidates=100, ks=(1, 5))
    r2 = taxon_retrieval(query, taxa[:50], cand, taxa, n_candidates=100, ks=(1, 5))
    assert r1 == r2 and r1["candidates"] == 100 and r1["top1"] == 1.0
    assert r1["chance_top1"] == 0.01 and r1["chance_top5"] == 0.05
    noise = unit(rng.normal(size=(2000, 16)))
    r = taxon_retrieval(noise, [taxa[i % 300] for i in range(2000)], cand, taxa, n_candidates=100, ks=(1,))
    assert abs(r["top1"] - 0.01) < 0.01  # random embeddings score at chance
