"""Licence strings from every archive to SPDX-style ids; unknown stays `unknown`."""
from __future__ import annotations

import fnmatch
import re

_PARTS = ("by", "nc", "sa", "nd")
# SPDX ids of permissive licences that data packages use, as written or as SPDX spells them
_OTHER = {k.lower(): v for v in ("MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ODC-By-1.0")
          for k in (v, v.replace("-Clause", ""), v.replace("-", " "))}


def _spdx(parts: list[str], version: str | None) -> str:
    return "CC-" + "-".join(p.upper() for p in parts) + f"-{version or '4.0'}"


def normalize_license(value: str | None) -> str:
    """Map a licence URL, code or phrase to an SPDX-style id.

    Examples: `//creativecommons.org/licenses/by-nc-sa/4.0/` -> `CC-BY-NC-SA-4.0`,
    `cc-by-nc` -> `CC-BY-NC-4.0`, `cc0` -> `CC0-1.0`, `CC BY-NC 4.0` -> `CC-BY-NC-4.0`.
    Null, empty or anything not recognised (all rights reserved included) is `unknown`.
    """
    if not value:
        return "unknown"
    s = value.strip().lower()
    if s in _OTHER:   # a lab's own recordings may carry a software-style licence (pykanto's data: MIT)
        return _OTHER[s]
    if re.search(r"publicdomain/zero|\bcc0\b|cc-zero", s):
        return "CC0-1.0"
    if "publicdomain/mark" in s or s in {"pd", "public domain"}:
        return "PDM-1.0"
    m = re.search(r"licenses/([a-z-]+)/(\d\.\d)", s)
    if m:
        parts = m.group(1).split("-")
        version = m.group(2)
    else:
        m = re.match(r"^(?:cc)[\s_-]*((?:by|nc|sa|nd)(?:[\s_-]+(?:by|nc|sa|nd))*)(?:[\s_-]+(\d\.\d))?$", s)
        if not m:
            return "unknown"
        parts = re.split(r"[\s_-]+", m.group(1))
        version = m.group(2)
    if not parts or parts[0] != "by" or any(p not in _PARTS for p in parts) or len(set(parts)) != len(parts):
        return "unknown"
    return _spdx(parts, version)


def license_allowed(spdx: str, allow: list[str]) -> bool:
    """Whether an SPDX-style id matches one of the allow patterns (`CC-BY-*` style globs)."""
    return spdx != "unknown" and any(fnmatch.fnmatchcase(spdx, pat) for pat in allow)


def no_derivatives(spdx: str) -> bool:
    """ND licences allow sharing only unchanged copies; clips cut, resampled and re-encoded are adaptations."""
    return spdx.startswith("CC-") and "ND" in spdx.split("-")


def license_url(spdx: str) -> str | None:
    """The deed of an SPDX-style Creative Commons id (None for `unknown`)."""
    if spdx == "CC0-1.0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    if spdx == "PDM-1.0":
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    if spdx in _OTHER.values():
        return f"https://spdx.org/licenses/{spdx}.html"
    m = re.fullmatch(r"CC-((?:BY|NC|SA|ND)(?:-(?:BY|NC|SA|ND))*)-(\d\.\d)", spdx or "")
    if not m:
        return None
    return f"https://creativecommons.org/licenses/{m.group(1).lower()}/{m.group(2)}/"


def pair_license(a: str, b: str | None) -> str:
    """The licence a sample of two works (audio and image) can be used under: every condition of either
    (BY, NC, SA, ND), at the later version; a public-domain work adds none; unknown with anything is unknown."""
    if b is None or b == a:
        return a
    if "unknown" in (a, b):
        return "unknown"
    free = {"CC0-1.0", "PDM-1.0"}
    if a in free or b in free:
        return b if a in free else a
    if not (a.startswith("CC-") and b.startswith("CC-")):   # not both Creative Commons: both apply, as SPDX says
        return f"{a} AND {b}"
    pa_, pb = a.split("-"), b.split("-")
    parts = [p for p in ("BY", "NC", "SA", "ND") if p in pa_[1:-1] or p in pb[1:-1]]
    return "CC-" + "-".join(parts) + "-" + max(pa_[-1], pb[-1])
