"""Tri-modal training against audio-text-only (and with the taxonomy-aware loss, and trait heads), side by side.

Trains each variant for the same steps on `make demo`'s shards, then evaluates
zero-shot species accuracy (seen and unseen) and audio-to-image retrieval.

Usage: python bench/trimodal.py [--shards demo_out/shards] [--steps 150]
"""
from __future__ import annotations

import argparse
import tempfile

from bestiary.training.encoders import ModelConfig
from bestiary.training.evaluate import evaluate
from bestiary.training.train import TrainConfig, train

VARIANTS = {
    "tri-modal": {},
    "audio-text only": {"pair_weights": {"audio_text": 1.0, "audio_image": 0.0, "image_text": 0.0}},
    "tri-modal + taxonomy loss": {"taxonomy_loss": True},
    "tri-modal + trait heads": {"trait_loss": 0.2},
}
ROWS = [("zero-shot seen, taxonomy_common", ("zero_shot", "seen", "taxonomy_common")),
        ("zero-shot seen, common", ("zero_shot", "seen", "common")),
        ("zero-shot unseen, taxonomy", ("zero_shot", "unseen", "taxonomy")),
        ("zero-shot unseen, common", ("zero_shot", "unseen", "common")),
        ("audio->image species, seen", ("retrieval", "seen", "audio_to_image_species")),
        ("audio->text genus, unseen", ("retrieval", "unseen", "audio_to_text_genus"))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="demo_out/shards")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--width", type=int, default=32)
    a = ap.parse_args()
    reports = {}
    for name, extra in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(shards=a.shards, out=tmp, steps=a.steps, checkpoint_every=a.steps,
                              model=ModelConfig(width=a.width), **extra)
            result = train(cfg, progress=False)
            reports[name] = evaluate(result["checkpoint"], a.shards)
    print(f"{a.steps} steps each; top-1 (chance)")
    print(f"{'task':34s}" + "".join(f"{n:>28s}" for n in VARIANTS))
    for label, (section, split, task) in ROWS:
        cells = []
        for n in VARIANTS:
            r = reports[n][section].get(split, {}).get(task)
            cells.append(f"{r['top1']:.3f} ({r['chance_top1']:.3f})" if r else "-")
        print(f"{label:34s}" + "".join(f"{c:>28s}" for c in cells))
    traits = sorted({t for r in reports.values() for t in r.get("traits", {})})
    if traits:
        print("trait inference, macro-F1 (chance)")
        for t in traits:
            cells = []
            for n in VARIANTS:
                r = reports[n].get("traits", {}).get(t)
                cells.append(f"{r['macro_f1']:.3f} ({r['chance_macro_f1']:.3f})" if r else "-")
            print(f"{t:34s}" + "".join(f"{c:>28s}" for c in cells))


if __name__ == "__main__":
    main()
