"""Atomic writes: a killed process never leaves a half-written artefact where a finished one belongs, and a write
that fails (a full or read-only disk) says which artefact it was writing."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError


class WriteError(OSError):
    """A failed write; `filename` is the artefact being written (never a temporary stand-in), so the one-line error
    names it: `cannot write <path>: No space left on device`."""


def _safetensors_errno(err: SafetensorError) -> int | None:
    """The OS error number in safetensors' own I/O error ('... (os error 28) ...'); None for any other failure."""
    found = re.search(r"os error (\d+)", str(err))
    return int(found.group(1)) if found else None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@contextlib.contextmanager
def writing(target: Path, through: Path | None = None) -> Iterator[None]:
    """Re-raise a failure to write `target` (or `through`, a temporary file or directory standing in for it) as a
    WriteError naming `target`: torch.save's and plain writes' OS errors carry no filename, and safetensors raises
    its own type. An OSError naming some other file is left as it is."""
    try:
        yield
    except OSError as err:  # a WriteError from a write inside `through` too: it names the artefact, not its part
        if err.filename is not None and not any(_within(Path(err.filename), p) for p in (target, through) if p):
            raise
        raise WriteError(err.errno, err.strerror or str(err), str(target)) from err
    except SafetensorError as err:
        number = _safetensors_errno(err)
        if number is None:  # not an I/O failure (a bad tensor): not ours to rename
            raise
        raise WriteError(number, os.strerror(number), str(target)) from err


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        with writing(target, tmp):
            yield tmp
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with writing(target, tmp):
            yield tmp
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
