"""Traits in training: targets from sample JSON, heads on the audio embedding, their loss, and the probe.

Categorical traits (diet, activity, locomotion, social) get a softmax head
each; yes/no traits and flags (predator, migratory, forest, aerial, ...) one
sigmoid each.  A trait the tables do not give is masked out of the loss, never
read as "no".  The probe (`trait_probe`) is BioVITA's trait inference: a linear
classifier on frozen audio embeddings, macro-F1 per trait, species-disjoint folds.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bestiary.taxonomy.traits import CATEGORIES, TRAITS

CATEGORICAL = tuple(CATEGORIES)
BINARY = tuple(t for t in TRAITS if t not in CATEGORIES)


def trait_targets(traits: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(categorical class ids [B, C] with -1 where missing, binary values [B, K], binary mask [B, K])."""
    cat = torch.full((len(traits), len(CATEGORICAL)), -1, dtype=torch.long)
    val = torch.zeros(len(traits), len(BINARY))
    mask = torch.zeros(len(traits), len(BINARY))
    for i, t in enumerate(traits):
        t = t or {}
        for j, name in enumerate(CATEGORICAL):
            if t.get(name) in CATEGORIES[name]:
                cat[i, j] = CATEGORIES[name].index(t[name])
        for j, name in enumerate(BINARY):
            if isinstance(t.get(name), bool):
                val[i, j], mask[i, j] = float(t[name]), 1.0
    return cat, val, mask


class TraitHeads(nn.Module):
    """Linear heads from an embedding to every trait."""

    def __init__(self, dim: int):
        super().__init__()
        self.categorical = nn.ModuleDict({n: nn.Linear(dim, len(CATEGORIES[n])) for n in CATEGORICAL})
        self.binary = nn.Linear(dim, len(BINARY))

    def forward(self, emb: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {n: h(emb) for n, h in self.categorical.items()}, self.binary(emb)


def trait_loss(heads: TraitHeads, emb: torch.Tensor, traits: list[dict]) -> torch.Tensor:
    """Mean cross-entropy over known categorical traits plus mean BCE over known binary ones; 0 when none known
    (still connected to the graph, so DDP sees every parameter used)."""
    cat, val, mask = (x.to(emb.device) for x in trait_targets(traits))
    logits, bin_logits = heads(emb)
    total = 0.0 * bin_logits.sum()
    for j, name in enumerate(CATEGORICAL):
        if (cat[:, j] >= 0).any():
            total = total + F.cross_entropy(logits[name], cat[:, j], ignore_index=-1)
        else:
            total = total + 0.0 * logits[name].sum()
    if mask.sum() > 0:
        bce = F.binary_cross_entropy_with_logits(bin_logits, val, reduction="none")
        total = total + (bce * mask).sum() / mask.sum()
    return total


# ---------------------------------------------------------------- the probe

def macro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in `true`."""
    scores = []
    for c in np.unique(true):
        tp = np.sum((pred == c) & (true == c))
        fp, fn = np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def species_fold(species: str, folds: int) -> int:
    return int(hashlib.sha256(species.encode()).hexdigest()[:8], 16) % folds


def _fit_predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, n_classes: int, steps: int = 300,
                 l2: float = 1e-3) -> np.ndarray:
    """Multinomial logistic regression, full batch (L-BFGS), standardised inputs."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mu) / sd, dtype=torch.float64), torch.tensor(y)
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + l2 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return (torch.tensor((x_test - mu) / sd, dtype=torch.float64) @ w + b).argmax(1).numpy()


def trait_probe(emb: np.ndarray, species: list[str], traits: list[dict], folds: int = 5,
                min_species: int = 4) -> dict[str, dict]:
    """Per trait: macro-F1 of a linear probe whose test species never appear in its training fold, and the
    macro-F1 of predicting the training fold's majority class (the chance level).  Traits with fewer than two
    values or `min_species` species, or with one value left in the scored folds, are left out."""
    out = {}
    species_arr = np.array(species)
    for name in TRAITS:
        vals = [t.get(name) if t else None for t in traits]
        keep = np.array([v is not None for v in vals])
        if not keep.any():
            continue
        labels = sorted({str(v) for v in vals if v is not None})
        n_species = len(set(species_arr[keep]))
        if len(labels) < 2 or n_species < min_species:
            continue
        y = np.array([labels.index(str(v)) if v is not None else -1 for v in vals])
        fold = np.array([species_fold(s, folds) for s in species])
        pred, base, true = [], [], []
        for f in range(folds):
            test, train = keep & (fold == f), keep & (fold != f)
            if not test.any() or len(np.unique(y[train])) < 2:
                continue
            pred.append(_fit_predict(emb[train], y[train], emb[test], len(labels)))
            base.append(np.full(test.sum(), np.bincount(y[train]).argmax()))
            true.append(y[test])
        if not true:
            continue
        t = np.concatenate(true)
        if len(np.unique(t)) < 2:  # the rare value's species never got a training fold with it: not measurable
            continue
        out[name] = {"macro_f1": macro_f1(np.concatenate(pred), t), "chance_macro_f1": macro_f1(np.concatenate(base), t),
                     "classes": len(labels), "samples": int(t.size), "species": n_species}
    return out
