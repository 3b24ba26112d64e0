"""`yapo_steered`: lm-eval's HFLM with every forward pass (log-likelihood and generation) inside the one
`steer(...)` context.

Model args: model (preset | GGUF | local dir | hub id), vector=PATH or train=<method>:<data spec> (trained
through `methods/`, cached by a hash of its full config and reused), layer, sae, multiplier, direction,
positions, steps/lr/seed (training budget for train=), data_dir, prompt=culture:<country> | behaviour:<name> (the
prompting baseline: the target stated in the input, toward it for direction 1, away for -1; with a vector too, both
at once). No vector or multiplier 0 and no prompt is the unsteered baseline through the same code path.

Under `accelerate launch -m lm_eval` (several processes) the requests are split between the ranks and
gathered on rank 0, which alone writes the results, as lm-eval's `hf` does on GPUs; here on the CPU too.
"""

from __future__ import annotations

import hashlib
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import Accelerator
from lm_eval.models.huggingface import HFLM

from yapo_bench.devices import model_placement, resolve_placement
from yapo_bench.distributed import alone, launched_world_size
from yapo_bench.environment import versions
from yapo_bench.lm_eval_plugin.rendering import PromptRendering
from yapo_bench.methods.prompt import parse_unit
from yapo_bench.models import DEFAULT_MODEL, LoadedModel, load_model
from yapo_bench.steering import (
    POSITIONS,
    SteeringError,
    SteeringVector,
    check_direction,
    check_multiplier,
    module_device,
    steer,
)
from yapo_bench.store import StoredVector


@dataclass(frozen=True)
class SteeredModelArgs:
    """yapo_steered's model args, validated so that a bad one fails in one line."""

    model: str = DEFAULT_MODEL
    vector: str | None = None
    train: str | None = None
    method: str | None = None
    layer: int | None = None
    sae: str | None = None
    multiplier: float = 1.0
    direction: int = 1
    positions: str = "all"
    steps: int = 200
    lr: float = 5e-4
    seed: int = 0
    data_dir: str | None = None
    prompt: str | None = None  # culture:<country> | behaviour:<behaviour>: the instruction stated in the input

    def __post_init__(self) -> None:
        if self.vector and self.train:
            raise ValueError("model_args: give vector=PATH or train=<method>:<data>, not both")
        if self.prompt is not None:
            parse_unit(self.prompt)
        check_multiplier(self.multiplier)
        check_direction(self.direction)
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"layer: {self.layer!r}; expected a non-negative integer (or leave it unset)")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions: {self.positions!r}; expected one of {', '.join(POSITIONS)}")
        if self.train:
            self.training_method()

    def training_method(self) -> tuple[str, str]:
        """(method, data spec) of train=: `yapo:bipo:power-seeking`, or train=<data> with method=<m>."""
        from yapo_bench.methods import method_names

        head, _, rest = self.train.partition(":")
        if head in method_names() and rest:
            return head, rest
        if self.method in method_names():
            return self.method, self.train
        raise ValueError(f"train: {self.train!r}; expected <method>:<data> with method one of "
                         f"{', '.join(method_names())}")


def resolve_steering(args: SteeredModelArgs, loaded: LoadedModel) -> StoredVector | None:
    """The vector yapo_steered applies, with its SAE: trained (or reused) from the vector store for `train=`,
    loaded for `vector=`, None for the base model."""
    from yapo_bench.methods import TrainingBudget, get_method
    from yapo_bench.models import require_layer
    from yapo_bench.sae import resolve_sae_and_layer
    from yapo_bench.store import load_vector, trained_vector

    device = str(module_device(loaded.model))  # the SAE goes where the model is
    if args.train:
        method, data = args.training_method()
        sae, layer = resolve_sae_and_layer(args.model, args.sae, args.layer, get_method(method).SPARSE, device=device)
        budget = TrainingBudget(steps=args.steps, lr=args.lr, seed=args.seed)
        return trained_vector(method, data, loaded, sae, require_layer(args.model, layer), budget,
                              data_dir=args.data_dir)
    if args.vector:
        stored = load_vector(args.vector, args.model, args.sae, device=device)
        if args.layer is not None and args.layer != stored.vector.layer:
            raise ValueError(f"layer: {args.layer} but the vector {args.vector} was made at layer "
                             f"{stored.vector.layer}; a vector steers the layer it was made at (leave layer unset)")
        return stored
    return None


