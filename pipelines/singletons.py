"""One-element branches of a stage's graph (its stats, a table's size) in as few transforms as Beam allows.

By default every global combine (`CombineGlobally`, `ToDict`, `ToList`, `Count.Globally`, `Top.Of`) adds a
branch that gives the empty input's value: a Create, a side input and a ParDo, five more transforms and a
stage of their own, and a build has about thirty such combines.  So bestiary's global combines run
`.without_defaults()` (nothing comes out of an empty input), and each reader names the empty value
instead, as the side input's default: `one(pcoll, empty)`.  `Once` is a branch's single element straight
from an Impulse (`Create` adds a reshuffle and a decode step, which only a list of many elements needs).
"""
from __future__ import annotations

from typing import Any

import apache_beam as beam


def _value(_, value: Any) -> Any:
    return value


class Once(beam.PTransform):
    """pbegin -> one element, `value` (small: it travels in the graph)."""

    def __init__(self, value: Any = None):
        super().__init__()
        self.value = value

    def expand(self, pbegin):
        return pbegin | "impulse" >> beam.Impulse() | "value" >> beam.Map(_value, self.value)


class Nothing(beam.PTransform):
    """pbegin -> an empty PCollection (where an optional input is absent)."""

    def expand(self, pbegin):
        return pbegin | "impulse" >> beam.Impulse() | "none" >> beam.FlatMap(lambda _: ())


def one(pcoll, empty: Any) -> beam.pvalue.AsSingleton:
    """A global combine's result as a side input; `empty` when its input had no elements."""
    return beam.pvalue.AsSingleton(pcoll, default_value=empty)
