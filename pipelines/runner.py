"""The Beam runner every stage uses, and the log of every pipeline's graph size.

Locally the runner is an explicitly built FnApiRunner with the pipeline
options in its provision info, so `multi_processing` workers (each a separate
SDK harness, as on Dataflow, Flink and Spark) receive them too: without that,
a worker knows no `s3_endpoint_url` and no filesystem settings.  Credentials
stay in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS), which the
workers inherit.  (`--runner=DirectRunner` would first try to download the
Prism binary.)

`runner.job_process: true` submits each pipeline the way a cluster gets it:
the driver serialises the graph (the runner API proto) and a separate job
process runs it, so the driver's memory is the driver's alone (the local
runner keeps every stage boundary in memory, which a cluster spreads over its
workers).  Every pipeline's serialized size is logged to `work/graphs.json`.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

from bestiary.pipelines.dofn_specs import kept_specs
from bestiary.pipelines.local_runner import LocalRunner, install
from bestiary.schemas.config import ConfigError, RunnerConfig

log = logging.getLogger(__name__)


class _HarmlessWorkerWarnings(logging.Filter):
    """Every worker of every pipeline warns that it has no staged main session, which bestiary never uses
    (nothing is defined in __main__): a dozen identical lines a build that hide the ones that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No semi_persistent_directory found" not in record.getMessage()


logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(_HarmlessWorkerWarnings())
GRAPHS: list[tuple[str, int]] = []   # (pipeline, serialized graph bytes) of every pipeline this process ran


class StageOptions(PipelineOptions):
    """Beam's pipeline options, with one view per options class.

    Beam asks the pipeline's options for a view (`view_as`) a few times for every transform it applies (type
    checks, labels), and each view parses the flags with a new argparse parser of its options class: 0.6 ms
    a view, about 6,600 views and 5 to 6 of the driver's 30 CPU-s in a demo build.  A view keeps nothing of its
    own (every view reads and writes the options' one shared dict), so reusing the first view of a class is
    the same as making another."""

    def view_as(self, cls):
        # in __dict__ itself: PipelineOptions.__setattr__ takes option names only, and a copy skips __init__
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        # a copy (Beam deep-copies a pipeline's options) or a pickle makes its own views
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def pipeline_options(runner: RunnerConfig) -> PipelineOptions:
    if runner.mode == "portable":  # Dataflow, Flink, Spark: their options as given
        return StageOptions(list(runner.options), save_main_session=False)
    return StageOptions(
        list(runner.options) + [f"--direct_num_workers={runner.workers}", f"--direct_running_mode={runner.mode}"],
        save_main_session=False,
    )


def configure_filesystems(runner: RunnerConfig) -> PipelineOptions:
    """The driver's own FileSystems calls (plans, manifests) use the same options as the workers."""
    options = pipeline_options(runner)
    FileSystems.set_options(options)
    return options


def local_runner(runner: RunnerConfig) -> FnApiRunner:
    # many short-lived allocations from gRPC threads: glibc's per-thread arenas would keep them all
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    # a worker is one core's share of the work: OpenBLAS threads of its own only spin-wait against the other
    # workers (measured: they doubled the CPU seconds of media analysis on two cores)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # the workers get the user's options only: the runner's own --direct_* ints would come back as
    # floats through the protobuf Struct, and the harness's argument parser would refuse them
    # and the harness logs warnings and errors only, unless the user asks for its INFO lines
    quiet = [] if any(o.startswith("--default_sdk_harness_log_level") for o in runner.options) else \
        ["--default_sdk_harness_log_level=WARNING"]
    for_workers = PipelineOptions(list(runner.options) + quiet, save_main_session=False).to_runner_api()
    provision = ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=for_workers))
    if install():
        warm = None
        if runner.mode == "multi_processing" and runner.warm_workers:
            from bestiary.pipelines.warm_workers import worker_command
            warm = worker_command()
        return LocalRunner(provision_info=provision, worker_command=warm)
    return FnApiRunner(provision_info=provision)


