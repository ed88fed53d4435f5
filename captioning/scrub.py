"""Keep people and places out of LLM inputs and outputs (BioLingual scrubbed both).

Inputs: the recordist's and observer's names, locality words, coordinates,
URLs, e-mail addresses and @handles are removed from remarks before they are
sent.  Outputs: `leaks` lists which of those still appear in a caption.
"""
from __future__ import annotations

import re

URL = re.compile(r"(https?://|www\.)\S+|\S+\.(com|org|net|edu)\b\S*", re.I)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
HANDLE = re.compile(r"(?<!\w)@\w+")
COORD = re.compile(r"[-+]?\d{1,3}\.\d{2,}\s*°?\s*[NSEW]?\s*,?\s*[-+]?\d{1,3}\.\d{2,}\s*°?\s*[NSEW]?")
PLACE_HINT = re.compile(r"\b(?:near|at|in|from|outside)\s+((?:[A-Z][\w'-]+\s?){1,4})")
STOP = {"The", "A", "An", "This", "That", "Dawn", "Dusk", "Morning", "Evening", "Night", "Spring", "Summer",
        "Autumn", "Winter"}


def sensitive_terms(record: dict) -> list[str]:
    """Names and places this record carries, longest first (so 'New York' goes before 'York')."""
    terms = set()
    for field in ("recordist", "country", "locality", "place_guess", "attribution"):
        value = record.get(field)
        if value:
            terms.add(str(value).strip())
            terms.update(w for w in re.split(r"[\s,;/()]+", str(value)) if len(w) > 3 and w[0].isupper())
    for m in PLACE_HINT.finditer(record.get("remarks") or ""):
        words = [w for w in m.group(1).split() if w not in STOP]
        if words:
            terms.add(" ".join(words))
    return sorted((t for t in terms if t), key=len, reverse=True)


def scrub(text: str | None, terms: list[str]) -> str | None:
    """Remarks with people, places, coordinates, URLs and contacts removed."""
    if not text:
        return text
    out = URL.sub("[link]", text)
    out = EMAIL.sub("[contact]", out)
    out = HANDLE.sub("[person]", out)
    out = COORD.sub("[coordinates]", out)
    for term in terms:
        out = re.sub(rf"(?<!\w){re.escape(term)}(?!\w)", "[redacted]", out)
    return re.sub(r"\s+", " ", out).strip()


def leaks(text: str, terms: list[str]) -> list[str]:
    """Sensitive strings present in a generated caption."""
    found = [t for t in terms if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", text, re.I)]
    if URL.search(text):
        found.append("url")
    if EMAIL.search(text):
        found.append("email")
    if COORD.search(text):
        found.append("coordinates")
    return found
