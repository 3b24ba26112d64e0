"""Train a vector once per configuration: the one place that maps (model, method, data, layer, SAE, budget) to
a directory, trains into it (BiPO/YaPO resume from their checkpoints there) or reuses what it holds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from yapo_bench.locking import exclusive
from yapo_bench.models import LoadedModel, cache_dir, model_identity


def trained_vector_dir(method_name: str, data: str, loaded: LoadedModel, sae: nn.Module | None, layer: int, *,
                       steps: int = 200, lr: float = 5e-4, seed: int = 0, batch_size: int = 4,
                       data_dir: str | None = None, root: str | Path | None = None, progress: bool = True) -> Path:
    """The directory of the vector `method_name` fits on `data` (a data spec); trained there unless a finished
    vector is already in it. `root`: where the hashed directories live (default $YAPO_BENCH_CACHE/vectors)."""
    from yapo_bench.data import load_pairs
    from yapo_bench.methods import get_method
    from yapo_bench.sae import sae_hash

    method = get_method(method_name)
    if method_name in ("caa", "sas"):
        fit_spec: Any = method.Spec(layer=layer)
    else:
        fit_spec = method.Spec(layer=layer, steps=steps, lr=lr, seed=seed, batch_size=batch_size, progress=progress)
    key = {"model": model_identity(loaded.model), "method": method_name, "data": data, "layer": layer,
           "sae": sae_hash(sae) if sae is not None else None,
           "spec": fit_spec.config() if hasattr(fit_spec, "config") else asdict(fit_spec)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(root) if root is not None else cache_dir() / "vectors"
    directory = directory / f"{method_name}-{digest}"
    if (directory / "vector.json").exists():  # written last, once training has finished
        return directory
    with exclusive(directory, "vector cache", wait=True):  # another process training it: wait, then reuse
        if (directory / "vector.json").exists():
            return directory
        pairs = load_pairs(data, data_dir)
        if method_name in ("bipo", "yapo"):  # a killed training resumes from its checkpoint
            fit_spec.run_dir, fit_spec.resume = str(directory), True
        method.fit(loaded, pairs, fit_spec, sae=sae).save(directory)
    return directory
