"""Trait heads (auxiliary loss) and the trait-inference probe, on hand-built data and on the tiny build."""
import os

import numpy as np
import pytest
import torch

from bestiary.training.encoders import ModelConfig
from bestiary.training.evaluate import evaluate, format_table
from bestiary.training.train import TrainConfig, load_model, train
from bestiary.training.traits import (BINARY, CATEGORICAL, TraitHeads, macro_f1, species_fold, trait_loss,
                                      trait_probe, trait_targets)


def test_targets_mask_what_the_tables_do_not_say():
    cat, val, mask = trait_targets([{"diet": "carnivore", "predator": True, "forest": False}, {}, None])
    assert cat[0, CATEGORICAL.index("diet")] == 0 and (cat[1:] == -1).all()
    assert val[0, BINARY.index("predator")] == 1 and mask[0, BINARY.index("forest")] == 1
    assert mask[0].sum() == 2 and mask[1:].sum() == 0


def test_unknown_traits_give_no_gradient():
    torch.manual_seed(0)
    heads = TraitHeads(8)
    loss = trait_loss(heads, torch.randn(4, 8), [{}, {}, {}, {}])
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in heads.parameters())


def test_heads_learn_a_separable_trait():
    torch.manual_seed(0)
    heads = TraitHeads(4)
    emb = torch.eye(4)[[0, 1, 2, 3] * 4]
    traits = [{"diet": ["carnivore", "herbivore"][i % 2], "aerial": i % 4 == 0} for i in range(16)]
    opt = torch.optim.Adam(heads.parameters(), lr=0.1)
    first = None
    for _ in range(100):
        loss = trait_loss(heads, emb, traits)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits, binary = heads(emb)
    assert loss.item() < 0.05 * first
    assert logits["diet"].argmax(1).tolist() == [0, 3, 0, 3] * 4  # carnivore, herbivore (vocabulary order)
    assert (binary[:, BINARY.index("aerial")] > 0).tolist() == [i % 4 == 0 for i in range(16)]


def test_macro_f1_exact():
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == 1.0
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 1, fp 1, fn 1 -> 0.5
    assert macro_f1(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])) == 0.5
    assert macro_f1(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])) == pytest.approx((2 / 3 + 0) / 2)


def test_probe_is_species_disjoint_and_finds_a_linear_trait():
    """20 species, 4 samples each; the trait is written into one embedding axis.  A probe that saw the test
    species would also score high on a species-specific signal; this one never does: its folds split species."""
    rng = np.random.default_rng(0)
    species = [f"sp{i}" for i in range(20) for _ in range(4)]
    nocturnal = [int(s[2:]) % 2 == 0 for s in species]
    emb = rng.normal(size=(80, 16))
    emb[:, 0] += np.where(nocturnal, 3.0, -3.0)
    traits = [{"activity": "nocturnal" if n else "diurnal", "aerial": None} for n in nocturnal]
    out = trait_probe(emb, species, traits)
    assert out["activity"]["macro_f1"] > 0.95 and out["activity"]["chance_macro_f1"] < 0.7
    assert out["activity"]["species"] == 20 and "aerial" not in out  # no values: left out
    # a species-identity signal with no trait structure: the species-disjoint probe is near chance
    ident = np.eye(20)[[int(s[2:]) for s in species]] + rng.normal(scale=0.01, size=(80, 20))
    random_traits = [{"activity": ["nocturnal", "diurnal"][int(s[2:]) * 7 % 3 % 2]} for s in species]
    assert trait_probe(ident, species, random_traits)["activity"]["macro_f1"] < 0.75
    folds = {species_fold(s, 5) for s in set(species)}
    assert len(folds) > 1


def test_training_with_trait_heads_and_eval_reports_the_probe(tiny_build, tmp_path):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    tcfg = TrainConfig(shards=shards, out=str(tmp_path / "run"), steps=4, batch_size=8, workers=0, log_every=2,
                       checkpoint_every=4, trait_loss=0.5, model=ModelConfig(embed_dim=32, width=16))
    result = train(tcfg, progress=False)
    with open(tmp_path / "run" / "log.csv") as fh:
        header, *rows = [line.split(",") for line in fh.read().splitlines()]
    assert "traits" in header and float(rows[-1][header.index("traits")]) > 0
    model, _, _ = load_model(result["checkpoint"])
    assert model.cfg.trait_heads and hasattr(model, "traits")
    report = evaluate(result["checkpoint"], shards)
    # five owl species: a trait whose rarer value only one species has cannot be scored on species-disjoint
    # folds (the probe never saw that value while its species is held out), so the report may leave it out
    assert "traits" in report
    for r in report["traits"].values():
        assert 0 <= r["macro_f1"] <= 1 and 0 <= r["chance_macro_f1"] <= 1 and r["species"] >= 4
    report["traits"]["diet"] = {"macro_f1": 0.5, "chance_macro_f1": 0.25, "classes": 2, "species": 5, "samples": 9}
    assert "trait inference" in format_table(report) and "diet (2 classes, 5 species)" in format_table(report)


def test_probe_leaves_out_a_value_only_one_species_has():
    rng = np.random.default_rng(1)
    species = [f"sp{i}" for i in range(6) for _ in range(3)]
    traits = [{"diet": "insectivore" if s == "sp0" else "carnivore"} for s in species]
    assert "diet" not in trait_probe(rng.normal(size=(18, 4)), species, traits)
