"""Contrastive losses: CLIP's symmetric InfoNCE over each pair of modalities."""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAIRS = (("audio", "text"), ("audio", "image"), ("image", "text"))


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over the a-b similarity matrix; row i's positive is column i."""
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def trimodal_loss(emb: dict[str, torch.Tensor], logit_scale: torch.Tensor,
                  weights: dict[tuple[str, str], float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the pairwise losses (weight 0 drops a pair), and each pair's value."""
    weights = weights or {p: 1.0 for p in PAIRS}
    total, parts = 0.0, {}
    for (x, y), w in weights.items():
        if w:
            loss = info_nce(emb[x], emb[y], logit_scale)
            parts[f"{x}_{y}"] = float(loss.detach())
            total = total + w * loss
    return total, parts
