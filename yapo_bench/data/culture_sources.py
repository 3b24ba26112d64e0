"""Where culture items come from: one loader for every culture source a run, a task or an analysis names.

culture-mini (shipped) | localization-gap, culturalbench (the public sets, from the data dir, converted on the fly)
| a culture-schema JSONL file | the paper's dataset by hub id or local dataset directory, every split (yapo-bench
splits by question itself). $YAPO_BENCH_CULTURE_DATA names the source where none is given.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from yapo_bench.data.culture import CultureItem, load_culture
from yapo_bench.data.text import file_version

CULTURE_DATA_ENV = "YAPO_BENCH_CULTURE_DATA"
DEFAULT_CULTURE_DATA = "culture-mini"
PUBLIC_SETS = {  # eval-only sets read from the data dir, converted on the fly
    "localization-gap": ("culture/localization_gap/localization_gap_5choice.jsonl", "convert_localization_gap"),
    "culturalbench": ("culture/culturalbench/culturalbench_easy.jsonl", "convert_culturalbench"),
}


def culture_items(culture_data: str | None = None, data_dir: str | None = None) -> list[CultureItem]:
    """culture-mini, localization-gap / culturalbench (from the data dir), a culture-schema JSONL file, or
    the paper's dataset by hub id / local dataset (every split: yapo-bench splits by question itself). Read once
    per process: every task of a run asks for them."""
    source = culture_data or os.environ.get(CULTURE_DATA_ENV) or DEFAULT_CULTURE_DATA
    if source == DEFAULT_CULTURE_DATA:  # small and shipped: read each time
        from yapo_bench.data.spec import culture_mini_items

        return culture_mini_items()
    return list(_items(source, data_dir, file_version(source)))


def culture_data_identity(source: str, data_dir: str | None = None) -> dict[str, str | None]:
    """What a culture data source holds, for the fingerprints of the steps that read it: the content of its files,
    or for a hub id the revision the HF cache holds (None when it holds none)."""
    from yapo_bench.digests import file_digest, hf_cached_revision, tree_digest

    if source == DEFAULT_CULTURE_DATA:
        from yapo_bench.resources import resource_dir

        return {"culture_data": source, "sha256": tree_digest(resource_dir("data") / "culture_mini", "*.jsonl")}
    if source in PUBLIC_SETS:
        from yapo_bench.data.spec import data_dir as find_data_dir

        return {"culture_data": source, "sha256": file_digest(find_data_dir(data_dir) / PUBLIC_SETS[source][0])}
    path = Path(source).expanduser()
    if path.is_file():
        return {"culture_data": source, "sha256": file_digest(path)}
    if path.is_dir():
        return {"culture_data": source, "sha256": tree_digest(path)}
    return {"culture_data": source, "revision": hf_cached_revision(source, repo_type="dataset")}


def is_local_culture_data(source: str) -> bool:
    """Whether a culture data source needs no hub: culture-mini, the public sets of the data dir, or a local path."""
    return source == DEFAULT_CULTURE_DATA or source in PUBLIC_SETS or Path(source).exists()


@functools.lru_cache(maxsize=8)
def _items(source: str, data_dir: str | None, _version: tuple[int, int] | None) -> tuple[CultureItem, ...]:
    from yapo_bench.data import culture_convert
    from yapo_bench.data.spec import data_dir as find_data_dir

    if source in PUBLIC_SETS:
        relative, converter = PUBLIC_SETS[source]
        return tuple(getattr(culture_convert, converter)(find_data_dir(data_dir) / relative))
    if Path(source).is_file() and Path(source).suffix == ".jsonl":
        return tuple(load_culture(source))
    return tuple(culture_convert.convert_paper(source, split="all"))