class YapoSteeredLM(PromptRendering, HFLM):
    """HFLM whose `_model_call` and `_model_generate` run inside `steer(vector, multiplier, direction, ...)`; the
    constructor resolves the vector once (vector store), the overrides only steer."""

    def __init__(self, model: str = DEFAULT_MODEL, vector: str | None = None, train: str | None = None,
                 method: str | None = None, layer: int | None = None, sae: str | None = None,
                 multiplier: float = 1.0, direction: int = 1, positions: str = "all", steps: int = 200,
                 lr: float = 5e-4, seed: int = 0, data_dir: str | None = None, prompt: str | None = None,
                 pretrained: str | None = None,
                 device: str | None = None, dtype: str | None = None, loaded: LoadedModel | None = None,
                 stored: StoredVector | None = None, progress: bool = True, **kwargs: Any) -> None:
        """`device`/`dtype` (lm-eval's --device and `dtype=` model arg): where and in which precision the model
        loads, `auto` (or unset) = the GPU in bf16 when there is one, else the CPU in fp32; a device that is not
        there is refused. `loaded` / `stored`: an already loaded model / vector with its SAE (from Python, to
        evaluate several vectors without loading anything twice); `vector` then names the stored one. `progress`:
        False hides lm-eval's per-request progress bars."""
        args = SteeredModelArgs(model=pretrained or model, vector=vector, train=train, method=method, layer=layer,
                                sae=sae, multiplier=multiplier, direction=direction, positions=positions,
                                steps=steps, lr=lr, seed=seed, data_dir=data_dir, prompt=prompt)
        if device == LM_EVAL_DEFAULT_DEVICE and not _named_on_command_line("--device"):
            device = None  # lm-eval's own default, not the user's choice: auto
        accelerator = _data_parallel_accelerator()
        if accelerator is not None:
            # this rank's device (cuda:<local rank % GPUs>, or the CPU), after the default check above: a rank that
            # accelerate puts on cuda:0 is not lm-eval's default, which auto would turn into cuda:<LOCAL_RANK>
            device = str(accelerator.device)
        if loaded is None:
            placement = resolve_placement(device, dtype)
            loaded = load_model(args.model, dtype=placement.torch_dtype, device=placement.device)
        elif device is not None or dtype is not None:
            raise ValueError("device/dtype: not with an already loaded model; load it where it should run")
        super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, device=str(module_device(loaded.model)),
                         **kwargs)
        if accelerator is not None:
            # HFLM sets up data parallelism only for a model it loads itself and only with several GPUs; we pass
            # it a loaded model, so set what it would: lm-eval then splits requests by rank, gathers on rank 0.
            # The global index, not HFLM's local one, which repeats on every node of a multi-node launch.
            self.accelerator = accelerator
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes
        self.args = args
        self.loaded = loaded
        self.progress = progress
        # with several ranks, rank 0 trains (alone) or finds a train= vector first; the others then reuse it
        with accelerator.main_process_first() if accelerator is not None else nullcontext(), alone():
            self.stored = stored or resolve_steering(args, loaded)
        if self.stored is not None:
            self.stored.vector.check_compatible(loaded.model, self.stored.sae)
        self.instruct(args.prompt, args.direction)

    @property
    def steering_vector(self) -> SteeringVector | None:
        return self.stored.vector if self.stored is not None else None

    def steering(self, response_start: list[int] | None = None) -> AbstractContextManager:
        """The one `steer(...)` context with this model's vector, λ, d and positions (λ = 0: no hooks).
        `response_start`: per row, where the continuation starts (log-likelihood requests)."""
        vector = self.steering_vector if self.args.multiplier else None
        return steer(self.loaded.model, vector, multiplier=float(self.args.multiplier), direction=self.args.direction,
                     positions=self.args.positions, sae=self.stored.sae if self.stored else None,
                     response_start=response_start)

    def _loglikelihood_tokens(self, requests: list, *args: Any, **kwargs: Any) -> list:
        """HFLM's, knowing where each request's continuation starts: `_model_call` sees only padded rows, so
        for prompt/response positions the rows are matched to the windows HFLM builds from these requests."""
        if self.args.positions == "all" or self.steering_vector is None:
            return super()._loglikelihood_tokens(requests, *args, **kwargs)
        self._continuation_starts = continuation_starts(requests, self.max_length)
        try:
            return super()._loglikelihood_tokens(requests, *args, **kwargs)
        finally:
            self._continuation_starts = None

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
        return super().loglikelihood(self._instructed(requests), disable_tqdm=disable_tqdm or not self.progress)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        self._refuse_rolling_with_prompt()
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not self.progress)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list:
        return super().generate_until(self._instructed(requests), disable_tqdm=disable_tqdm or not self.progress)

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        starts = None
        if getattr(self, "_continuation_starts", None) is not None:
            starts = [row_continuation_start(row, self._continuation_starts) for row in inps.tolist()]
        with self.steering(starts):
            return super()._model_call(inps, attn_mask, labels)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> torch.Tensor:
        with self.steering():
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    @property
    def steering_digest(self) -> str:
        """A short hash of `steering_config()`: names this config's lm-eval request cache."""
        return hashlib.sha256(json.dumps(self.steering_config(), sort_keys=True).encode()).hexdigest()[:12]

    def get_model_info(self) -> dict[str, Any]:
        """lm-eval copies this into the results' `config`: the report reads the steering from it."""
        return {**super().get_model_info(), "yapo_steering": self.steering_config(), "yapo_versions": versions(),
                "yapo_rendering": self.rendering_info(), "yapo_vector": vector_summary(self.stored)}

    def steering_config(self) -> dict[str, Any]:
        """Everything that distinguishes this model's outputs: for request caches and result metadata."""
        from yapo_bench.sae import sae_identity

        vector = self.steering_vector
        return {**asdict(self.args), "vector_sha256": vector.metadata()["values_sha256"] if vector else None,
                "instruction": self.instruction.record() if self.instruction else None,
                "vector_method": vector.method if vector else None,
                # what ran, not what was asked: the vector's own layer and the SAE actually loaded
                "layer": vector.layer if vector else self.args.layer, **model_placement(self.loaded.model),
                "sae": sae_identity(self.stored.sae) if self.stored and self.stored.sae is not None else None}


