"""The vector store: where a (model, method, data, layer, SAE, settings) vector lives, trained there once and reused
after, and loading a vector with the SAE it was made with. `yapo-bench run` and yapo_steered's `train=` / `vector=`
go through it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from yapo_bench.devices import model_placement
from yapo_bench.methods import TrainingBudget, fit_and_save, get_method, spec_config
from yapo_bench.models import LoadedModel, cache_dir, model_identity
from yapo_bench.pairs import PreferencePair
from yapo_bench.steering import VECTOR_FORMAT, SteeringVector


@dataclass
class StoredVector:
    """A vector as loaded from its directory, the SAE it steers through (None for dense vectors), and where it is."""

    vector: SteeringVector
    sae: nn.Module | None
    path: Path


def vector_directory(method: str, data: str, loaded: LoadedModel, sae: nn.Module | None, spec: Any,
                     root: str | Path | None = None, pairs: Sequence[PreferencePair] | None = None) -> Path:
    """The directory of the vector `method` fits on `data` with `spec`: a hash of everything that determines it
    (with `pairs`, their content too), under `root` (default $YAPO_BENCH_CACHE/vectors)."""
    from yapo_bench.sae import sae_hash

    # the file format too: a vector cached by an older yapo-bench (which load refuses) is never found, it is retrained
    key = {"format": VECTOR_FORMAT, "model": model_identity(loaded.model), "method": method, "data": data,
           "layer": spec.layer, "sae": sae_hash(sae) if sae is not None else None, "spec": spec_config(spec),
           **model_placement(loaded.model)}  # a vector fitted in bf16 is not the fp32 one
    if pairs is not None:
        key["pairs_sha256"] = hashlib.sha256(json.dumps([dataclasses.astuple(p) for p in pairs]).encode()).hexdigest()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (Path(root) if root is not None else cache_dir() / "vectors") / f"{method}-{digest}"


def trained_vector(method: str, data: str, loaded: LoadedModel, sae: nn.Module | None, layer: int,
                   budget: TrainingBudget, *, data_dir: str | None = None, root: str | Path | None = None,
                   progress: bool = True, pairs: Sequence[PreferencePair] | None = None) -> StoredVector:
    """The vector `method` fits on `data` (a data spec, or with `pairs` their description) at `layer` with `budget`:
    trained into its directory unless a finished one is there (BiPO/YaPO resume a killed training from its
    checkpoint). Another process training the same vector is waited for, and its vector reused."""
    from yapo_bench.data import load_pairs

    module = get_method(method)
    spec = module.spec(layer, budget)
    if hasattr(spec, "progress"):  # how it runs, not what it computes: every method's spec may show a bar
        spec = dataclasses.replace(spec, progress=progress)
    directory = vector_directory(method, data, loaded, sae, spec, root, pairs)
    if not (directory / "vector.json").exists():  # vector.json is written last, once training has finished
        from yapo_bench.locking import exclusive

        with exclusive(directory, "vector store", wait=True):
            if not (directory / "vector.json").exists():  # nor by a process this one waited for
                pairs = pairs if pairs is not None else load_pairs(data, data_dir)
                fit_and_save(method, loaded, pairs, spec, sae, directory, resume=True)
    return StoredVector(SteeringVector.load(directory), sae, directory)


def load_vector(path: str | Path, model: str, sae_source: str | None = None, device: str = "cpu") -> StoredVector:
    """A vector file with its SAE (loaded onto `device`, the model's): `sae_source`, else the SAE the vector records
    (a shipped name, local directory or registry id), else the model preset's shipped one."""
    from yapo_bench.sae import resolve_sae_and_layer

    vector = SteeringVector.load(path)
    sae, _ = resolve_sae_and_layer(model, sae_source or (vector.sae_id if vector.space == "sae" else None),
                                   vector.layer, vector.space == "sae", device=device)
    return StoredVector(vector, sae, Path(path))
