"""Atomic writes: a failed write names the artefact it was writing, never a temporary file or nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from yapo_bench.atomic import WriteError, atomic_dir, atomic_file


def _full(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_target_and_leaves_nothing_behind(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "write_text", _full)
    with pytest.raises(WriteError, match="No space left on device") as caught, atomic_file(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "a.json"))
    with pytest.raises(WriteError) as caught, atomic_dir(tmp_path / "d") as tmp:
        (tmp / "card.json").write_text("{}")
    assert caught.value.filename == str(tmp_path / "d")
    with pytest.raises(WriteError) as caught, atomic_dir(tmp_path / "d") as tmp, atomic_file(tmp / "a.json") as part:
        part.write_text("{}")
    assert caught.value.filename == str(tmp_path / "d")  # the artefact, not a file in its temporary directory
    assert not list(tmp_path.iterdir())


def test_an_error_about_another_file_is_left_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught, atomic_file(tmp_path / "a.json") as tmp:
        tmp.write_text((tmp_path / "missing.txt").read_text())
    assert not isinstance(caught.value, WriteError) and caught.value.filename == str(tmp_path / "missing.txt")
