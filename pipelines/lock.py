"""One writer per output folder: `OUT/.bestiary.lock` names the build that holds it (pid, host, start).

A second build of the same output stops with one line naming the holder.  A lock left by a process that
is gone (same host, pid not running) is taken over, with a line saying so.  A lock from another host
cannot be checked: the build stops, and says how to clear it.  Locally the lock is created atomically
(O_EXCL); on object stores it is written and read back (best effort: object stores have no lock).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time

from bestiary.pipelines import io
from bestiary.schemas.config import ConfigError

NAME = ".bestiary.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: str) -> dict | None:
    try:
        return json.loads(io.read_bytes(path))
    except Exception:  # noqa: BLE001 - an unreadable lock is a stale one
        return None


class OutputLock:
    def __init__(self, out: str):
        self.path = io.join(out, NAME)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _create(self) -> bool:
        body = json.dumps(self.me).encode()
        if io.is_local(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            return True
        if io.exists(self.path):
            return False
        io.write_bytes(self.path, body)
        return _holder(self.path) == self.me

    def __enter__(self) -> "OutputLock":
        for _ in range(3):
            if self._create():
                return self
            held = _holder(self.path)
            if held and held.get("host") == self.me["host"] and _alive(int(held.get("pid", -1))):
                raise ConfigError(f"{os.path.dirname(self.path)} is being built by pid {held['pid']} since "
                                  f"{held.get('started')}: one build at a time per output")
            if held and held.get("host") != self.me["host"]:
                raise ConfigError(f"{os.path.dirname(self.path)} is locked by a build on {held.get('host')} "
                                  f"(pid {held.get('pid')}, since {held.get('started')}); if it is gone, remove "
                                  f"{self.path}")
            print(f"bestiary: taking over the lock of a build that is gone (pid {(held or {}).get('pid', '?')})",
                  file=sys.stderr)
            io.delete([self.path])
        raise ConfigError(f"could not lock {self.path}")

    def __exit__(self, *exc) -> None:
        if _holder(self.path) == self.me:
            io.delete([self.path])
