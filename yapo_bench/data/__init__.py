"""Data: pair files in their layouts and the data-spec grammar (`bipo:power-seeking`, a path, ...)."""

from yapo_bench.data.pair_files import load_pair_file
from yapo_bench.data.spec import data_dir, load_pairs

__all__ = ["data_dir", "load_pair_file", "load_pairs"]
