"""bestiary's local runner: Beam's FnApiRunner with bounded bundles and a compact shuffle buffer.

As shipped, the FnApiRunner hands each SDK worker one bundle holding that
worker's whole share of a stage's input (it all arrives at once, and the worker
holds it), and keeps GroupByKey data as decoded Python objects.  A cluster
runner streams small bundles and keeps shuffles as bytes.  This runner does the
same on one machine: a stage's input is cut into bundles of at most
`BUNDLE_BYTES` (and into at least a few per worker, so a small input with heavy
work spreads), each worker takes them one at a time (or, once a bundle of a
stage has proved cheap, its share of the rest at once: each bundle costs a few
milliseconds of harness work whatever it holds), and grouping buffers hold
encoded values.  The SDK workers are unchanged: the harness Dataflow, Flink and
Spark run (started warm, see warm_workers.py).  Both changes sit on FnApiRunner
internals; where those are not as expected (another Beam version), the stock
behaviour is kept and logged.
"""
from __future__ import annotations

import collections
import itertools
import os
import logging
import threading
import time
from collections.abc import Iterable

from apache_beam.runners.portability.fn_api_runner import execution, fn_runner
from apache_beam.transforms import environments

log = logging.getLogger(__name__)
BUNDLE_BYTES = int(os.environ.get("BESTIARY_BUNDLE_BYTES", 16 << 20))
PARTS_PER_WORKER = 4   # small inputs: bundles enough that a slow one does not leave the other workers idle
# a bundle done this fast is work the harness's per-bundle cost (about 3 CPU-ms a bundle, measured on a demo
# rebuild) rivals: the worker then takes its share of what is left as one bundle (up to BUNDLE_BYTES)
CHEAP_BUNDLE_S = 0.05


class CompactGroupingBuffer(execution.GroupingBuffer):
    """A GroupingBuffer whose values stay encoded until their key's group is written out."""

    def __init__(self, pre_grouped_coder, post_grouped_coder, windowing) -> None:
        super().__init__(pre_grouped_coder, post_grouped_coder, windowing)
        self._compact = windowing.is_default()   # windowed data keeps the stock buffer's behaviour
        self._value_impl = pre_grouped_coder.value_coder().get_impl() if self._compact else None

    def append(self, elements_data: bytes) -> None:
        if not self._compact:
            return super().append(elements_data)
        if self._grouped_output:
            raise RuntimeError("Grouping table append after read.")
        stream = execution.create_InputStream(elements_data)
        coder_impl, key_impl = self._pre_grouped_coder.get_impl(), self._key_coder.get_impl()
        while stream.size() > 0:
            key, value = coder_impl.decode_from_stream(stream, True).value
            self._table[key_impl.encode(key)].append(self._value_impl.encode(value))

    def extend(self, input_buffer) -> None:
        if not self._compact:
            return super().extend(input_buffer)
        if isinstance(input_buffer, CompactGroupingBuffer):
            for key, values in input_buffer._table.items():
                self._table[key].extend(values)

    def _groups(self):
        """(encoded size, encoded grouped element) per key, the table emptied as it goes."""
        from apache_beam.transforms.window import GlobalWindow, GlobalWindows
        from apache_beam.utils import windowed_value
        pane = windowed_value.PaneInfo(is_first=True, is_last=True, timing=windowed_value.PaneInfoTiming.ON_TIME,
                                       index=0, nonspeculative_index=0)
        wrap = GlobalWindows.windowed_value(None, timestamp=GlobalWindow().max_timestamp(), pane_info=pane).with_value
        post, key_impl = self._post_grouped_coder.get_impl(), self._key_coder.get_impl()
        for encoded_key in list(self._table):
            values = [self._value_impl.decode(v) for v in self._table.pop(encoded_key)]
            out = execution.create_OutputStream()
            post.encode_to_stream(wrap((key_impl.decode(encoded_key), values)), out, True)
            yield out.get()

    def encoded_size(self) -> int:
        return sum(len(k) + sum(map(len, vs)) for k, vs in self._table.items())

    def bounded(self, limit: int) -> list[list[bytes]]:
        if self._grouped_output is None:
            self._grouped_output = [[b"".join(part)] for part in _packed(self._groups(), limit)] or [[]]
        return self._grouped_output

    def partition(self, n: int) -> list[list[bytes]]:
        if not self._compact:
            return super().partition(n)
        if self._grouped_output is None:
            streams = [[] for _ in range(n)]
            for i, group in enumerate(self._groups()):
                streams[i % n].append(group)
            self._grouped_output = [[b"".join(s)] for s in streams]
        return self._grouped_output

    def __iter__(self):
        return itertools.chain(*self.partition(1))


