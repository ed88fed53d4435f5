"""What a long command shows on stderr: per stage a live line (its name and the time so far, redrawn each
second while Beam works), then one summary line with counts and rates from the stage's own stats.

Off for library calls; the command line turns it on (`--quiet` keeps it off)."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

ENABLED = False


def enable(on: bool = True) -> None:
    global ENABLED
    ENABLED = on


@contextmanager
def stage(name: str):
    """A live line for one stage; `yield`s a dict the caller fills with `summary` (one line of counts)."""
    out: dict = {}
    if not ENABLED:
        yield out
        return
    from tqdm import tqdm
    bar = tqdm(total=None, desc=f"{name:<9}", bar_format="{desc} {elapsed} {postfix}", file=sys.stderr,
               dynamic_ncols=True, leave=False)
    stop = threading.Event()

    # Beam gives no per-record callback in the driver: redraw the clock meanwhile; each second on a terminal,
    # each minute into a log file (where a redraw is a new line, not an overwrite)
    every = 1.0 if sys.stderr.isatty() else 60.0

    def tick() -> None:
        while not stop.wait(every):
            bar.refresh()
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    t0 = time.time()
    try:
        yield out
    finally:
        stop.set()
        ticker.join()
        bar.close()
    took = time.time() - t0
    print(f"{name:<9} {took:6.1f} s  {out.get('summary', 'done')}", file=sys.stderr, flush=True)


def rate(n: int, seconds: float, unit: str) -> str:
    return f"{n:,} {unit} ({n / seconds:,.1f}/s)" if seconds > 0 else f"{n:,} {unit}"


def bar(iterable, total: int | None, desc: str, unit: str):
    """A tqdm bar over an iterable when on; the iterable itself when off."""
    if not ENABLED:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
