"""A persistent answer cache, so a resumed or repeated run never asks the server the same thing twice.

One SQLite file (WAL mode, so the actors of one run on one machine can share it). Keys are digests of
(sample uid, model, request digest); only successful answers are stored, so failures are asked again.
SQLite locking needs a local filesystem: on NFS give each node its own `cache_dir`.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(uid: str, model: str, request_digest: str) -> str:
    return hashlib.sha256(f"{uid}\x00{model}\x00{request_digest}".encode()).hexdigest()


class ResponseCache:
    """`get(key)` / `put(key, value)` of JSON-able answers in `path` (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __getstate__(self):  # travels to Ray workers as its path; each process opens its own connection
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._conn = conn
        return self._conn

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db().execute("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT count(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
