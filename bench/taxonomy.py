"""Name resolution: bestiary against a naive pandas merge on exact names, on a 1M-row backbone.

Queries are names as archives write them, each with the accepted species it
should end on: exact names, authorship strings, subspecies, synonyms (old
names), misspellings, odd case and spacing, non-ASCII letters, names of other
kingdoms' homonyms, spuhs and hybrids.  Both read the same Taxon.tsv; pandas
merges the given string on `canonicalName` (what a quick script does).
Prints names resolved per second and correct answers for each, ratios last.
Usage: python bench/taxonomy.py [--rows 1000000] [--names 5000]
"""
from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from bestiary.sample_archive.taxonomy_data import write_big_backbone
from bestiary.taxonomy.backbone import resolve_all
from bestiary.taxonomy.names import parse_name

# real cases (sample slice and real GBIF rows): given -> accepted (None: must stay unresolved)
REAL = {"Carduelis spinus": "Spinus spinus", "Hyla versicolor": "Dryophytes versicolor",
        "Bufo americanus Holbrook, 1836": "Anaxyrus americanus", "Catharus guttatas": "Catharus guttatus",
        "Gyps r\u00fcppelli": "Gyps rueppelli", "Orestias elegans": "Orestias elegans", "Prunella vulgaris": None,
        "Poecile sp.": None, "Poecile carolinensis x atricapillus": None, "Parus major major": "Parus major"}


AUTHORS = ["Linnaeus", "Smith", "M\u00fcller", "Ridgway"]


def queries(path: Path, n: int, seed: int = 1) -> list[tuple[str, str | None, str]]:
    """(given name, accepted name or None, variant) drawn from the backbone itself."""
    df = pd.read_csv(path, sep="\t", usecols=["taxonID", "acceptedNameUsageID", "canonicalName", "taxonomicStatus",
                                              "kingdom", "taxonRank"], dtype=str, quoting=3, keep_default_na=False)
    df = df[(df.taxonRank == "species") & (df.kingdom == "Animalia")]
    counts = df.canonicalName.value_counts()
    df = df[df.canonicalName.map(counts) == 1]                 # unique names: the truth is unambiguous
    accepted = df[df.taxonomicStatus == "accepted"].set_index("taxonID").canonicalName
    synonyms = df[(df.taxonomicStatus == "synonym") & df.acceptedNameUsageID.isin(accepted.index)]
    rng = random.Random(seed)
    acc_names = list(accepted.values)
    out = [(g, a, "real") for g, a in REAL.items()]
    letters = "aeiou"
    while len(out) < n:
        variant = rng.choices(["exact", "author", "subspecies", "synonym", "misspelled", "spacing"],
                              [40, 15, 10, 15, 10, 10])[0]
        if variant == "synonym":
            row = synonyms.iloc[rng.randrange(len(synonyms))]
            out.append((row.canonicalName, accepted[row.acceptedNameUsageID], variant))
            continue
        name = rng.choice(acc_names)
        genus, epithet = name.split()
        if variant == "exact":
            given = name
        elif variant == "author":
            author = rng.choice(AUTHORS)
            given = f"{name} ({author}, {rng.randrange(1758, 1990)})"
        elif variant == "subspecies":
            given = f"{name} {epithet}"
        elif variant == "misspelled":
            i = rng.randrange(1, len(epithet) - 1)
            given = f"{genus} {epithet[:i]}{rng.choice([c for c in letters if c != epithet[i]])}{epithet[i + 1:]}"
        else:
            given = f"  {genus.lower()}\u00a0 {epithet} "
        out.append((given, name, variant))
    return out


def naive(path: Path, qs: list) -> tuple[float, dict]:
    t = time.perf_counter()
    bb = pd.read_csv(path, sep="\t", usecols=["canonicalName", "taxonID"], dtype=str, quoting=3, keep_default_na=False)
    q = pd.DataFrame({"given": [g for g, _, _ in qs]})
    merged = q.merge(bb.drop_duplicates("canonicalName"), left_on="given", right_on="canonicalName", how="left")
    answers = {g: c if isinstance(c, str) else None for g, c in zip(merged.given, merged.canonicalName)}
    return time.perf_counter() - t, answers


def ours(path: Path, qs: list) -> tuple[float, dict]:
    t = time.perf_counter()
    parsed = {g: parse_name(g) for g, _, _ in qs}
    index, matches = resolve_all(str(path), [p for p in parsed.values() if p.kind == "species"])
    answers = {}
    for g, p in parsed.items():
        m = matches.get(p.key) if p.kind == "species" else None
        answers[g] = index.by_id[m.taxon_id]["canonicalName"] if m and m.taxon_id else None
    return time.perf_counter() - t, answers


def score(qs: list, answers: dict) -> tuple[int, int, Counter]:
    right = wrong = 0
    by_variant: Counter = Counter()
    for g, truth, variant in qs:
        got = answers.get(g)
        if got == truth and truth is not None or (truth is None and got is None):
            right += 1
            by_variant[variant] += 1
        elif got is not None:
            wrong += 1
    return right, wrong, by_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--names", type=int, default=5000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Taxon.tsv"
        write_big_backbone(path, a.rows)
        qs = queries(path, a.names)
        variants = Counter(v for _, _, v in qs)
        print(f"backbone: {a.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB); {len(qs)} names: {dict(variants)}")
        t_naive, ans_naive = naive(path, qs)
        t_ours, ans_ours = ours(path, qs)
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
              f"(pandas holds the whole backbone; bestiary streams it)")
    for label, t, ans in (("pandas exact merge", t_naive, ans_naive), ("bestiary", t_ours, ans_ours)):
        right, wrong, by_variant = score(qs, ans)
        print(f"{label:>20}: {len(qs) / t:8.0f} names/s ({t:.2f} s), correct {right}/{len(qs)}, wrong answers {wrong}; "
              f"correct by variant {dict(sorted(by_variant.items()))}")
    r_naive, w_naive, _ = score(qs, ans_naive)
    r_ours, w_ours, _ = score(qs, ans_ours)
    print(f"RATIO names/s bestiary / pandas: {t_naive / t_ours:.2f}")
    print(f"RATIO correct: bestiary resolves {r_ours - r_naive} more names correctly ({r_ours} vs {r_naive}); "
          f"wrong answers {w_ours} vs {w_naive}")


if __name__ == "__main__":
    main()
