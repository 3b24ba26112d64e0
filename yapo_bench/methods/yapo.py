"""YaPO: the bi-directional preference loss with v in an SAE's latent space, applied through eq. 3.

v starts at 0; ReLU has zero gradient at 0, so latents never active on the training data stay exactly 0
(the implicit sparsity the paper relies on)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from yapo_bench.methods.budget import TrainingBudget
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair
from yapo_bench.sae import check_sae_fits
from yapo_bench.steering import SteeringVector

NAME = "yapo"
SPARSE = True
LEARNED = True
Spec = PreferenceSpec


def spec(layer: int, budget: TrainingBudget) -> PreferenceSpec:
    return PreferenceSpec(layer=layer, steps=budget.steps, lr=budget.lr, batch_size=budget.batch_size,
                          seed=budget.seed, warmup_steps=budget.warmup_steps)


def fit(model: LoadedModel, pairs: Sequence[PreferencePair], spec: PreferenceSpec, sae: nn.Module | None = None) -> SteeringVector:
    check_sae_fits(sae, model.model, needed_by="YaPO")
    return train_preference_vector(model, pairs, spec, sae=sae, method="yapo")
