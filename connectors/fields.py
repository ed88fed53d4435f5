"""Small pure parsers for the values archives send: blanks, numbers, dates, lengths, URLs."""
from __future__ import annotations

import re
from typing import Any


def blank_to_none(value: Any) -> Any:
    """`""`, whitespace and null all mean missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def to_float(value: Any) -> float | None:
    value = blank_to_none(value)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN is missing


def parse_length(value: Any) -> float | None:
    """'M:SS' or 'H:MM:SS' (Xeno-canto) to seconds; plain seconds pass through."""
    value = blank_to_none(value)
    if value is None:
        return None
    parts = str(value).split(":")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        return None
    if len(nums) > 3 or any(n < 0 for n in nums):
        return None
    total = 0.0
    for n in nums:
        total = total * 60 + n
    return total


def parse_date(value: Any) -> str | None:
    """ISO date from 'YYYY-MM-DD' (parts may be '00'), datetimes with 'T' or ' '.

    Unknown month or day ('00') keeps only what is known: '2015-00-00' -> '2015',
    '2015-06-00' -> '2015-06'.  Nonsense gives None.
    """
    value = blank_to_none(value)
    if value is None:
        return None
    m = re.match(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?", str(value))
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    if year == "0000":
        return None
    if not month or int(month) == 0 or int(month) > 12:
        return year
    if not day or int(day) == 0 or int(day) > 31:
        return f"{year}-{int(month):02d}"
    return f"{year}-{int(month):02d}-{int(day):02d}"


def absolute_url(url: Any, scheme: str = "https") -> str | None:
    """Protocol-relative '//host/path' (Xeno-canto v2) gets a scheme."""
    url = blank_to_none(url)
    if url is None:
        return None
    return f"{scheme}:{url}" if url.startswith("//") else url


def lat_lon(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    """Coordinates from strings or numbers; out-of-range pairs are dropped together."""
    la, lo = to_float(lat), to_float(lon)
    if la is None or lo is None or not (-90 <= la <= 90) or not (-180 <= lo <= 180):
        return None, None
    return la, lo
