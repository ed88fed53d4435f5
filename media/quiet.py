"""Decoder chatter off the terminal: libmpg123 (inside libsndfile) writes warnings about damaged MP3 frames
straight to file descriptor 2, where no Python logging can filter them.  While any decode runs, fd 2 points
at a temporary file; when the last one ends, fd 2 is restored and what was written is logged at debug."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from contextlib import contextmanager

log = logging.getLogger("bestiary.media.decoders")
_lock = threading.Lock()
_depth = 0
_saved: int | None = None
_sink = None


@contextmanager
def quiet_native_stderr():
    global _depth, _saved, _sink
    with _lock:
        if _depth == 0:
            try:
                sys.stderr.flush()
                _sink = tempfile.TemporaryFile()
                _saved = os.dup(2)
                os.dup2(_sink.fileno(), 2)
            except OSError:   # no fd 2 to redirect (embedded interpreters): leave it be
                _sink, _saved = None, None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(_saved, 2)
                os.close(_saved)
                _sink.seek(0)
                text = _sink.read().decode(errors="replace").strip()
                _sink.close()
                _saved, _sink = None, None
                if text:
                    lines = text.splitlines()
                    log.debug("decoder said (%d lines): %s", len(lines), " | ".join(lines[:20]))
