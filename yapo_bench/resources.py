"""Locate the project's top-level resource folders (data/, tasks/, judge_prompts/).

In a wheel they are installed as yapo_bench/_resources/<name> (hatch force-include); in a source checkout or an
editable install they sit at the repository root. (Not yapo_bench/data: that name is the loaders package.)
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE_DIR / "_resources"


def resource_dir(name: str) -> Path:
    """The installed copy of top-level folder `name` if present, else the source tree's."""
    installed = _INSTALLED / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name