def vector_summary(stored: StoredVector | None) -> dict[str, Any] | None:
    """What the report reads of the vector a model steers with (results' `config.yapo_vector`), for either engine."""
    if stored is None:
        return None
    vector = stored.vector
    return {"path": str(stored.path), "method": vector.method, "space": vector.space, "layer": vector.layer,
            "sae_id": vector.sae_id, "norm": vector.norm, "l0": vector.l0, "data": vector.provenance.get("data"),
            # the training seed of a learned vector (None for a mean difference): the report groups by it
            "seed": vector.config.get("seed")}


# lm-eval's CLI passes this device when --device is not given (EvaluatorConfig's default), even on a CPU machine
LM_EVAL_DEFAULT_DEVICE = "cuda:0"


def _named_on_command_line(flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in sys.argv[1:])


def continuation_starts(requests: list, max_length: int) -> dict[tuple[int, ...], set[int]]:
    """{input window: where its continuation starts} for lm-eval log-likelihood requests (context tokens,
    continuation tokens): HFLM scores (context + continuation)[-(max_length + 1):][:-1], so the first continuation
    token sits at len(window) - len(continuation) + 1 (one past the window for a one-token continuation, whose
    log-prob comes from the last context position)."""
    starts: dict[tuple[int, ...], set[int]] = {}
    for _request, context, continuation in requests:
        window = (list(context) + list(continuation))[-(max_length + 1):][:-1]
        starts.setdefault(tuple(window), set()).add(len(window) - len(continuation) + 1)
    return starts


def row_continuation_start(row: list[int], starts: dict[tuple[int, ...], set[int]]) -> int:
    """Where the continuation starts in one right-padded (with 0) row of `_model_call`: the window it holds is
    the row, or the row less some trailing zeros. Refuses rather than guess when no or several windows fit."""
    found: set[int] = set()
    end = len(row)
    while True:
        found |= starts.get(tuple(row[:end]), set())
        if end == 0 or row[end - 1] != 0:
            break
        end -= 1
    if len(found) != 1:
        raise SteeringError(f"positions: cannot tell where the continuation starts in a log-likelihood request "
                            f"({'no' if not found else 'several'} matching requests); use positions=all")
    return found.pop()


def _data_parallel_accelerator() -> Accelerator | None:
    """An `accelerate.Accelerator` when this process is one of several launched together, else None (a single
    process never starts one). On a machine without CUDA its ranks talk over gloo on the CPU."""
    if launched_world_size() <= 1:
        return None
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    return accelerator if accelerator.num_processes > 1 else None
