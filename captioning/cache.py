"""The caption cache: SQLite keyed by a hash of model, prompt version and inputs.

A rebuild or an incremental run never asks the LLM twice for the same inputs.
SQLite's own locking makes it safe for several worker processes on one host.
It also keeps the run's request budget, so workers share one budget.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading


def cache_key(model: str, prompt_version: str, inputs: dict) -> str:
    blob = json.dumps({"model": model, "prompt": prompt_version, "inputs": inputs}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CaptionCache:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS captions (key TEXT PRIMARY KEY, text TEXT, meta TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS budget (run TEXT PRIMARY KEY, requests INTEGER, tokens INTEGER)")

    def _db(self) -> sqlite3.Connection:
        if getattr(self._local, "db", None) is None:
            self._local.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._local.db.execute("PRAGMA journal_mode=WAL")
        return self._local.db

    def get(self, key: str) -> tuple[str, dict] | None:
        row = self._db().execute("SELECT text, meta FROM captions WHERE key = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put(self, key: str, text: str, meta: dict) -> None:
        self._db().execute("INSERT OR REPLACE INTO captions VALUES (?, ?, ?)", (key, text, json.dumps(meta)))

    def spend(self, run: str, requests: int, tokens: int, max_requests: int | None, max_tokens: int | None) -> bool:
        """Take `requests`/`tokens` from the run's budget; False (nothing taken) when it would overdraw."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT requests, tokens FROM budget WHERE run = ?", (run,)).fetchone() or (0, 0)
            used_r, used_t = row[0] + requests, row[1] + tokens
            if (max_requests is not None and used_r > max_requests) or (max_tokens is not None and used_t > max_tokens):
                db.execute("ROLLBACK")
                return False
            db.execute("INSERT OR REPLACE INTO budget VALUES (?, ?, ?)", (run, used_r, used_t))
            db.execute("COMMIT")
            return True
        except Exception:
            db.execute("ROLLBACK")
            raise

    def used(self, run: str) -> tuple[int, int]:
        row = self._db().execute("SELECT requests, tokens FROM budget WHERE run = ?", (run,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)
