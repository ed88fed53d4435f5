"""SDK-harness workers forked from one warm process, for the local multi-processing runner.

Beam's multi-processing mode starts every worker as a fresh `python -m
apache_beam.runners.worker.sdk_worker_main`: each of a build's six pipelines,
times the worker count, pays for the interpreter and for importing Beam,
pyarrow, numpy, scipy and bestiary again (about 2 CPU-s a worker, most of the
fixed cost of a demo rebuild).  Here one server process imports all that once
and forks a worker per request.  The runner still starts its worker command
(a stdlib-only client, `fork_client.py`); the client hands its environment
(control endpoint, logging endpoint, pipeline options, worker id: what the
runner gives a worker) to the server and waits; the forked child runs the same
entry point, `sdk_worker_main.main`, with that environment.  So the harness is
the one Dataflow, Flink and Spark run, only started warm, and each pipeline
still gets fresh worker processes (nothing carries over between pipelines).

Lifetimes: the server dies with the process that started it (its stdin is a
pipe from that process); a worker dies when its client does (the runner kills
the client to stop a worker); the client exits with the worker's exit code.
The server's socket path is in BESTIARY_WORKER_SERVER, so job processes
(`runner.job_process`) use the driver's server.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)
ENV = "BESTIARY_WORKER_SERVER"
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fork_client.py")
# what every worker imports anyway: paid once in the server instead of once per worker
PRELOAD = ("apache_beam.runners.worker.sdk_worker_main", "apache_beam.runners.worker.bundle_processor",
           "apache_beam.runners.worker.operations", "apache_beam.io.parquetio", "pyarrow.parquet",
           "numpy", "scipy.fft", "soundfile", "soxr", "PIL.Image", "requests",
           "bestiary.pipelines.crawl", "bestiary.pipelines.enrich", "bestiary.pipelines.caption",
           "bestiary.pipelines.shard", "bestiary.pipelines.probe", "bestiary.pipelines.finalize",
           "bestiary.media.fingerprints", "bestiary.media.salience")

_server: subprocess.Popen | None = None


def worker_command() -> str | None:
    """The worker command for the runner: the fork client of a running server (started here if none is),
    or None where warm workers cannot run (then the runner starts cold ones)."""
    path = ensure_server()
    return f"{sys.executable} -I -S {CLIENT} {path}" if path else None


def ensure_server(timeout: float = 60.0) -> str | None:
    """The socket path of this process tree's server, starting one if there is none."""
    global _server
    path = os.environ.get(ENV)
    if path and _alive(path):
        return path
    if sys.platform != "linux":   # forking a process that has loaded these libraries is safe on Linux only
        return None
    path = os.path.join(tempfile.mkdtemp(prefix="bestiary-workers-"), "sock")
    # stdin is the lifeline: when this process ends, the server reads EOF and ends with its workers
    _server = subprocess.Popen([sys.executable, "-m", "bestiary.pipelines.warm_workers", path],
                               stdin=subprocess.PIPE)
    atexit.unregister(stop_server)   # once, however many servers this process starts
    atexit.register(stop_server)
    t0 = time.monotonic()
    while not _alive(path):
        if _server.poll() is not None or time.monotonic() - t0 > timeout:
            log.warning("the warm worker server did not start (exit %s): workers start cold", _server.poll())
            stop_server()
            return None
        time.sleep(0.02)
    os.environ[ENV] = path
    return path


def stop_server() -> None:
    global _server
    if _server is not None and _server.poll() is None:
        _server.stdin.close()
        try:
            _server.wait(10)
        except subprocess.TimeoutExpired:
            _server.kill()
            _server.wait()
    if _server is not None:   # this process started it, so the variable is this process's to take back
        os.environ.pop(ENV, None)
    _server = None


def _alive(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"ping\n")
            return s.recv(16) == b"pong\n"
    except OSError:
        return False


class Server:
    """Accepts client connections; forks a worker per request; tells each client its worker's exit code."""

    def __init__(self, path: str):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(sys.stdin.buffer, selectors.EVENT_READ, "lifeline")
        self.pending: dict[socket.socket, bytes] = {}
        self.workers: dict[int, socket.socket] = {}     # pid -> its client's connection

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select(timeout=0.05):
                if key.data == "lifeline":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return self.shutdown()
                elif key.data == "accept":
                    conn, _ = self.listener.accept()
                    self.pending[conn] = b""
                    self.sel.register(conn, selectors.EVENT_READ, "request")
                elif key.data == "request":
                    self._read(key.fileobj)
                else:   # a running worker's client: EOF means the runner stopped it
                    if not key.fileobj.recv(4096):
                        self.sel.unregister(key.fileobj)   # told once; the worker is reaped below
                        self._kill(key.data)
            self._reap()

    def _read(self, conn: socket.socket) -> None:
        chunk = conn.recv(1 << 16)
        if not chunk:
            self._drop(conn)
            return
        self.pending[conn] += chunk
        if not self.pending[conn].endswith(b"\n"):
            return
        line = self.pending.pop(conn)
        self.sel.unregister(conn)
        if line == b"ping\n":
            conn.sendall(b"pong\n")
            conn.close()
            return
        try:
            request = json.loads(line)
            request["env"], request["cwd"]
        except (ValueError, KeyError, TypeError):   # not our client: refused, the server goes on
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            self._child(conn, request)
        self.workers[pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, pid)

    def _child(self, conn: socket.socket, request: dict) -> None:
        """In the fork: the SDK harness, as `python -m apache_beam.runners.worker.sdk_worker_main` runs it."""
        code = 1
        try:
            self.sel.close()
            self.listener.close()
            conn.close()
            for c in list(self.pending) + list(self.workers.values()):
                c.close()
            os.close(sys.stdin.fileno())
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            import logging as logs   # as a fresh interpreter has it: the harness sets its own handler and level
            root = logs.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
            root.setLevel(logs.WARNING)
            from apache_beam.runners.worker import sdk_worker_main
            sdk_worker_main.main(["sdk_worker_main"])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except BaseException:  # noqa: BLE001 - a worker's failure is its exit code, told to the runner
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.workers.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            try:
                self.sel.unregister(conn)
                conn.sendall(f"{code}\n".encode())
            except (OSError, KeyError, ValueError):
                pass
            conn.close()

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _drop(self, conn: socket.socket) -> None:
        self.pending.pop(conn, None)
        self.sel.unregister(conn)
        conn.close()

    def shutdown(self) -> None:
        for pid in list(self.workers):
            self._kill(pid)
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        self.listener.close()
        try:
            os.remove(self.path)
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass


def main(path: str) -> None:
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:   # an optional extra: a worker imports it when it needs it
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the driver; the lifeline ends us
    Server(path).serve()


if __name__ == "__main__":
    main(sys.argv[1])
