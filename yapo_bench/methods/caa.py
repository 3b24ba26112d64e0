"""CAA: the mean difference of layer-L activations between chosen and rejected responses (dense)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from torch import nn

from yapo_bench.methods.mean_diff import MeanDiffSpec, mean_difference
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair, describe_pairs
from yapo_bench.steering import SteeringVector

Spec = MeanDiffSpec
NEEDS_SAE = False


def fit(model: LoadedModel, pairs: Sequence[PreferencePair], spec: MeanDiffSpec, sae: nn.Module | None = None) -> SteeringVector:
    values, truncated = mean_difference(model, pairs, spec)
    return SteeringVector.dense(values, layer=spec.layer, model_id=model.model_id, method="caa", config=asdict(spec),
                                provenance={**describe_pairs(pairs), "truncated_sequences": truncated})
