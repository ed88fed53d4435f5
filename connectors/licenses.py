"""Licence strings from every archive to SPDX-style ids; unknown stays `unknown`."""
from __future__ import annotations

import fnmatch
import re

_PARTS = ("by", "nc", "sa", "nd")


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
