"""A DoFn's state and timer specs worked out once while the driver builds and submits a pipeline.

Beam asks `userstate.get_dofn_specs` up to six times for every ParDo it
applies and serializes (twice in the `DoFnSignature` that `ParDo.__init__`
makes, once in the keyed-input check of `to_runner_api`, three times in
`ParDo.to_runner_api_parameter`), and every answer inspects the signature of
every method the DoFn has (about 25).  In a demo rebuild that is about 4,200
calls, 136,000 `inspect.signature` calls and a fifth of the driver's CPU.  The
answer depends only on the DoFn's methods and their defaults, which do not
change once the DoFn is made, so inside `kept_specs()` the first answer for a
DoFn instance is kept (with the instance, so its id cannot come back for
another) and copies of it are handed out again.  Beam's own function computes
every answer; nothing else changes.

Only the processes that build or submit graphs open it (the driver, a job
process); the SDK workers of multi_processing and of a cluster run Beam's
harness as it is (in_memory's workers are threads of the driver and share its
answers, which are Beam's).  Where Beam has no `userstate.get_dofn_specs` (another
version), nothing is kept and Beam's code runs as shipped.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.transforms import userstate

log = logging.getLogger(__name__)


@contextmanager
def kept_specs() -> Iterator[None]:
    """While open, `userstate.get_dofn_specs` answers each DoFn instance from its first answer."""
    beams = getattr(userstate, "get_dofn_specs", None)
    if beams is None or getattr(beams, "kept_by_bestiary", False):   # another Beam; or one is open already
        if beams is None:
            log.debug("this Beam has no userstate.get_dofn_specs: DoFn specs are worked out every time")
        yield
        return
    kept: dict[int, tuple[object, tuple[set, set]]] = {}

    def get_dofn_specs(dofn):
        got = kept.get(id(dofn))
        if got is None or got[0] is not dofn:
            got = kept[id(dofn)] = (dofn, beams(dofn))   # raises as Beam's does, and then keeps nothing
        states, timers = got[1]
        return set(states), set(timers)   # copies: a caller that changed its sets cannot change the next answer

    get_dofn_specs.kept_by_bestiary = True
    userstate.get_dofn_specs = get_dofn_specs
    try:
        yield
    finally:
        userstate.get_dofn_specs = beams
