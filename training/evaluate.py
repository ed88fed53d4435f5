"""`bestiary eval`: zero-shot species classification and cross-modal retrieval, with chance levels.

The metric functions are pure (numpy in, numbers out) and tested on
hand-built embeddings; `evaluate` embeds the eval splits and calls them.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from bestiary.captioning.templates import KINDS, class_prompt, fields_for
from bestiary.schemas.manifest import check_audio
from bestiary.training.data import DataConfig, make_loader, read_manifest
from bestiary.training.train import load_model
from bestiary.training.traits import trait_probe


def topk_hits(scores: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Share of rows whose target column is among the k highest scores (ties count against)."""
    true = scores[np.arange(len(target)), target][:, None]
    rank = (scores >= true).sum(axis=1) - 1  # how many beat or tie the right answer
    return {f"top{k}": float(np.mean(rank < k)) for k in ks}


def zero_shot(audio: np.ndarray, labels: list[str], class_names: list[str], class_emb: np.ndarray,
              ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Audio embeddings against one text embedding per class; chance is k / classes."""
    index = {c: i for i, c in enumerate(class_names)}
    target = np.array([index[lab] for lab in labels])
    out = topk_hits(audio @ class_emb.T, target, ks)
    out.update({f"chance_top{k}": min(1.0, k / len(class_names)) for k in ks})
    out["classes"], out["queries"] = len(class_names), len(labels)
    return out


def taxon_retrieval(query: np.ndarray, query_taxa: list[str], cand: np.ndarray, cand_taxa: list[str],
                    n_candidates: int = 100, ks: tuple[int, ...] = (1, 5), seed: int = 0) -> dict[str, float]:
    """BioVITA-style retrieval: each query ranks `n_candidates` taxa (its own and others drawn
    deterministically); a taxon's score is the maximum cosine over its candidate samples."""
    taxa = sorted(set(cand_taxa))
    members = {t: np.array([i for i, c in enumerate(cand_taxa) if c == t]) for t in taxa}
    sims = query @ cand.T
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in ks}
    n = min(n_candidates, len(taxa))
    for qi, true in enumerate(query_taxa):
        others = [t for t in taxa if t != true]
        drawn = [others[i] for i in rng.permutation(len(others))[: n - 1]]
        scores = np.array([sims[qi, members[t]].max() for t in [true] + drawn])
        rank = int((scores[1:] >= scores[0]).sum())  # ties count against
        for k in ks:
            hits[k] += rank < k
    out = {f"top{k}": hits[k] / max(1, len(query_taxa)) for k in ks}
    out.update({f"chance_top{k}": min(1.0, k / n) for k in ks})
    out["candidates"], out["queries"] = n, len(query_taxa)
    return out


@torch.no_grad()
def embed_split(model, shards: str, split: str, batch_size: int = 32, image_size: int = 64) -> dict:
    clip = int(round(model.cfg.sample_rate * model.cfg.clip_seconds))
    cfg = DataConfig(shards, (split,), batch_size, 0, clip, image_size, train=False)
    out = {"audio": [], "image": [], "species": [], "traits": [], "meta": []}
    for batch in make_loader(cfg):
        out["audio"].append(model.encode_audio(batch["audio"]).numpy())
        out["image"].append(model.encode_image(batch["image"]).numpy())
        for k in ("species", "traits", "meta"):
            out[k] += batch[k]
    out["audio"] = np.concatenate(out["audio"]) if out["audio"] else np.zeros((0, model.cfg.embed_dim))
    out["image"] = np.concatenate(out["image"]) if out["image"] else np.zeros((0, model.cfg.embed_dim))
    return out


@torch.no_grad()
def class_embeddings(model, tok, metas: list[dict], kind: str) -> tuple[list[str], np.ndarray]:
    info = {}
    for m in metas:
        t = m["taxon"]
        info.setdefault(t["accepted_name"], fields_for(t["accepted_name"], t.get("common_name"), t["lineage"]))
    names = sorted(info)
    prompts = [class_prompt(kind, info[n]) for n in names]
    return names, model.encode_text(tok.encode(prompts)).numpy()


LEVELS = ("species", "genus", "family")
DIRECTIONS = [("audio", "image"), ("image", "audio"), ("audio", "text"), ("text", "audio"), ("image", "text"),
              ("text", "image")]


@torch.no_grad()
def retrieval_suite(model, tok, emb: dict, kind: str = "taxonomy_common") -> dict:
    """BioVITA's retrieval in six directions at species, genus and family level (100 candidate taxa)."""
    lineage = {}
    for m in emb["meta"]:
        lineage.setdefault(m["taxon"]["accepted_name"], m["taxon"]["lineage"])
    names, text = class_embeddings(model, tok, emb["meta"], kind)
    mods = {"audio": (emb["audio"], [lineage[s] for s in emb["species"]]),
            "image": (emb["image"], [lineage[s] for s in emb["species"]]),
            "text": (text, [lineage[n] for n in names])}
    out = {}
    for q, c in DIRECTIONS:
        for level in LEVELS:
            (qe, ql), (ce, cl) = mods[q], mods[c]
            out[f"{q}_to_{c}_{level}"] = taxon_retrieval(qe, [x[level] for x in ql], ce, [x[level] for x in cl])
    return out


