"""Benchmark code on hand-built embeddings whose right answers are known."""
import numpy as np
import pytest

from bestiary.training.evaluate import taxon_retrieval, topk_hits, zero_shot


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_topk_hits_breaks_ties_at_random_in_expectation():
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.1], [0.1, 0.2, 0.3]])
    got = topk_hits(scores, np.array([0, 1, 0]), ks=(1, 2))
    # row 2 ties with one other answer: half a top-1 hit, a whole top-2 hit
    assert got == {"top1": pytest.approx(1.5 / 3), "top2": pytest.approx(2 / 3)}
    # every class tied (a text tower that maps every unseen name to the same tokens): chance, not zero
    flat = np.zeros((10, 6))
    got = topk_hits(flat, np.arange(10) % 6, ks=(1, 5))
    assert got == {"top1": pytest.approx(1 / 6), "top5": pytest.approx(5 / 6)}


def test_bootstrap_interval_on_a_known_answer():
    from bestiary.training.evaluate import bootstrap_ci
    hits = np.r_[np.ones(300), np.zeros(700)]            # p = 0.3, n = 1000: the normal interval is 0.3 +- 0.028
    lo, hi = bootstrap_ci(hits)
    assert lo == pytest.approx(0.3 - 0.0284, abs=0.006) and hi == pytest.approx(0.3 + 0.0284, abs=0.006)
    # two species, one always right, one always wrong: over queries the interval is narrow, over species wide
    species = ["a"] * 500 + ["b"] * 500
    half = np.r_[np.ones(500), np.zeros(500)]
    q_lo, q_hi = bootstrap_ci(half)
    s_lo, s_hi = bootstrap_ci(half, groups=species)
    assert q_hi - q_lo < 0.08 and s_lo == 0.0 and s_hi == 1.0
    # few queries: never narrower than Wilson's interval (two misses do not prove a rate of zero)
    lo, hi = bootstrap_ci(np.zeros(2))
    assert lo == 0.0 and hi > 0.6


def test_random_embeddings_score_chance_on_every_metric_even_with_ties():
    rng = np.random.default_rng(5)
    classes = [f"c{i}" for i in range(8)]
    labels = [classes[i % 8] for i in range(400)]
    audio = unit(rng.normal(size=(400, 16)))
    for cls in (unit(rng.normal(size=(8, 16))), np.tile(unit(rng.normal(size=(1, 16))), (8, 1))):  # tied classes
        r = zero_shot(audio, labels, classes, cls, by_species=True)
        for k in (1, 5):
            lo, hi = r[f"top{k}_ci"]
            assert lo <= r[f"chance_top{k}"] <= hi, (k, r)
    taxa = [f"t{i}" for i in range(40)]
    cand = unit(rng.normal(size=(120, 16)))
    cand_taxa = [taxa[i % 40] for i in range(120)]
    q = unit(rng.normal(size=(300, 16)))
    r = taxon_retrieval(q, [taxa[i % 40] for i in range(300)], cand, cand_taxa, n_candidates=10, by_taxon=True)
    for k in (1, 5):
        lo, hi = r[f"top{k}_ci"]
        assert lo <= r[f"chance_top{k}"] <= hi, (k, r)


def test_zero_shot_exact_figures():
    classes = ["a", "b", "c", "d"]
    cls = np.eye(4)
    audio = unit([[1, 0.1, 0, 0], [0, 1, 0.5, 0], [0, 0.9, 1, 0], [0.2, 0, 0, 0.1]])
    labels = ["a", "b", "c", "d"]  # the last one's best class is "a": a top-1 miss, a top-2 hit
    r = zero_shot(audio, labels, classes, cls, ks=(1, 2))
    assert r["top1"] == 0.75 and r["top2"] == 1.0
    assert r["top1_ci"][0] <= 0.75 <= r["top1_ci"][1] and r["top2_ci"][1] == 1.0
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


