"""The Beam runner every stage uses: an explicitly built FnApiRunner.

`--runner=DirectRunner` would first try to download the Prism binary.  The
FnApiRunner is built here with the pipeline options in its provision info, so
`multi_processing` workers (each a separate SDK harness, as on Dataflow, Flink
and Spark) receive them too: without that, a worker knows no `s3_endpoint_url`
and no filesystem settings.  Credentials stay in the environment (AWS_*,
GOOGLE_APPLICATION_CREDENTIALS), which the workers inherit.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

from bestiary.schemas.config import RunnerConfig


def pipeline_options(runner: RunnerConfig) -> PipelineOptions:
    if runner.mode == "portable":  # Dataflow, Flink, Spark: their options as given
        return PipelineOptions(list(runner.options), save_main_session=False)
    return PipelineOptions(
        list(runner.options) + [f"--direct_num_workers={runner.workers}", f"--direct_running_mode={runner.mode}"],
        save_main_session=False,
    )


def configure_filesystems(runner: RunnerConfig) -> PipelineOptions:
    """The driver's own FileSystems calls (plans, manifests) use the same options as the workers."""
    options = pipeline_options(runner)
    FileSystems.set_options(options)
    return options


def make_pipeline(runner: RunnerConfig) -> beam.Pipeline:
    options = configure_filesystems(runner)
    if runner.mode == "portable":
        if not any(o.startswith("--runner") for o in runner.options):
            raise ValueError("runner.mode portable needs --runner=DataflowRunner|FlinkRunner|SparkRunner in runner.options")
        return beam.Pipeline(options=options)
    # the workers get the user's options only: the runner's own --direct_* ints would come back as
    # floats through the protobuf Struct, and the harness's argument parser would refuse them
    for_workers = PipelineOptions(list(runner.options), save_main_session=False).to_runner_api()
    provision = ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=for_workers))
    return beam.Pipeline(runner=FnApiRunner(provision_info=provision), options=options)