def evaluate(checkpoint: str, shards: str, splits: dict[str, str] | None = None) -> dict:
    """Every benchmark on these shards; a model trained on other audio settings is refused (AudioMismatch)."""
    model, tok, state = load_model(checkpoint)
    check_audio(model.cfg.sample_rate, model.cfg.clip_seconds, read_manifest(shards), f"checkpoint {checkpoint}")
    image_size = state["train_config"].get("image_size", 64)
    splits = splits or {"seen": "test", "unseen": "unseen"}
    report: dict = {"checkpoint": checkpoint, "step": state["step"], "zero_shot": {}, "retrieval": {}}
    pooled: dict = {"audio": [], "species": [], "traits": []}
    for label, split in splits.items():
        emb = embed_split(model, shards, split, image_size=image_size)
        if not emb["species"]:
            continue
        pooled["audio"].append(emb["audio"])
        pooled["species"] += emb["species"]
        pooled["traits"] += emb["traits"]
        report["zero_shot"][label] = {}
        for kind in KINDS:
            names, cls = class_embeddings(model, tok, emb["meta"], kind)
            report["zero_shot"][label][kind] = zero_shot(emb["audio"], emb["species"], names, cls)
        report["retrieval"][label] = retrieval_suite(model, tok, emb)
    if pooled["audio"]:  # trait inference over every eval species, folds disjoint by species
        report["traits"] = trait_probe(np.concatenate(pooled["audio"]), pooled["species"], pooled["traits"])
    return report


def _rows(report: dict):
    """(task label, result) for every figure in a report, zero-shot first."""
    for label, kinds in report["zero_shot"].items():
        for kind, r in kinds.items():
            yield f"zero-shot {label} ({kind}, {r['classes']} species)", r
    for label, tasks in report["retrieval"].items():
        for task, r in tasks.items():
            yield f"{task.replace('_', ' ')} {label} ({r['candidates']} taxa)", r


def format_table(report: dict) -> str:
    lines = [f"{'task':52s} {'top1':>7s} {'chance':>7s} {'top5':>7s} {'chance':>7s}"]
    lines += [f"{name:52s} {r['top1']:7.3f} {r['chance_top1']:7.3f} {r['top5']:7.3f} {r['chance_top5']:7.3f}"
              for name, r in _rows(report)]
    if report.get("traits"):
        lines += ["", f"{'trait inference (linear probe, species-disjoint folds)':52s} {'macroF1':>7s} {'chance':>7s}"]
        for name, r in report["traits"].items():
            label = f"{name} ({r['classes']} classes, {r['species']} species)"
            lines.append(f"{label:52s} {r['macro_f1']:7.3f} {r['chance_macro_f1']:7.3f}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The same figures as a markdown table, chance beside each."""
    lines = ["| task | top-1 | chance | top-5 | chance |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['top1']:.3f} | {r['chance_top1']:.3f} | {r['top5']:.3f} | {r['chance_top5']:.3f} |"
              for name, r in _rows(report)]
    if report.get("traits"):
        lines += ["", "| trait (linear probe, species-disjoint folds) | macro-F1 | chance |", "|---|---|---|"]
        lines += [f"| {name} ({r['classes']} classes, {r['species']} species) | {r['macro_f1']:.3f} | "
                  f"{r['chance_macro_f1']:.3f} |" for name, r in report["traits"].items()]
    return "\n".join(lines)


def log_report(report: dict, run_dir: str, state: dict) -> None:
    """The figures into the run's TensorBoard (eval/…, at the checkpoint's step, with the run's
    hyper-parameters and temperature) and `eval_log.csv` (step, metric, value), beside the training scalars."""
    import csv
    import os
    step = report["step"]
    rows = [(f"eval/{name}/top1", r["top1"]) for name, r in _rows(report)]
    rows += [(f"eval/{name}/top5", r["top5"]) for name, r in _rows(report)]
    rows += [(f"eval/trait {name}/macro_f1", r["macro_f1"]) for name, r in (report.get("traits") or {}).items()]
    temperature = float(1 / np.exp(float(state["model"]["logit_scale"])))
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "eval_log.csv")
    fresh = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if fresh:
            w.writerow(["step", "metric", "value"])
        w.writerows([(step, name, f"{value:.6g}") for name, value in rows + [("eval/temperature", temperature)]])
    from torch.utils.tensorboard import SummaryWriter
    hp = {k: v for k, v in state.get("train_config", {}).items() if isinstance(v, (int, float, str, bool))}
    with SummaryWriter(os.path.join(run_dir, "tb")) as tb:
        for name, value in rows:
            tb.add_scalar(name, value, step)
        tb.add_scalar("eval/temperature", temperature, step)
        zs = report["zero_shot"]
        headline = {f"hparam/zero_shot_{label}_top1": max(r["top1"] for r in kinds.values()) for label, kinds in zs.items()}
        tb.add_hparams(hp, headline or {"hparam/none": 0.0}, run_name="eval")


def write_report(report: dict, path: str) -> None:
    """The report as JSON, and beside it the markdown table (same name, .md)."""
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
    with open(path.rsplit(".", 1)[0] + ".md", "w") as fh:
        fh.write(format_markdown(report) + "\n")
