"""On-disk sqlite cache of the judge server's answers (raw text + logprobs), one committed row per verdict.

Keyed by judge model + sha256 of the rendered messages + the generation parameters that change the output, so a
rerun makes no calls and a killed run loses nothing it had received. The answer is stored, not our reading of it:
a change to the parser applies to cached rows too. Unparsable answers are answers and are cached; transport
failures are not (they never reach `put`). The API key is never part of a row: nothing here receives it.

Requests are claimed through the cache: a process about to ask the server for a key claims it first, and another
process that needs the same answer waits for it instead of asking again. A claim ends with the answer, with a
failed request, or when its holder is gone (a dead pid on this host, or older than CLAIM_TIMEOUT_S elsewhere)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from yapo_bench.atomic import WriteError

_SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt_sha256 TEXT NOT NULL, params TEXT NOT NULL,
    content TEXT, tokens TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    claimed REAL NOT NULL)"""
CLAIM_TIMEOUT_S = 900.0
# sqlite's primary result codes for a disk that is full, failing, read-only or cannot hold the file: the OS error each
# is reported as
_DISK_ERRORS = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_IOERR: errno.EIO,
                sqlite3.SQLITE_READONLY: errno.EROFS, sqlite3.SQLITE_CANTOPEN: errno.EIO}


def prompt_sha256(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def cache_key(model: str, prompt_hash: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "prompt": prompt_hash, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """Thread-safe (one connection behind a lock; WAL so a reader elsewhere does not block the run)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._disk():
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        self._me = (os.getpid(), socket.gethostname())

    @contextlib.contextmanager
    def _disk(self) -> Iterator[None]:
        """sqlite's errors for a full, failing or read-only disk (its own exception types, naming no file) as one
        WriteError naming this database; any other sqlite error is left as it is."""
        try:
            yield
        except sqlite3.Error as err:
            code = getattr(err, "sqlite_errorcode", None)
            number = _DISK_ERRORS.get(code & 0xFF) if code is not None else None  # extended codes keep the primary
            if number is None:
                raise
            raise WriteError(number, f"{err} (the judge answer cache)", str(self.path)) from err

    def get(self, key: str) -> tuple[str | None, list[dict[str, Any]] | None] | None:
        with self._lock, self._disk():
            row = self._db.execute("SELECT content, tokens FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return row[0], (json.loads(row[1]) if row[1] is not None else None)

    def put(self, key: str, model: str, prompt_hash: str, params: dict[str, Any], content: str | None,
            tokens: list[dict[str, Any]] | None) -> None:
        with self._lock, self._disk():
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, model, prompt_hash, json.dumps(params, sort_keys=True), content,
                 None if tokens is None else json.dumps(tokens), time.time()))
            self._db.execute("DELETE FROM claims WHERE key = ?", (key,))
            self._db.commit()  # per verdict: a killed run keeps every answer it received

    def claim(self, key: str) -> bool:
        """True when this process may ask the server for `key`: nobody else holds a live claim on it."""
        with self._lock, self._disk():
            row = self._db.execute("SELECT pid, host, claimed FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and (row[0], row[1]) != self._me and _alive(*row):
                return False
            self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)", (key, *self._me, time.time()))
            self._db.commit()
            return True

    def release(self, key: str) -> None:
        """Give up this process's claim on `key` (its request failed): another process may ask now."""
        with self._lock, self._disk():
            self._db.execute("DELETE FROM claims WHERE key = ? AND pid = ? AND host = ?", (key, *self._me))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock, self._disk():
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _alive(pid: int, host: str, claimed: float) -> bool:
    """Whether a claim's holder may still answer: a live pid on this host, or a recent claim from elsewhere."""
    if host != socket.gethostname():
        return time.time() - claimed < CLAIM_TIMEOUT_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
