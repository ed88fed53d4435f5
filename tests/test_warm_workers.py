"""Multi-processing workers forked from the warm worker server: real Beam pipelines on the local runner's
multi-processing mode, the server's lifetimes, and the fork client's exit codes."""
import glob
import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import psutil
import pytest

from bestiary.pipelines import warm_workers
from bestiary.pipelines.runner import pipeline
from bestiary.schemas.config import RunnerConfig


def run_tagged(out: str, warm: bool) -> list[tuple[int, int, int]]:
    """64 elements through a two-worker pipeline; (element, worker pid, worker's parent pid) each."""
    def where(x: int) -> str:   # local: pickled by value, as the test module is not importable by workers
        import os
        return f"{x} {os.getpid()} {os.getppid()}"

    runner = RunnerConfig(mode="multi_processing", workers=2, warm_workers=warm)
    with pipeline(runner, "tagged") as p:
        _ = (p | beam.Create(range(64)) | beam.Reshuffle() | beam.Map(where)
             | beam.io.WriteToText(out, num_shards=1))
    rows = [tuple(map(int, line.split())) for f in glob.glob(out + "*") for line in open(f)]
    return sorted(rows)


@pytest.mark.timeout(300)
def test_workers_are_forked_from_the_server_fresh_for_each_pipeline(tmp_path):
    first = run_tagged(str(tmp_path / "a"), warm=True)
    server = warm_workers._server
    assert server is not None and server.poll() is None
    assert [r[0] for r in first] == list(range(64))     # every element, once
    assert {r[2] for r in first} == {server.pid}          # every worker a child of the server
    assert len({r[1] for r in first}) == 2                # the work spread over both workers
    second = run_tagged(str(tmp_path / "b"), warm=True)
    assert {r[2] for r in second} == {server.pid}
    assert not {r[1] for r in first} & {r[1] for r in second}   # fresh processes: nothing carried over


@pytest.mark.timeout(300)
def test_cold_workers_give_the_same_output(tmp_path):
    warm = run_tagged(str(tmp_path / "w"), warm=True)
    cold = run_tagged(str(tmp_path / "c"), warm=False)
    assert [r[0] for r in cold] == [r[0] for r in warm]
    server = warm_workers._server
    assert server is None or not {r[2] for r in cold} & {server.pid}   # stock subprocess workers


def test_a_failing_dofn_fails_the_pipeline_not_hangs(tmp_path):
    def boom(x):
        raise ValueError(f"bad element {x}")
    runner = RunnerConfig(mode="multi_processing", workers=2)
    with pytest.raises(Exception, match="bad element"):
        with pipeline(runner, "boom") as p:
            _ = p | beam.Create(range(4)) | beam.Map(boom)


def test_the_client_exits_with_its_workers_code():
    """A worker without a control endpoint fails at once: the client reports exit 1 (never 0, never a hang)."""
    path = warm_workers.ensure_server()
    env = {k: v for k, v in os.environ.items() if k != "CONTROL_API_SERVICE_DESCRIPTOR"}
    done = subprocess.run(warm_workers.worker_command().split(), env=env, timeout=60, capture_output=True)
    assert path and done.returncode == 1


DRIVER = """
import sys, time
from bestiary.pipelines import warm_workers
warm_workers.ensure_server()
print(warm_workers._server.pid, flush=True)
time.sleep(600)
"""


def test_the_server_dies_with_the_process_that_started_it():
    env = {k: v for k, v in os.environ.items() if k != warm_workers.ENV}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    server_pid = int(driver.stdout.readline())
    assert psutil.pid_exists(server_pid)
    driver.send_signal(signal.SIGKILL)   # no atexit, no cleanup: only the lifeline pipe tells the server
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker server outlived its driver")