def _packed(pieces: Iterable[bytes], limit: int) -> list[list[bytes]]:
    """Encoded pieces (whole elements or whole groups) in order, packed into runs of at most `limit` bytes
    (a piece over the limit is a run of its own)."""
    parts, cur, size = [], [], 0
    for piece in pieces:
        if cur and size + len(piece) > limit:
            parts.append(cur)
            cur, size = [], 0
        cur.append(piece)
        size += len(piece)
    if cur:
        parts.append(cur)
    return parts


def _split_chunk(chunk: bytes, coder_impl, limit: int) -> list[bytes]:
    """A chunk of encoded elements cut into pieces of about `limit` bytes, at element boundaries."""
    stream, pieces, out = execution.create_InputStream(chunk), [], execution.create_OutputStream()
    while stream.size() > 0:
        coder_impl.encode_to_stream(coder_impl.decode_from_stream(stream, True), out, True)
        if out.size() >= limit:
            pieces.append(out.get())
            out = execution.create_OutputStream()
    if out.size():
        pieces.append(out.get())
    return pieces


def bounded_parts(buffer, limit: int, workers: int) -> list[list[bytes]]:
    """A buffer's data as bundles of at most about `limit` bytes (whole groups for grouped data), and in
    at least PARTS_PER_WORKER bundles a worker where it has that many elements: a small input with heavy
    work per element (media analysis, shard writing) must not go to one worker whole."""
    at_least = PARTS_PER_WORKER * workers
    if isinstance(buffer, CompactGroupingBuffer) and buffer._compact:
        return buffer.bounded(min(limit, max(1, -(-buffer.encoded_size() // at_least))))
    if isinstance(buffer, execution.ListBuffer) and not buffer.cleared:
        limit = min(limit, max(1, -(-sum(len(c) for c in buffer._inputs) // at_least)))
        pieces = (piece for chunk in buffer._inputs
                  for piece in (_split_chunk(chunk, buffer._coder_impl, limit) if len(chunk) > limit else [chunk]))
        return _packed(pieces, limit) or [[]]
    return buffer.partition(workers)


class _OneWorker:
    """A BundleContextManager seen through one worker handler, so a bundle goes where it is sent."""

    def __init__(self, ctx, handler):
        self._ctx, self._handler = ctx, handler

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    @property
    def worker_handlers(self):
        return [self._handler]


def _bundle_bytes(bundle: dict[str, list[bytes]]) -> int:
    return sum(len(chunk) for chunks in bundle.values() for chunk in chunks)


def take(work: collections.deque, share_of: int) -> dict[str, list[bytes]] | None:
    """The next bundle from the queue, or None when it is empty.  With `share_of` workers (a worker whose last
    bundle was cheap), the next bundles up to 1/share_of of what is left and at most BUNDLE_BYTES, as one:
    a bundle's parts are whole elements or whole groups, so joining them is a bundle too.  Which bundles
    go together changes no output (every element is still processed once), only how many the harness runs."""
    if not work:
        return None
    bundle = work.popleft()
    if share_of <= 0:
        return bundle
    more = -(-len(work) // share_of)   # this worker's share of the rest, rounded up
    size = _bundle_bytes(bundle)
    bundle = {name: list(chunks) for name, chunks in bundle.items()}
    while more and work:
        next_size = _bundle_bytes(work[0])
        if size + next_size > BUNDLE_BYTES:
            break
        size += next_size
        for name, chunks in work.popleft().items():
            bundle[name].extend(chunks)
        more -= 1
    return bundle


class BoundedBundleManager(fn_runner.ParallelBundleManager):
    """Bundles of at most BUNDLE_BYTES, each worker taking them one after another (cheap ones joined)."""

    def process_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers, dry_run=False):
        if fired_timers or expected_output_timers:  # timers run on one worker: the stock path
            return super().process_bundle(inputs, expected_outputs, fired_timers, expected_output_timers, dry_run)
        bundles = []
        for name, buffer in inputs.items():
            for part in bounded_parts(buffer, BUNDLE_BYTES, self._num_workers):
                bundles.append({n: (part if n == name else []) for n in inputs})
        work = collections.deque(bundles)
        handlers = self.bundle_context_manager.worker_handlers
        workers = max(1, min(len(handlers), len(bundles)))
        results, errors, lock = [], [], threading.Lock()

        def run(handler) -> None:
            manager = fn_runner.BundleManager(_OneWorker(self.bundle_context_manager, handler),
                                              self._progress_frequency,
                                              cache_token_generator=self._cache_token_generator)
            cheap = False
            while not errors:
                with lock:
                    part = take(work, workers if cheap else 0)
                if part is None:
                    return
                t0 = time.perf_counter()
                try:
                    got = manager.process_bundle(part, expected_outputs, {}, expected_output_timers, dry_run)
                except BaseException as err:  # noqa: BLE001 - raised below, in the runner's thread
                    errors.append(err)
                    return
                cheap = time.perf_counter() - t0 < CHEAP_BUNDLE_S
                with lock:
                    results.append(got)

        threads = [threading.Thread(target=run, args=(h,), daemon=True) for h in handlers[:workers]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        splits = [s for _, split in results for s in split]
        if len(results) == 1:
            return results[0][0], splits
        # the bundles' metrics consolidated once (sums and distributions: any order gives the same totals);
        # merging them into a running total, as Beam does for its one bundle a worker, redid every metric
        # once per bundle
        pb = fn_runner.beam_fn_api_pb2
        infos = fn_runner.monitoring_infos.consolidate(
            itertools.chain.from_iterable(r.process_bundle.monitoring_infos for r, _ in results))
        merged = pb.InstructionResponse(process_bundle=pb.ProcessBundleResponse(monitoring_infos=infos),
                                        error=next((r.error for r, _ in results if r.error), ""))
        return merged, splits


class LocalRunner(fn_runner.FnApiRunner):
    """FnApiRunner with bounded bundles (multi-worker stages) and compact grouping buffers.  It keeps the
    size of the last graph it ran (the runner API proto it was handed), so nothing serialises it twice.
    With a `worker_command`, multi-processing workers are started by that command (the warm workers'
    fork client) instead of a fresh `python -m ...sdk_worker_main`."""

    last_graph_bytes: int = 0

    def __init__(self, *args, worker_command: str | None = None, **kwargs):
        self._worker_command = worker_command
        super().__init__(*args, **kwargs)

    # FnApiRunner.run_pipeline sets the default environment to the stock subprocess command whenever the mode
    # is multi_processing; a property is the one place that sees it, so the warm command replaces it there
    @property
    def _default_environment(self):
        return self._environment

    @_default_environment.setter
    def _default_environment(self, env) -> None:
        if self._worker_command and isinstance(env, environments.SubprocessSDKEnvironment):
            env = environments.SubprocessSDKEnvironment.from_command_string(self._worker_command)
        self._environment = env

    def run_via_runner_api(self, pipeline_proto, options):
        self.last_graph_bytes = len(pipeline_proto.SerializeToString())
        return super().run_via_runner_api(pipeline_proto, options)

    def _get_bundle_manager(self, bundle_context_manager):
        stock = super()._get_bundle_manager(bundle_context_manager)
        if type(stock) is fn_runner.ParallelBundleManager:
            return BoundedBundleManager(bundle_context_manager, self._progress_frequency,
                                        cache_token_generator=stock._cache_token_generator)
        return stock


_PATCHED = False


def install() -> bool:
    """Make FnApiRunner's grouping buffers compact (module-wide, once); False where its internals differ."""
    global _PATCHED
    if _PATCHED:
        return True
    needed = (hasattr(execution, "GroupingBuffer") and hasattr(execution, "ListBuffer")
              and hasattr(fn_runner, "ParallelBundleManager") and hasattr(fn_runner.FnApiRunner, "_get_bundle_manager"))
    if not needed:
        log.warning("this Beam's FnApiRunner differs from what bestiary's local runner expects: stock bundles kept")
        return False
    execution.GroupingBuffer = CompactGroupingBuffer
    _PATCHED = True
    return True
