"""The data-spec grammar shared by `yapo-bench train --data` (and, later, lm-eval's `train=`):

  bipo:<behaviour>[:train|test]           BiPO CSVs   <data dir>/bipo/<behaviour>/<split>.csv
  caa:<behaviour>[:generate|test]         CAA A/B     <data dir>/caa/datasets/...
  anthropic:<behaviour>[:lm|human]        Anthropic model-written evals (A/B JSONL)
  demo:cheerful                           the pair set shipped with yapo-bench
  culture-mini:<country>[:train|test|all] culture-mini MCQ pairs (chosen = the country's option, rejected =
                                          each sibling country's option; split by question, seed 0)
  PATH                                    any .csv / .json / .jsonl pair file (see pair_files)

The data dir is `--data-dir`, else $YAPO_BENCH_DATA, else ../shared/data when it exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from yapo_bench.data.culture import CultureItem, load_culture
from yapo_bench.data.culture_pairs import CulturePairSpec, culture_pairs
from yapo_bench.data.pair_files import load_ab_json, load_bipo_csv, load_pair_file, load_pairs_json
from yapo_bench.pairs import PairSet
from yapo_bench.resources import resource_dir

DATA_DIR_ENV = "YAPO_BENCH_DATA"
BIPO_BEHAVIOURS = ("power-seeking", "wealth-seeking", "hallucination")


def data_dir(explicit: str | Path | None = None) -> Path:
    """Where public datasets live: the explicit path, $YAPO_BENCH_DATA, or ../shared/data."""
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"  # a source checkout's sibling
    candidates = [explicit] if explicit else [os.environ.get(DATA_DIR_ENV), Path("..") / "shared" / "data", beside_checkout]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    where = explicit or f"${DATA_DIR_ENV} or ../shared/data"
    raise ValueError(f"data dir: {where} is not a directory; pass --data-dir or set ${DATA_DIR_ENV} to the "
                     "folder holding bipo/, caa/, anthropic_advanced_ai_risk/")


def bipo_identity(behaviour: str, files: tuple[str, ...], data_root: str | Path | None = None) -> dict[str, str]:
    """The content of a BiPO behaviour's `files` (train.csv, test_infer.csv, ...) in the data dir, for the
    fingerprints of the steps that read them."""
    from yapo_bench.digests import file_digest

    folder = data_dir(data_root) / "bipo" / behaviour
    return {name: file_digest(folder / name) if (folder / name).is_file() else "missing" for name in files}


def _choice(value: str, allowed: tuple[str, ...], field: str) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: {value!r}; expected one of {', '.join(allowed)}")
    return value


def _bipo(root: Path, behaviour: str, split: str = "train") -> PairSet:
    if behaviour == "jailbreak":
        raise ValueError("data: bipo:jailbreak has prompts only (no response pairs); pass a pair file instead")
    _choice(behaviour, BIPO_BEHAVIOURS, "bipo behaviour")
    _choice(split, ("train", "test"), "bipo split")
    return load_bipo_csv(root / "bipo" / behaviour / f"{split}.csv", source=f"bipo:{behaviour}:{split}")


def _caa(root: Path, behaviour: str, split: str = "generate") -> PairSet:
    _choice(split, ("generate", "test"), "caa split")
    name = "generate_dataset.json" if split == "generate" else "test_dataset_ab.json"
    path = root / "caa" / "datasets" / split / behaviour / name
    if not path.is_file():
        known = sorted(p.name for p in (root / "caa" / "datasets" / split).glob("*") if p.is_dir())
        raise ValueError(f"caa behaviour: {behaviour!r}; expected one of {', '.join(known)}")
    return load_ab_json(path, source=f"caa:{behaviour}:{split}")


def _anthropic(root: Path, behaviour: str, origin: str = "lm") -> PairSet:
    _choice(origin, ("lm", "human"), "anthropic origin")
    folder = root / "anthropic_advanced_ai_risk" / f"{origin}_generated_evals"
    path = folder / f"{behaviour}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.jsonl"))
        raise ValueError(f"anthropic behaviour: {behaviour!r}; expected one of {', '.join(known)}")
    return load_ab_json(path, source=f"anthropic:{behaviour}:{origin}")


def _demo(name: str) -> PairSet:
    _choice(name, ("cheerful",), "demo pair set")
    pairs = load_pairs_json(resource_dir("data") / "demo" / "cheerful_pairs.jsonl", source="demo:cheerful")
    pairs.chosen = "the cheerful reply"
    return pairs


def culture_mini_items() -> list[CultureItem]:
    """Every item of the shipped culture-mini benchmark."""
    return [item for path in sorted((resource_dir("data") / "culture_mini").glob("*.jsonl"))
            for item in load_culture(path)]


def _culture_mini(country: str, split: str = "train") -> PairSet:
    return culture_pairs(culture_mini_items(), CulturePairSpec(country=country, split=split), source="culture-mini")


NEEDS_DATA_DIR: dict[str, Callable[..., PairSet]] = {"bipo": _bipo, "caa": _caa, "anthropic": _anthropic}


def load_pairs(source: str, data_root: str | Path | None = None) -> PairSet:
    """Preference pairs for a data source (see the module docstring)."""
    prefix, _, rest = source.partition(":")
    if prefix == "demo":
        return _demo(rest)
    parts = rest.split(":")
    if prefix in ("culture-mini", *NEEDS_DATA_DIR) and rest and not Path(source).exists():
        if len(parts) > 2:
            noun = "country" if prefix == "culture-mini" else "behaviour"
            raise ValueError(f"data: {source!r}; expected {prefix}:<{noun}>[:<split>]")
        if prefix == "culture-mini":
            return _culture_mini(*parts)
        return NEEDS_DATA_DIR[prefix](data_dir(data_root), *parts)
    if Path(source).is_file():
        return load_pair_file(source)
    raise ValueError(f"data: {source!r} is neither a file nor a spec; expected bipo:<behaviour>, caa:<behaviour>, "
                     "anthropic:<behaviour>, culture-mini:<country>, demo:cheerful or a .csv/.json/.jsonl path")