def test_killing_the_client_stops_its_worker():
    """The runner stops a worker by killing its command: the forked worker must go with it."""
    import socket
    warm_workers.ensure_server()
    server = psutil.Process(warm_workers._server.pid)
    with socket.socket() as silent:   # a control endpoint that accepts and never answers: the worker waits on it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {**os.environ, "CONTROL_API_SERVICE_DESCRIPTOR": f'url: "127.0.0.1:{silent.getsockname()[1]}"',
               "PIPELINE_OPTIONS": "{}", "WORKER_ID": "test-worker"}
        client = subprocess.Popen(warm_workers.worker_command().split(), env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = server.children()[0]
        time.sleep(1.0)
        assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE   # waiting, not failed
        client.kill()
        client.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if worker.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:   # reaped already (between two looks, too)
                return
            time.sleep(0.05)
        pytest.fail("the worker outlived its client")


@pytest.mark.timeout(300)
def test_metrics_of_every_bundle_add_up(tmp_path):
    """The local runner cuts a stage into many bundles (here one a group) and adds up their metrics:
    a counter and a distribution over 64 elements come back whole, each element counted once."""
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter

    from bestiary.pipelines.runner import make_pipeline

    def counted(x: int) -> int:
        Metrics.counter("test", "elements").inc()
        Metrics.distribution("test", "values").update(x)
        return x

    p = make_pipeline(RunnerConfig(mode="multi_processing", workers=2))
    _ = (p | beam.Create(range(64)) | beam.Map(lambda x: (x % 16, x)) | beam.GroupByKey()   # 16 groups: up to 16 bundles
         | beam.FlatMap(lambda kv: kv[1]) | beam.Map(counted) | beam.io.WriteToText(str(tmp_path / "n"), num_shards=1))
    result = p.run()
    result.wait_until_finish()
    got = result.metrics().query(MetricsFilter().with_namespace("test"))
    (counter,), (dist,) = got["counters"], got["distributions"]
    assert counter.committed == 64
    assert (dist.committed.count, dist.committed.sum, dist.committed.min, dist.committed.max) == (64, 2016, 0, 63)
    assert sorted(int(x) for x in open(str(tmp_path / "n") + "-00000-of-00001")) == list(range(64))


def bundles_of_a_grouped_stage(tmp_path, name: str, seconds_each: float) -> tuple[int, list[int], set[int]]:
    """16 groups of 4 through a two-worker stage; (bundles the stage ran in, its elements, worker pids)."""
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter

    from bestiary.pipelines.runner import make_pipeline

    class Tagged(beam.DoFn):
        def start_bundle(self):
            Metrics.counter("test", "bundles").inc()

        def process(self, kv):
            import os
            import time
            time.sleep(seconds_each)
            for x in kv[1]:
                yield f"{x} {os.getpid()}"

    out = str(tmp_path / name)
    p = make_pipeline(RunnerConfig(mode="multi_processing", workers=2))
    _ = (p | beam.Create(range(64)) | beam.Map(lambda x: (x % 16, x)) | beam.GroupByKey()
         | beam.ParDo(Tagged()) | beam.io.WriteToText(out, num_shards=1))
    result = p.run()
    result.wait_until_finish()
    (bundles,) = result.metrics().query(MetricsFilter().with_name("bundles"))["counters"]
    rows = [line.split() for line in open(out + "-00000-of-00001")]
    return bundles.committed, sorted(int(x) for x, _ in rows), {int(pid) for _, pid in rows}


@pytest.mark.timeout(300)
def test_cheap_bundles_are_joined_and_heavy_ones_stay_spread(tmp_path, monkeypatch):
    """The runner cuts the 16 groups into 16 bundles (at least 4 a worker, whole groups each).  Where a bundle takes longer than
    CHEAP_BUNDLE_S, every bundle runs on its own, spread over both workers; where bundles are cheap, a worker
    takes its share of the rest as one bundle (each costs harness work), and every element still comes once."""
    from bestiary.pipelines import local_runner
    assert local_runner.CHEAP_BUNDLE_S < 0.2
    heavy, elements, pids = bundles_of_a_grouped_stage(tmp_path, "heavy", seconds_each=0.1)   # 0.1 s a bundle
    assert heavy == 16 and elements == list(range(64)) and len(pids) == 2
    monkeypatch.setattr(local_runner, "CHEAP_BUNDLE_S", 60.0)   # every bundle cheap, however loaded the machine
    cheap, elements, pids = bundles_of_a_grouped_stage(tmp_path, "cheap", seconds_each=0.0)
    # a first bundle each, then half of what is left each time (7, 4, 2, 1 of the other 14): at most 6, not 16
    assert cheap <= 6 and elements == list(range(64)) and len(pids) >= 1
