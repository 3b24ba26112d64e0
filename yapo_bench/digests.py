"""Content digests for fingerprints: what a file, a folder or a JSON value holds, so that a step whose input changed
at the same path is never taken for done. File digests are cached per process by (path, size, mtime)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def json_digest(value: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _file_digest(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _file_digest(path: Path, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: str | Path, pattern: str = "**/*") -> str:
    """sha256 over the relative names and contents of the files under `root` matching `pattern`."""
    root = Path(root)
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    return json_digest([[str(p.relative_to(root)), file_digest(p)] for p in files])


def stat_digest(paths: list[Path]) -> str:
    """A digest of files' paths, sizes and modification times: for weights too large to read at every plan (a copy
    or a rewrite counts as a change)."""
    return json_digest([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(paths)])


def hf_cached_revision(repo_id: str, repo_type: str = "model", inside: str = "") -> str | None:
    """The newest revision of a hub repo the HF cache holds (one holding `inside`, a path in the repo, when given),
    None when the cache holds none: a hub id's content is known only through the revision it was read at."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted((p.stat().st_mtime_ns, p.name) for p in snapshots.iterdir() if (p / inside).exists())
    return found[-1][1] if found else None
