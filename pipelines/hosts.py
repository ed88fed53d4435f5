"""One request budget per host across all workers: host-keyed work with bounded concurrency.

Work that makes requests (crawl partitions, media downloads, name look-ups,
LLM captions) is keyed by the host it talks to and grouped.  A host with a
rate limit gets one group, so one process makes all its requests, paced by one
`Pacer` (threads share it): the rate holds whatever the number of workers,
and a worker never waits on another's budget.  A host without a limit is cut
into `slots` groups by a stable hash, which spread over workers.  Inside a
group, `threads` requests run at once (latency hides behind them).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import apache_beam as beam

from bestiary.connectors.http import HttpClient, HttpPolicy, rate_for
from bestiary.pipelines.tables import stable_bucket


def host_of(url: str | None) -> str:
    return urlsplit(url or "").netloc or "local"


def host_slot(url: str | None, key: str, policy: HttpPolicy, slots: int) -> tuple[str, int]:
    """(host, slot): a rate-limited host is one slot; an unlimited one `slots` slots by key."""
    host = host_of(url)
    return host, 0 if rate_for(host, policy) else stable_bucket(key, slots)


_DONE = object()


def threaded(items: Iterable, fn: Callable[[object], Iterator], threads: int) -> Iterator:
    """Outputs of fn(item) for every item, `threads` items at a time; items are drawn lazily, outputs
    come back as they are made (a bounded queue), and an exception in fn is raised here."""
    if threads <= 1:
        for item in items:
            yield from fn(item)
        return
    it, lock = iter(items), threading.Lock()
    out: queue.Queue = queue.Queue(maxsize=threads * 8)
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    item = next(it, _DONE)
                if item is _DONE:
                    return
                for o in fn(item):
                    out.put(("out", o))
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            out.put(("err", err))
        finally:
            out.put(("done", None))

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    running = len(pool)
    try:
        while running:
            kind, value = out.get()
            if kind == "done":
                running -= 1
            elif kind == "err":
                raise value
            else:
                yield value
    finally:
        stop.set()


class HostWork(beam.DoFn):
    """Base for host-keyed DoFns: `((host, slot), items)` -> outputs of `handle(item)`, `threads` at a time,
    through one HttpClient (one pacer per host) for the group."""

    def __init__(self, policy: HttpPolicy, threads: int):
        self.policy, self.threads = policy, threads

    def setup(self) -> None:
        self.client = HttpClient(self.policy)

    def handle(self, item) -> Iterator:
        raise NotImplementedError

    def process(self, group):
        _, items = group
        yield from threaded(items, self.handle, self.threads)


class KeyByHost(beam.DoFn):
    """item -> ((host, slot), item), from `url_of(item)` and `key_of(item)`."""

    def __init__(self, policy: HttpPolicy, slots: int, url_of: Callable, key_of: Callable):
        self.policy, self.slots, self.url_of, self.key_of = policy, slots, url_of, key_of

    def process(self, item):
        yield host_slot(self.url_of(item), self.key_of(item), self.policy, self.slots), item
