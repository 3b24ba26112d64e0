"""One writer per output directory: an advisory lock (flock) on a file in the directory that names its holder.

The kernel drops the lock when its holder exits, however it exits (kill -9 included), so a lock is never stale;
the file itself stays behind and says who held it last.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".yapo-bench.lock"


class DirectoryBusy(ValueError):
    """Another process is writing the directory; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}, since {info.get('since')})"


@contextlib.contextmanager
def exclusive(directory: str | Path, field: str = "out", wait: bool = False) -> Iterator[Path]:
    """Hold `directory`'s writer lock for the block (creating the directory). Another holder makes it raise
    DirectoryBusy naming that holder (`field` names the setting that chose the directory), or with `wait`, says
    whom it waits for and blocks until the holder is done. Yields the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise DirectoryBusy(f"{field}: {directory} is being written by {holder}; wait for it to finish "
                                    "or choose another directory") from None
            print(f"waiting for {holder} to finish writing {directory}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
                                 "since": datetime.datetime.now().isoformat(timespec="seconds")}))
        handle.flush()
        try:
            yield directory
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
