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


BOOTSTRAP = 1000   # resamples for the 95 % intervals


def expected_hits(beat: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
    """Per query, the chance the right answer is in the top k when `beat` answers score above it and `tie`
    others score the same, ties broken at random: a model that cannot tell answers apart scores chance, not
    zero (counting ties against put tied tasks below chance)."""
    return np.clip((k - beat) / (tie + 1.0), 0.0, 1.0)


def topk_hits(scores: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Share of rows whose target column is among the k highest scores (ties broken at random, in
    expectation)."""
    per = topk_per_query(scores, target, ks)
    return {f"top{k}": float(np.mean(v)) for k, v in per.items()}


def topk_per_query(scores: np.ndarray, target: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    true = scores[np.arange(len(target)), target][:, None]
    beat = (scores > true).sum(axis=1)
    tie = (scores == true).sum(axis=1) - 1
    return {k: expected_hits(beat, tie, k) for k in ks}


def bootstrap_ci(hits: np.ndarray, groups: list | None = None, n: int = BOOTSTRAP, seed: int = 0,
                 level: float = 0.95) -> list[float]:
    """A percentile interval for the mean of per-query hits, resampling queries; with `groups` (each
    query's species), resampling species first and then queries within each drawn species, so the interval
    also says how much the figure depends on which species happened to be in the split."""
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    if groups is None:
        means = hits[rng.integers(0, len(hits), size=(n, len(hits)))].mean(axis=1)
    else:
        by = {}
        for i, g in enumerate(groups):
            by.setdefault(g, []).append(i)
        members = [np.array(v) for _, v in sorted(by.items())]
        means = np.empty(n)
        for b in range(n):
            drawn = rng.integers(0, len(members), len(members))
            idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in (members[d] for d in drawn)])
            means[b] = hits[idx].mean()
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    wlo, whi = wilson(float(hits.mean()), len(hits))
    # a bootstrap of few queries is too sure (two misses resample to [0, 0]): never narrower than Wilson's
    return [round(float(min(lo, wlo)), 4), round(float(max(hi, whi)), 4)]


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a proportion p of n."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _with_ci(out: dict, per: dict[int, np.ndarray], groups: list | None) -> dict:
    for k, v in per.items():
        out[f"top{k}"] = float(np.mean(v)) if len(v) else 0.0
        out[f"top{k}_ci"] = bootstrap_ci(v, groups)
    return out


def zero_shot(audio: np.ndarray, labels: list[str], class_names: list[str], class_emb: np.ndarray,
              ks: tuple[int, ...] = (1, 5), by_species: bool = False) -> dict[str, float]:
    """Audio embeddings against one text embedding per class; chance is k / classes.  `top{k}_ci`: 95 %
    bootstrap intervals (over queries; with `by_species`, over species too)."""
    index = {c: i for i, c in enumerate(class_names)}
    target = np.array([index[lab] for lab in labels])
    out = _with_ci({}, topk_per_query(audio @ class_emb.T, target, ks), list(labels) if by_species else None)
    out.update({f"chance_top{k}": min(1.0, k / len(class_names)) for k in ks})
    out["classes"], out["queries"] = len(class_names), len(labels)
    return out


def taxon_retrieval(query: np.ndarray, query_taxa: list[str], cand: np.ndarray, cand_taxa: list[str],
                    n_candidates: int = 100, ks: tuple[int, ...] = (1, 5), seed: int = 0,
                    by_taxon: bool = False) -> dict[str, float]:
    """BioVITA-style retrieval: each query ranks `n_candidates` taxa (its own and others drawn
    deterministically); a taxon's score is the maximum cosine over its candidate samples; ties broken at
    random in expectation; 95 % bootstrap intervals (over query taxa too with `by_taxon`)."""
    taxa = sorted(set(cand_taxa))
    members = {t: np.array([i for i, c in enumerate(cand_taxa) if c == t]) for t in taxa}
    # a query whose taxon has no candidate (audio -> image for a species with audio-text samples only) cannot
    # be answered: it is left out, and counted
    answerable = [i for i, t in enumerate(query_taxa) if t in members]
    skipped = len(query_taxa) - len(answerable)
    query, query_taxa = query[answerable], [query_taxa[i] for i in answerable]
    sims = query @ cand.T
    rng = np.random.default_rng(seed)
    n = min(n_candidates, len(taxa))
    beat, tie = np.zeros(len(query_taxa)), np.zeros(len(query_taxa))
    firsts: set[str] = set()
    for qi, true in enumerate(query_taxa):
        others = [t for t in taxa if t != true]
        drawn = [others[i] for i in rng.permutation(len(others))[: n - 1]]
        scores = np.array([sims[qi, members[t]].max() for t in [true] + drawn])
        beat[qi], tie[qi] = (scores[1:] > scores[0]).sum(), (scores[1:] == scores[0]).sum()
        firsts.add(([true] + drawn)[int(scores.argmax())])
    out = _with_ci({}, {k: expected_hits(beat, tie, k) for k in ks}, list(query_taxa) if by_taxon else None)
    out.update({f"chance_top{k}": min(1.0, k / n) for k in ks})
    out["candidates"], out["queries"] = n, len(query_taxa)
    # how many taxa some query puts first: 1 is a model that ranks every query alike (a tower never trained
    # for this pair collapses to one direction), whose top-1 is the share of that taxon's queries, not chance
    out["distinct_top1"] = len(firsts)
    if skipped:
        out["queries_without_candidate"] = skipped
    return out


@torch.no_grad()
def embed_split(model, shards: str, split: str, batch_size: int = 32, image_size: int = 64) -> dict:
    clip = int(round(model.cfg.sample_rate * model.cfg.clip_seconds))
    cfg = DataConfig(shards, (split,), batch_size, 0, clip, image_size, train=False)
    out = {"audio": [], "image": [], "has_image": [], "species": [], "traits": [], "meta": []}
    from bestiary.pipelines import progress
    from bestiary.training.data import split_samples
    total = -(-split_samples(shards, (split,)) // batch_size)
    for batch in progress.bar(make_loader(cfg), total, f"eval {split}", "batch"):
        out["audio"].append(model.encode_audio(batch["audio"]).numpy())
        out["image"].append(model.encode_image(batch["image"]).numpy())
        out["has_image"] += batch["has_image"].tolist()
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
def retrieval_suite(model, tok, emb: dict, kind: str = "taxonomy_common", by_taxon: bool = False) -> dict:
    """BioVITA's retrieval in six directions at species, genus and family level (100 candidate taxa).
    Images are the samples that have one (audio-text samples are left out of the image directions, which
    are not reported when no sample of the split has an image)."""
    lineage = {}
    for m in emb["meta"]:
        lineage.setdefault(m["taxon"]["accepted_name"], m["taxon"]["lineage"])
    names, text = class_embeddings(model, tok, emb["meta"], kind)
    has = np.asarray(emb["has_image"], dtype=bool)
    mods = {"audio": (emb["audio"], [lineage[s] for s in emb["species"]]),
            "image": (emb["image"][has], [lineage[s] for s, h in zip(emb["species"], has) if h]),
            "text": (text, [lineage[n] for n in names])}
    out = {}
    for q, c in DIRECTIONS:
        if "image" in (q, c) and not has.any():
            continue
        for level in LEVELS:
            (qe, ql), (ce, cl) = mods[q], mods[c]
            r = taxon_retrieval(qe, [x[level] for x in ql], ce, [x[level] for x in cl], by_taxon=by_taxon)
            if r["queries"]:
                out[f"{q}_to_{c}_{level}"] = r
    return out


def evaluate(checkpoint: str, shards: str, splits: dict[str, str] | None = None) -> dict:
    """Every benchmark on these shards; a model trained on other audio settings is refused (AudioMismatch)."""
    model, tok, state = load_model(checkpoint)
    manifest = read_manifest(shards)
    check_audio(model.cfg.sample_rate, model.cfg.clip_seconds, manifest, f"checkpoint {checkpoint}")
    image_size = state["train_config"].get("image_size", 64)
    splits = splits or {"seen": "test", "unseen": "unseen"}
    report: dict = {"checkpoint": checkpoint, "step": state["step"], "zero_shot": {}, "retrieval": {}}
    pooled: dict = {"audio": [], "species": [], "traits": []}
    for label, split in splits.items():
        if not manifest.shards_of((split,)):   # e.g. a build with no unseen species: said, not a crash
            report.setdefault("not_evaluated", {})[label] = f"no {split} shards"
            continue
        emb = embed_split(model, shards, split, image_size=image_size)
        if not emb["species"]:
            continue
        pooled["audio"].append(emb["audio"])
        pooled["species"] += emb["species"]
        pooled["traits"] += emb["traits"]
        report.setdefault("samples", {})[label] = {"samples": len(emb["species"]),
                                                   "with_image": int(sum(emb["has_image"]))}
        report["zero_shot"][label] = {}
        for kind in KINDS:
            names, cls = class_embeddings(model, tok, emb["meta"], kind)
            report["zero_shot"][label][kind] = zero_shot(emb["audio"], emb["species"], names, cls,
                                                         by_species=label == "unseen")
        report["retrieval"][label] = retrieval_suite(model, tok, emb, by_taxon=label == "unseen")
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


def _ci(r: dict, k: int) -> str:
    lo, hi = r.get(f"top{k}_ci") or (float("nan"), float("nan"))
    return f"[{lo:.3f}, {hi:.3f}]"


def format_table(report: dict) -> str:
    lines = [f"{'task':52s} {'top1':>7s} {'95% CI':>16s} {'chance':>7s} {'top5':>7s} {'95% CI':>16s} {'chance':>7s}"]
    lines += [f"{name:52s} {r['top1']:7.3f} {_ci(r, 1):>16s} {r['chance_top1']:7.3f} {r['top5']:7.3f} "
              f"{_ci(r, 5):>16s} {r['chance_top5']:7.3f}" for name, r in _rows(report)]
    if report.get("traits"):
        lines += ["", f"{'trait inference (linear probe, species-disjoint folds)':52s} {'macroF1':>7s} {'chance':>7s}"]
        for name, r in report["traits"].items():
            label = f"{name} ({r['classes']} classes, {r['species']} species)"
            lines.append(f"{label:52s} {r['macro_f1']:7.3f} {r['chance_macro_f1']:7.3f}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The same figures as a markdown table, chance beside each."""
    lines = ["| task | top-1 | 95% CI | chance | top-5 | 95% CI | chance |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['top1']:.3f} | {_ci(r, 1)} | {r['chance_top1']:.3f} | {r['top5']:.3f} | {_ci(r, 5)} | "
              f"{r['chance_top5']:.3f} |" for name, r in _rows(report)]
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


def summarize_seeds(reports: list[dict]) -> dict:
    """Several seeds' reports -> each figure's mean and sample standard deviation over the seeds (top-1 and
    top-5), with each seed's value: {task label: {top1_mean, top1_sd, top5_mean, top5_sd, chance_top1,
    chance_top5, top1_by_seed, top5_by_seed}}.  A task missing from a seed's report is missing there (its
    `seeds` count says how many had it)."""
    by_task: dict[str, list[dict]] = {}
    for report in reports:
        for name, r in _rows(report):
            by_task.setdefault(name, []).append(r)
    out = {}
    for name, rs in by_task.items():
        row = {"seeds": len(rs), "chance_top1": rs[0]["chance_top1"], "chance_top5": rs[0]["chance_top5"]}
        for k in (1, 5):
            vals = np.array([r[f"top{k}"] for r in rs], dtype=np.float64)
            row[f"top{k}_mean"] = round(float(vals.mean()), 4)
            row[f"top{k}_sd"] = round(float(vals.std(ddof=1)), 4) if len(vals) > 1 else 0.0
            row[f"top{k}_by_seed"] = [round(float(v), 4) for v in vals]
        out[name] = row
    return out


def format_seeds(summary: dict) -> str:
    """The seeds' summary as a markdown table: mean ± sd beside chance."""
    n = max((r["seeds"] for r in summary.values()), default=0)
    lines = [f"| task ({n} seeds) | top-1 mean ± sd | chance | top-5 mean ± sd | chance |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['top1_mean']:.3f} ± {r['top1_sd']:.3f} | {r['chance_top1']:.3f} | "
              f"{r['top5_mean']:.3f} ± {r['top5_sd']:.3f} | {r['chance_top5']:.3f} |" for name, r in summary.items()]
    return "\n".join(lines)
