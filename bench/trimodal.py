"""Tri-modal training against audio-text-only, + the taxonomy-aware loss and + trait heads, side by side, with
95 % intervals; and AnimalCLAP's question: which of the five text types names unseen species best.

Trains each variant for the same steps on the same shards (the big world's: `make bigworld`; or the demo's),
evaluates every figure of `bestiary eval` with its bootstrap interval (queries; for unseen, species too) and
prints the headline rows.  With --seeds K each variant is trained K times and the table gives mean ± sd
over the seeds, beside the first seed's interval.  Every figure is checked against chance: a task whose
upper bound sits below chance is reported (the random-weights test makes that a bug, not a finding).

Usage: python bench/trimodal.py [--shards bigworld_out/shards] [--steps 600] [--seeds 1] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile

from bestiary.captioning.templates import KINDS
from bestiary.training.encoders import ModelConfig
from bestiary.training.evaluate import _rows, evaluate, summarize_seeds
from bestiary.training.train import TrainConfig, train

VARIANTS = {
    "tri-modal": {},
    "audio-text only": {"pair_weights": {"audio_text": 1.0, "audio_image": 0.0, "image_text": 0.0}},
    "tri-modal + taxonomy loss": {"taxonomy_loss": True},
    "tri-modal + trait heads": {"trait_loss": 0.2},
}
ROWS = [("zero-shot seen, taxonomy_common", ("zero_shot", "seen", "taxonomy_common")),
        ("zero-shot unseen, taxonomy_common", ("zero_shot", "unseen", "taxonomy_common")),
        ("audio->text species, unseen", ("retrieval", "unseen", "audio_to_text_species")),
        ("audio->text genus, unseen", ("retrieval", "unseen", "audio_to_text_genus")),
        ("audio->image species, seen", ("retrieval", "seen", "audio_to_image_species")),
        ("image->text species, unseen", ("retrieval", "unseen", "image_to_text_species"))]


def figure(report: dict, section: str, split: str, task: str) -> dict | None:
    return report[section].get(split, {}).get(task)


def cell(r: dict | None, k: int = 1) -> str:
    if not r:
        return "-"
    lo, hi = r[f"top{k}_ci"]
    return f"{r[f'top{k}']:.3f} [{lo:.2f},{hi:.2f}]"


def below_chance(report: dict) -> list[str]:
    """Tasks whose upper 95 % bound is under chance, top-1 or top-5, with how many taxa their queries put
    first (1: the model ranks every query alike)."""
    return [f"{name} top{k}" + (f" ({r['distinct_top1']} distinct top-1)" if "distinct_top1" in r else "")
            for name, r in _rows(report) for k in (1, 5) if r[f"top{k}_ci"][1] < r[f"chance_top{k}"] - 1e-9]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="demo_out/shards")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--out", help="every report as JSON")
    a = ap.parse_args()
    names = [n for n in a.variants.split(",") if n]
    reports: dict[str, list[dict]] = {}
    for name in names:
        for seed in range(a.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig(shards=a.shards, out=tmp, steps=a.steps, checkpoint_every=a.steps, seed=seed,
                                  batch_size=a.batch_size, model=ModelConfig(width=a.width), **VARIANTS[name])
                result = train(cfg, progress=False)
                reports.setdefault(name, []).append(evaluate(result["checkpoint"], a.shards))
            print(f"trained {name} (seed {seed})", flush=True)
    first = {n: rs[0] for n, rs in reports.items()}
    seen = first[names[0]]["zero_shot"].get("seen", {}).get("taxonomy_common", {})
    unseen = first[names[0]]["zero_shot"].get("unseen", {}).get("taxonomy_common", {})
    print(f"\n{a.steps} steps each, {a.seeds} seed(s); {seen.get('classes')} seen species ({seen.get('queries')} "
          f"queries), {unseen.get('classes')} unseen species ({unseen.get('queries')} queries)")
    print("top-1 [95 % interval] (chance)")
    print(f"{'task':36s}{'chance':>8s}" + "".join(f"{n:>30s}" for n in names))
    for label, (section, split, task) in ROWS:
        r0 = figure(first[names[0]], section, split, task)
        chance = f"{r0['chance_top1']:.3f}" if r0 else "-"
        print(f"{label:36s}{chance:>8s}" + "".join(f"{cell(figure(first[n], section, split, task)):>30s}" for n in names))
    if a.seeds > 1:
        print(f"\ntop-1 mean ± sd over {a.seeds} seeds")
        summaries = {n: summarize_seeds(rs) for n, rs in reports.items()}
        for label, (section, split, task) in ROWS:
            want = figure(first[names[0]], section, split, task)   # the summary is keyed by the table's labels
            key = next((k for k, r in _rows(first[names[0]]) if r is want), None)
            cells = [f"{summaries[n][key]['top1_mean']:.3f} ± {summaries[n][key]['top1_sd']:.3f}"
                     if key and key in summaries[n] else "-" for n in names]
            print(f"{label:36s}{'':8s}" + "".join(f"{c:>30s}" for c in cells))
    print("\nunseen zero-shot by text type (AnimalCLAP's comparison), top-1 [95 % interval]")
    for kind in KINDS:
        cells = [cell(figure(first[n], "zero_shot", "unseen", kind)) for n in names]
        print(f"{kind:36s}{'':8s}" + "".join(f"{c:>30s}" for c in cells))
    for n in names:
        bad = below_chance(first[n])
        print(f"{n}: {'no task has its upper bound below chance' if not bad else 'BELOW CHANCE: ' + ', '.join(bad)}")
    traits = sorted({t for r in first.values() for t in r.get("traits", {})})
    if traits:
        print("\ntrait inference, macro-F1 (chance)")
        for t in traits:
            cells = []
            for n in names:
                r = first[n].get("traits", {}).get(t)
                cells.append(f"{r['macro_f1']:.3f} ({r['chance_macro_f1']:.3f})" if r else "-")
            print(f"{t:44s}" + "".join(f"{c:>30s}" for c in cells))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"steps": a.steps, "seeds": a.seeds, "reports": reports}, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