def test_a_model_with_random_weights_scores_chance_on_every_task(tiny_build, tmp_path):
    """No task can sit below (or above) chance by construction: random towers, every task, three models."""
    import os
    import torch
    from bestiary.training.data import read_manifest
    from bestiary.training.encoders import ModelConfig, TriModal
    from bestiary.training.evaluate import _rows, evaluate
    from bestiary.training.train import save_checkpoint, tokenizer_for
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    tok = tokenizer_for(shards, read_manifest(shards))
    outside: dict[str, int] = {}
    tasks = 0
    for seed in range(3):
        torch.manual_seed(seed)
        model = TriModal(ModelConfig(embed_dim=32, width=16, vocab_size=len(tok.vocab), max_len=tok.max_len))
        path = str(tmp_path / f"random{seed}.pt")
        save_checkpoint(path, {"model": model.state_dict(), "step": 0, "tokenizer": tok.state(),
                               "model_config": model.cfg.to_dict(), "train_config": {"image_size": 64}})
        for name, r in _rows(evaluate(path, shards)):
            for k in (1, 5):
                tasks += 1
                lo, hi = r[f"top{k}_ci"]
                if not lo <= r[f"chance_top{k}"] <= hi:
                    outside[f"{name} top{k}"] = outside.get(f"{name} top{k}", 0) + 1
    # a random model may land outside by luck on a task with two taxa; never the same task for most models,
    # and never many tasks
    assert all(n <= 1 for n in outside.values()), outside
    assert sum(outside.values()) <= 0.1 * tasks, outside


def test_seeds_summary_is_the_mean_and_sample_sd_of_each_figure():
    from bestiary.training.evaluate import format_seeds, summarize_seeds

    def report(top1: float, top5: float) -> dict:
        r = {"top1": top1, "top5": top5, "top1_ci": [0, 1], "top5_ci": [0, 1], "chance_top1": 0.1,
             "chance_top5": 0.5, "classes": 10, "queries": 40}
        return {"zero_shot": {"seen": {"common": r}}, "retrieval": {}}
    summary = summarize_seeds([report(0.2, 0.6), report(0.4, 0.8), report(0.6, 1.0)])
    (name, row), = summary.items()
    assert name == "zero-shot seen (common, 10 species)" and row["seeds"] == 3
    assert row["top1_mean"] == 0.4 and row["top1_sd"] == 0.2 and row["top5_mean"] == 0.8 and row["top5_sd"] == 0.2
    assert row["top1_by_seed"] == [0.2, 0.4, 0.6]
    assert "0.400 ± 0.200" in format_seeds(summary)
    assert summarize_seeds([report(0.3, 0.7)])[name]["top1_sd"] == 0.0


def test_retrieval_leaves_out_queries_whose_taxon_has_no_candidate():
    from bestiary.training.evaluate import taxon_retrieval
    eye = np.eye(3, dtype=np.float32)
    # three audio queries; images only of taxa a and b (c's samples are audio-text only)
    r = taxon_retrieval(eye, ["a", "b", "c"], eye[:2], ["a", "b"])
    assert r["queries"] == 2 and r["queries_without_candidate"] == 1 and r["top1"] == 1.0


def test_a_ranking_that_ignores_the_query_is_told_apart():
    from bestiary.training.evaluate import taxon_retrieval
    cand = np.eye(4, dtype=np.float32)
    same = np.tile(np.array([[0.9, 0.1, 0.0, 0.0]], dtype=np.float32), (8, 1))   # every query looks alike
    taxa = ["b", "b", "c", "c", "d", "d", "b", "c"]                              # and none is of taxon a
    r = taxon_retrieval(same, taxa, cand, ["a", "b", "c", "d"])
    assert r["distinct_top1"] == 1 and r["top1"] == 0.0   # below chance (0.25), and flagged as a constant ranking
    good = taxon_retrieval(cand[[1, 2, 3]], ["b", "c", "d"], cand, ["a", "b", "c", "d"])
    assert good["distinct_top1"] == 3 and good["top1"] == 1.0
