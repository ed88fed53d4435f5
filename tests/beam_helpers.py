"""Run a Beam PTransform on in-memory lists, as a real (in-process) Beam pipeline, and get its outputs back."""
from __future__ import annotations

import uuid

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

_SINKS: dict[str, list] = {}


def _collect(x, sink: str) -> None:
    _SINKS[sink].append(x)


def run_transform(transform, *inputs: list):
    """`transform` applied to one PCollection per input list (a tuple when several); returns a list per
    output (a tuple of lists when the transform returns several PCollections)."""
    p = beam.Pipeline(runner=FnApiRunner())
    pcolls = tuple(p | f"input {i}" >> beam.Create(list(inp)) for i, inp in enumerate(inputs))
    out = (pcolls if len(pcolls) > 1 else pcolls[0]) | transform
    outs = tuple(out) if isinstance(out, (tuple, list)) or hasattr(out, "_tags") else (out,)
    sinks = []
    for j, o in enumerate(outs):
        sink = uuid.uuid4().hex
        _SINKS[sink] = []
        sinks.append(sink)
        _ = o | f"collect {j}" >> beam.Map(_collect, sink)
    p.run().wait_until_finish()
    got = [_SINKS.pop(s) for s in sinks]
    return tuple(got) if len(got) > 1 else got[0]
