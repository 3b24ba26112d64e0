"""The software a result was made with: recorded in every vector, run plan, evaluation, SAE card and report,
because the same config gives other numbers under another transformers (5.24 changed what a hook sees)."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path

PACKAGES = ("yapo-bench", "torch", "transformers", "lm_eval", "sae-lens")


@functools.cache
def versions() -> dict[str, str | None]:
    """{package: installed version} for the packages that decide a result, plus `git_commit` of the
    yapo-bench checkout it runs from (None when installed from a wheel; `+dirty` with uncommitted changes)."""
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    # torch's own build label (+cu130, +cpu) says which kernels ran; some images' package metadata lacks it
    import torch

    found["torch"] = torch.__version__
    found["git_commit"] = _git_commit(Path(__file__).resolve().parents[1])
    return found


def _git_commit(root: Path) -> str | None:
    if not (root / ".git").exists():  # a wheel install: the version above is all there is
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def describe(found: dict[str, str | None] | None = None) -> str:
    """One line for a report footer: `yapo-bench 0.1.0 (commit abc123), torch 2.13.0, ...`."""
    found = found or versions()
    parts = [f"{name} {found.get(name) or 'not installed'}" for name in PACKAGES]
    if found.get("git_commit"):
        parts[0] += f" (commit {found['git_commit']})"
    return ", ".join(parts)
