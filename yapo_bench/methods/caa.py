"""CAA: the mean difference of layer-L activations between chosen and rejected responses (dense)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from yapo_bench.devices import model_placement
from yapo_bench.methods.budget import TrainingBudget
from yapo_bench.methods.mean_diff import MeanDiffSpec, mean_difference
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair, describe_pairs
from yapo_bench.steering import SteeringVector

NAME = "caa"
SPARSE = False
LEARNED = False
Spec = MeanDiffSpec


def spec(layer: int, budget: TrainingBudget) -> MeanDiffSpec:
    """A mean difference trains nothing: the budget does not apply."""
    return MeanDiffSpec(layer=layer)


def fit(model: LoadedModel, pairs: Sequence[PreferencePair], spec: MeanDiffSpec, sae: nn.Module | None = None) -> SteeringVector:
    values, within = mean_difference(model, pairs, spec)
    return SteeringVector.dense(values, layer=spec.layer, model_id=model.model_id, method="caa",
                                config={**spec.config(), "max_length": within.limit},  # the limit that applied
                                provenance={**describe_pairs(pairs), **within.record(spec.max_length),
                                            **model_placement(model.model)})
