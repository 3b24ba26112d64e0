"""What the steps of a run share in one process, loaded on first use and kept: the model and the SAEs by source, and
for `engine: vllm` one vLLM engine (its vector, λ and direction switched between evaluations, never reloaded).
Passed to each step's executor (and to the analyses that evaluate beside a run) openly."""

from __future__ import annotations

from typing import Any

from torch import nn

from yapo_bench.devices import Placement
from yapo_bench.models import LoadedModel, load_model, require_layer
from yapo_bench.sae import load_sae, resolve_sae_and_layer


class Resources:
    def __init__(self, model: str, placement: Placement, loaded: LoadedModel | None = None) -> None:
        self.model_source, self.placement = model, placement
        self._loaded = loaded
        self._saes: dict[str, nn.Module] = {}
        self._vllm: Any = None
        self._vllm_batch: int | str | None = None

    def model(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.model_source, dtype=self.placement.torch_dtype,
                                      device=self.placement.device)
        return self._loaded

    def sae(self, source: str) -> nn.Module:
        """The SAE of `source`, loaded exactly from it (no fallback: what ran is what the plan recorded)."""
        if source not in self._saes:
            self._saes[source] = load_sae(source, device=self.placement.device)
        return self._saes[source]

    def sae_and_layer(self, source: str | None, layer: int | None, needs_sae: bool) -> tuple[Any, int]:
        """The SAE `source` (loaded when given, or needed) and the layer to steer: `layer` must be the SAE's own."""
        sae, layer = resolve_sae_and_layer(self.model_source, source, layer, needs_sae, load=self.sae)
        return sae, require_layer(self.model_source, layer)

    def vllm_model(self, batch_size: int | str) -> Any:
        """The run's one vLLM lm-eval model (`yapo_steered_vllm`), built on first use, unsteered until a step calls
        its `steer_with`. One engine a process: building one takes ~25 s and holds its own weights and KV cache."""
        if self._vllm is None:
            from yapo_bench.lm_eval_plugin.vllm_model import YapoSteeredVLLM

            # the placement's precision, as the transformers path loads it (fp32 on the CPU: the two compare)
            self._vllm = YapoSteeredVLLM(model=self.model_source, batch_size=batch_size, dtype=self.placement.dtype)
            self._vllm_batch = batch_size
        elif batch_size != self._vllm_batch:
            raise ValueError(f"batch_size: {batch_size!r}, but this process's vLLM engine runs {self._vllm_batch!r}")
        return self._vllm
