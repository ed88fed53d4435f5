"""Checks every LLM caption must pass before it is stored; a failure names its reason."""
from __future__ import annotations

import re

from bestiary.captioning.scrub import leaks

INSTRUCTION_ECHO = re.compile(r"\b(ignore (all |the |any |previous |prior )*(instructions?|above|rules)|"
                              r"system prompt|as an ai|language model|<\/?record>|instructions?:)", re.I)
MIN_CHARS, MAX_CHARS = 20, 300


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def check_caption(text: str | None, names: list[str], terms: list[str], remarks: str | None) -> str | None:
    """None when the caption is fit to store, else the reason code."""
    if text is None or not text.strip():
        return "empty_output"
    text = text.strip()
    if len(text) < MIN_CHARS:
        return "too_short"
    if len(text) > MAX_CHARS:
        return "too_long"
    low = text.lower()
    if not any(n and n.lower() in low for n in names):
        return "animal_not_named"
    if INSTRUCTION_ECHO.search(text):
        return "instruction_echo"
    if remarks and _ngrams(text, 6) & _ngrams(remarks, 6):
        return "remarks_echo"  # six words in a row copied from the remarks: likely steered by them
    name_words = {w.lower() for n in names if n for w in n.split()}
    found = [t for t in leaks(text, terms) if t.lower() not in name_words and t.lower() not in " ".join(names).lower()]
    if found:
        return "place_or_person"
    return None
