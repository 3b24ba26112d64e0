"""BiPO: a dense vector learned with the bi-directional preference loss (Cao et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from yapo_bench.methods.budget import TrainingBudget
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair
from yapo_bench.steering import SteeringVector

NAME = "bipo"
SPARSE = False
LEARNED = True
Spec = PreferenceSpec


def spec(layer: int, budget: TrainingBudget) -> PreferenceSpec:
    return PreferenceSpec(layer=layer, steps=budget.steps, lr=budget.lr, batch_size=budget.batch_size,
                          seed=budget.seed, warmup_steps=budget.warmup_steps)


def fit(model: LoadedModel, pairs: Sequence[PreferencePair], spec: PreferenceSpec, sae: nn.Module | None = None) -> SteeringVector:
    """`sae` is ignored: BiPO's vector lives in the residual stream."""
    return train_preference_vector(model, pairs, spec, sae=None, method="bipo")
