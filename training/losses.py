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
                  weights: dict[tuple[str, str], float] | None = None,
                  targets: torch.Tensor | None = None,
                  has_image: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the pairwise losses (weight 0 drops a pair), and each pair's value.
    With `targets` (see taxonomy_targets) each pair uses the taxonomy-aware soft objective.  `has_image`
    (bool per row) leaves audio-text samples out of the pairs with an image: those pairs contrast only the
    rows that have one, and are skipped (absent from the parts) when fewer than two do."""
    weights = weights or {p: 1.0 for p in PAIRS}
    total, parts = 0.0, {}
    for (x, y), w in weights.items():
        if w:
            a, b, t = emb[x], emb[y], targets
            if has_image is not None and "image" in (x, y) and not bool(has_image.all()):
                keep = has_image.to(a.device)
                if int(keep.sum()) < 2:
                    continue
                a, b = a[keep], b[keep]
                if t is not None:
                    t = t.to(a.device)[keep][:, keep]
                    t = t / t.sum(dim=1, keepdim=True)
            loss = info_nce(a, b, logit_scale) if t is None else soft_info_nce(a, b, logit_scale, t)
            parts[f"{x}_{y}"] = float(loss.detach())
            total = total + w * loss
    if not torch.is_tensor(total):   # every weighted pair skipped: a zero that still backpropagates
        total = sum(v.sum() for v in emb.values()) * 0.0
    return total, parts


def taxonomy_targets(species: list[str], genus: list[str], family: list[str], w_genus: float = 0.5,
                     w_family: float = 0.25) -> torch.Tensor:
    """AnimalCLAP-style soft targets: row i's positives are its own pair (and other samples of its
    species) at weight 1, samples of its genus at `w_genus`, of its family at `w_family`; rows sum to 1.
    Relatives are then not pushed apart as hard as strangers."""
    def same(labels: list[str]) -> torch.Tensor:
        idx = {v: i for i, v in enumerate(sorted(set(labels)))}
        ids = torch.tensor([idx[v] for v in labels])
        return ids[:, None] == ids[None, :]
    sp, ge, fa = same(species), same(genus), same(family)
    t = torch.where(sp, 1.0, torch.where(ge, w_genus, torch.where(fa, w_family, 0.0)))
    return t / t.sum(dim=1, keepdim=True)


def soft_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """InfoNCE with soft targets (both directions); with one-hot targets it is `info_nce`."""
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * a @ b.t()
    t = targets.to(logits.device)
    return (-(t * F.log_softmax(logits, dim=1)).sum(1).mean() - (t.t() * F.log_softmax(logits.t(), dim=1)).sum(1).mean()) / 2
