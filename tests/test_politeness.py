"""One request budget per host across all workers: a crawl on 2 and on 4 SDK-harness workers never sends
the sample archive more than its configured rate in any one-second window (one request of slack)."""
from __future__ import annotations

import pytest

from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
from tests.conftest import tiny_config

RATE = 5


def worst_window(times: list[float], width: float = 1.0) -> int:
    """The most requests in any window [t, t + width) (each window starting at a request suffices)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + width:
            j += 1
        best = max(best, j - i)
    return best


def test_worst_window_counts_what_it_should():
    assert worst_window([0, 0.1, 0.2, 1.15, 1.2]) == 3
    assert worst_window([0, 1, 2, 3]) == 1


@pytest.mark.timeout(900)
@pytest.mark.parametrize("workers", [2, 4])
def test_crawl_keeps_the_host_rate_whatever_the_worker_count(archive_server, tmp_path, workers):
    state, url = archive_server
    cfg = tiny_config(url, str(tmp_path / "out"), runner={"mode": "multi_processing", "workers": workers})
    for s in cfg["sources"]:
        s["requests_per_second"] = RATE
    cfg["sources"][0]["queries"] = ["grp:birds", "gen:Strix", "gen:Bubo"]   # more partitions than workers
    state.request_log = []
    try:
        build(parse_config(cfg), only=("crawl",))
        times = [t for t, _ in state.request_log]
    finally:
        state.request_log = None
    assert len(times) >= 3 * RATE                      # long enough to see the rate
    assert worst_window(times) <= RATE + 1, worst_window(times)


def test_the_pacer_gives_each_request_its_own_tick():
    from bestiary.connectors.http import Pacer
    now, times = [100.0], []

    def sleep(d):
        now[0] += d

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(9):
        pacer.acquire()
        times.append(now[0])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.25 - 1e-9 and worst_window(times) <= 4
