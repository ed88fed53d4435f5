"""The Beam runner every stage uses: an explicitly built FnApiRunner.

`--runner=DirectRunner` would first try to download the Prism binary; the
FnApiRunner is built here with the pipeline options passed to it, so
`multi_processing` workers (the SDK harness Dataflow, Flink and Spark run)
receive them too.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from bestiary.schemas.config import RunnerConfig


def pipeline_options(runner: RunnerConfig, extra: list[str] | None = None) -> PipelineOptions:
    return PipelineOptions(
        (extra or []) + [f"--direct_num_workers={runner.workers}", f"--direct_running_mode={runner.mode}"],
        save_main_session=False,
    )


def make_pipeline(runner: RunnerConfig, extra: list[str] | None = None) -> beam.Pipeline:
    return beam.Pipeline(runner=FnApiRunner(), options=pipeline_options(runner, extra))
