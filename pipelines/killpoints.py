"""Fixed points where a crash test can kill the build (SIGKILL, no clean-up), to prove a rerun finishes it.

`BESTIARY_KILL_AT=name[:n]` kills the process the n-th time (default 1st) it reaches `name`.  The
points: `crawl:page` (after a page and its cursor are kept), `materialize:tar` (a shard's tar renamed
into place, its summary not yet written), `finalize:manifest` (the versioned manifest written, the
latest not yet).  Unset, this costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def killpoint(name: str) -> None:
    spec = os.environ.get("BESTIARY_KILL_AT")
    if not spec:
        return
    point, nth = spec, "1"
    if spec.rsplit(":", 1)[-1].isdigit():  # 'materialize:tar:3' -> the 3rd time
        point, nth = spec.rsplit(":", 1)
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