def make_pipeline(runner: RunnerConfig) -> beam.Pipeline:
    options = configure_filesystems(runner)
    if runner.mode == "portable":
        if not any(o.startswith("--runner") for o in runner.options):
            raise ConfigError("runner.mode portable needs --runner=DataflowRunner|FlinkRunner|SparkRunner "
                              "in runner.options")
        return beam.Pipeline(options=options)
    return beam.Pipeline(runner=local_runner(runner), options=options)


def graph_bytes(p: beam.Pipeline) -> int:
    """The size of the job a runner would be sent: the serialized runner API proto."""
    return len(p.to_runner_api().SerializeToString())


def record_graph(name: str, size: int, out: str | None) -> None:
    GRAPHS.append((name, size))
    log.info("pipeline %s: graph %d bytes", name, size)
    if out is None:
        return
    from bestiary.pipelines import io
    path = io.join(out, "work", "graphs.json")
    sizes = io.read_json(path) if io.exists(path) else {}
    sizes[name] = size
    io.write_json(path, sizes)


def run(p: beam.Pipeline, runner: RunnerConfig, name: str, out: str | None = None) -> None:
    """Run a built pipeline to completion (here, in a job process, or on the portable runner), and log the
    size of the graph the runner was given."""
    if runner.job_process and runner.mode != "portable":
        record_graph(name, _run_in_job_process(p, runner, name), out)
        return
    if isinstance(p.runner, LocalRunner):
        p.run().wait_until_finish()
        record_graph(name, p.runner.last_graph_bytes, out)
        return
    record_graph(name, graph_bytes(p), out)
    p.run().wait_until_finish()


@contextmanager
def pipeline(runner: RunnerConfig, name: str, out: str | None = None):
    """`with pipeline(cfg.runner, "crawl", cfg.out) as p:` builds a graph and runs it on exit."""
    with kept_specs():   # the driver works out each DoFn's specs once (dofn_specs.py)
        p = make_pipeline(runner)
        yield p
        run(p, runner, name, out)


def _run_in_job_process(p: beam.Pipeline, runner: RunnerConfig, name: str) -> int:
    """The pipeline's serialized graph run by a job process; returns the graph's size."""
    with tempfile.TemporaryDirectory(prefix="bestiary-job-") as tmp:
        graph = os.path.join(tmp, "graph.pb")
        data = p.to_runner_api().SerializeToString()
        with open(graph, "wb") as fh:
            fh.write(data)
        errors = os.path.join(tmp, "stderr.log")   # a file, not a pipe: a chatty job never fills the driver
        with open(errors, "wb") as err:
            done = subprocess.run([sys.executable, "-m", "bestiary.pipelines.jobrun", graph,
                                   runner.model_dump_json()], stdout=subprocess.DEVNULL, stderr=err)
        if done.returncode != 0:
            with open(errors, "rb") as fh:
                fh.seek(max(0, os.path.getsize(errors) - 8000))
                tail = fh.read().decode(errors="replace").strip().splitlines()[-20:]
            raise RuntimeError(f"pipeline {name} failed in its job process (exit {done.returncode}):\n"
                               + "\n".join(tail))
    return len(data)


def run_job(graph_path: str, runner_json: str) -> None:
    """The job process: rebuild the pipeline from its proto and run it on the local runner."""
    from apache_beam.portability.api import beam_runner_api_pb2
    runner = RunnerConfig.model_validate_json(runner_json)
    with open(graph_path, "rb") as fh:
        proto = beam_runner_api_pb2.Pipeline.FromString(fh.read())
    options = configure_filesystems(runner)
    fn_runner = local_runner(runner)
    with kept_specs():
        p = beam.Pipeline.from_runner_api(proto, fn_runner, options)
        fn_runner.run_pipeline(p, options).wait_until_finish()
