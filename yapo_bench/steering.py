"""Steering vectors and the one context manager that applies them.

With h the residual stream after decoder layer L, coefficient c = direction · multiplier:
  dense (CAA, BiPO):  h' = h + c·v
  sparse (SAS, YaPO): h' = Dec(ReLU(Enc(h) + c·v)) + (h − Dec(Enc(h)))           (paper, eq. 3)
Codes are non-negative, so latents outside S = supp(v) are unchanged and exactly
  h' = h + W_dec[S]ᵀ (ReLU(s_S + c·v_S) − s_S),
which needs only the |S| encoder columns in S when the SAE's latents are computed independently
(ReLU / JumpReLU without run-time normalisation). That is the fast path; `phi_full` is the literal
eq. 3 it is tested against, and the fallback for SAEs where the shortcut is not exact (TopK, normalised).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from yapo_bench.atomic import atomic_file
from yapo_bench.internals import (
    cache_argument,
    cached_tokens,
    decoder_owner,
    forward_arguments,
    get_layer,
    hidden_size,
    layer_hidden,
    with_hidden,
)
from yapo_bench.models import model_identity

SPACES = ("dense", "sae")
POSITIONS = ("all", "prompt", "response", "generated")
SPARSE_FORMS = ("support", "full")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin")
_FAST_ARCHITECTURES = ("standard", "jumprelu")


class SteeringError(ValueError):
    """A vector, model, SAE or argument that does not fit; the message names the field."""


class VectorFileError(SteeringError):
    """A vector file that is missing, corrupt or not a yapo-bench vector."""


def check_multiplier(value: Any, field: str = "multiplier") -> float:
    """λ as a float, or a SteeringError naming `field`: every entry point (run configs, the CLI, yapo_steered's
    model args, exports, steer) checks with this, before any work is done."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SteeringError(f"{field}: {value!r}; expected a finite number >= 0")
    return float(value)


def check_direction(value: Any, field: str = "direction") -> int:
    """d as an int, or a SteeringError naming `field`."""
    if isinstance(value, bool) or value not in (-1, 1):
        raise SteeringError(f"{field}: {value!r}; expected -1 or 1")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# SteeringVector


VECTOR_FORMAT = "yapo-bench-vector/2"
# what determines a vector's effect: the checksum covers these, so a hand-edited layer, space, model or SAE is refused
_CHECKED = ("format", "space", "layer", "dim", "model_id", "sae_id", "sae_hash", "values_sha256")


def _values_digest(values: torch.Tensor) -> str:
    return hashlib.sha256(values.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()).hexdigest()


def _checksum(meta: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `meta`'s `_CHECKED` fields."""
    canonical = json.dumps({k: meta.get(k) for k in _CHECKED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class SteeringVector:
    """A steering vector and everything needed to apply it to the right model (and SAE) only."""

    values: torch.Tensor
    space: str
    layer: int
    model_id: str | None = None
    sae_id: str | None = None
    sae_hash: str | None = None
    method: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # (model, SAE) pairs already checked, held weakly: a freed model's id can be reused by another
    _compatible: list[tuple[weakref.ref, weakref.ref | None]] = field(default_factory=list, init=False, repr=False,
                                                                       compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.values, torch.Tensor):
            self.values = torch.as_tensor(self.values, dtype=torch.float32)
        if self.values.dim() != 1 or self.values.numel() == 0:
            raise SteeringError(f"values: expected a non-empty 1-D tensor, got shape {tuple(self.values.shape)}")
        if not self.values.is_floating_point():
            self.values = self.values.to(torch.float32)
        if not torch.isfinite(self.values.detach()).all():
            raise SteeringError("values: contains NaN or inf")
        if self.space not in SPACES:
            raise SteeringError(f"space: {self.space!r}; expected one of {SPACES}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteeringError(f"layer: {self.layer!r}; expected a non-negative integer")
        if self.space == "sae" and not self.sae_hash:
            raise SteeringError("sae_hash: a vector in SAE space must record the hash of its SAE")
        try:
            json.dumps({"config": self.config, "provenance": self.provenance})
        except TypeError as err:
            raise SteeringError(f"config/provenance: must be JSON-serialisable ({err})") from None

    @classmethod
    def dense(cls, values: torch.Tensor | list[float], layer: int, **metadata: Any) -> SteeringVector:
        """A vector added to the residual stream: h + direction·multiplier·values."""
        return cls(values=torch.as_tensor(values, dtype=torch.float32), space="dense", layer=layer, **metadata)

    @classmethod
    def sparse(cls, values: torch.Tensor | list[float], layer: int, sae: nn.Module, **metadata: Any) -> SteeringVector:
        """A vector in `sae`'s latent space, applied through eq. 3; records the SAE's id and hash."""
        from yapo_bench.sae import sae_hash, sae_identity

        values = torch.as_tensor(values, dtype=torch.float32)
        if values.dim() == 1 and values.numel() != sae.cfg.d_sae:
            raise SteeringError(f"values: has {values.numel()} entries but the SAE has d_sae = {sae.cfg.d_sae}")
        metadata.setdefault("sae_id", sae_identity(sae))
        metadata.setdefault("sae_hash", sae_hash(sae))
        return cls(values=values, space="sae", layer=layer, **metadata)

    # -- properties ----------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.values.numel()

    @property
    def norm(self) -> float:
        return float(self.values.detach().norm())

    @property
    def l0(self) -> int:
        return int((self.values.detach() != 0).sum())

    def metadata(self) -> dict[str, Any]:
        meta = {
            "format": VECTOR_FORMAT,
            "space": self.space,
            "layer": self.layer,
            "dim": self.dim,
            "model_id": self.model_id,
            "sae_id": self.sae_id,
            "sae_hash": self.sae_hash,
            "method": self.method,
            "config": self.config,
            "provenance": self.provenance,
            "values_sha256": _values_digest(self.values),
        }
        return {**meta, "checksum": _checksum(meta)}

    # -- compatibility -------------------------------------------------------------------------------

    def check_compatible(self, model: nn.Module, sae: nn.Module | None = None) -> None:
        """Raise SteeringError unless this vector was made for `model` (and `sae`). A pair that passed is not
        checked again (steer() asks on every batch; hashing a large SAE is not free)."""
        if any(m() is model and (s() if s else None) is sae for m, s in self._compatible):
            return
        self._check_compatible(model, sae)
        self._compatible.append((weakref.ref(model), weakref.ref(sae) if sae is not None else None))

    def _check_compatible(self, model: nn.Module, sae: nn.Module | None) -> None:
        get_layer(model, self.layer)
        model_id = model_identity(model)
        if self.model_id and model_id and self.model_id != model_id:
            raise SteeringError(f"vector: made for model {self.model_id!r}, not {model_id!r}")
        d_model = hidden_size(model)
        if self.space == "dense":
            if self.dim != d_model:
                raise SteeringError(f"vector: has {self.dim} values but the model's hidden size is {d_model}")
            return
        if sae is None:
            raise SteeringError(f"sae: the vector lives in SAE space ({self.sae_id}); pass the SAE it was made with")
        from yapo_bench.sae import check_sae_fits, sae_hash, sae_identity

        check_sae_fits(sae, model)
        if sae.cfg.d_sae != self.dim:
            raise SteeringError(f"vector: has {self.dim} latents but the SAE has d_sae = {sae.cfg.d_sae}")
        if self.sae_hash != sae_hash(sae):
            raise SteeringError(
                f"sae: vector was made with SAE {self.sae_id!r} (hash {self.sae_hash}), "
                f"not {sae_identity(sae)!r} (hash {sae_hash(sae)})"
            )

    # -- files ---------------------------------------------------------------------------------------

    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        path = Path(path)
        if path.suffix in {".safetensors", ".json"}:
            return path.with_suffix(".safetensors"), path.with_suffix(".json")
        return path / "vector.safetensors", path / "vector.json"

    def save(self, path: str | Path) -> Path:
        """Write `vector.safetensors` + `vector.json` into directory `path` (or beside `path` when it
        ends in .safetensors). Both are written atomically; returns the safetensors path."""
        tensor_path, json_path = self._paths(path)
        if "created" not in self.provenance:
            from yapo_bench.environment import versions

            self.provenance = {
                **self.provenance,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "versions": versions(),
            }
        meta = self.metadata()
        values = self.values.detach().to(torch.float32).cpu().contiguous()
        with atomic_file(tensor_path) as tmp:
            save_file({"values": values}, tmp, metadata={"yapo_bench": json.dumps(meta)})
        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return tensor_path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Load a vector saved by `save` (directory, .safetensors or .json path); checks its checksum."""
        if Path(path).suffix in PICKLE_SUFFIXES:
            raise VectorFileError(f"vector: {path} is a pickle ({Path(path).suffix}), which yapo-bench never loads "
                                  "because unpickling can run code; vectors are safetensors + JSON (an lm-eval "
                                  "`steered` .pt converts with `yapo-bench vector import-lm-eval`)")
        tensor_path, json_path = cls._paths(path)
        if not tensor_path.is_file():
            raise VectorFileError(f"vector: no file at {tensor_path}")
        try:
            tensors = load_file(tensor_path)
            from safetensors import safe_open

            with safe_open(tensor_path, "pt") as handle:
                header = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise VectorFileError(f"vector: {tensor_path} is corrupt or not safetensors ({err})") from None
        meta_path = json_path if json_path.is_file() else tensor_path
        try:
            meta = json.loads(json_path.read_text()) if json_path.is_file() else json.loads(header["yapo_bench"])
        except (KeyError, json.JSONDecodeError) as err:
            raise VectorFileError(f"vector: {tensor_path} has no readable yapo-bench metadata ({err})") from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if "values" not in tensors or not str(fmt).startswith("yapo-bench-vector/"):
            raise VectorFileError(f"vector: {tensor_path} is not a yapo-bench vector (format {fmt!r})")
        if fmt == "yapo-bench-vector/1":
            raise VectorFileError(f"vector: {meta_path} was saved by an older yapo-bench (format {fmt}, whose checksum "
                                  "does not cover its layer, space, model or SAE); retrain it with this version")
        if fmt != VECTOR_FORMAT:
            raise VectorFileError(f"vector: {meta_path} has format {fmt!r}; this yapo-bench reads {VECTOR_FORMAT}")
        values = tensors["values"]
        if _values_digest(values) != meta.get("values_sha256"):
            raise VectorFileError(f"vector: {tensor_path} is corrupt (values do not match the recorded checksum)")
        if _checksum({**meta, "dim": values.numel()}) != meta.get("checksum"):
            raise VectorFileError(f"vector: {meta_path} does not match its checksum (layer, space, model or SAE "
                                  "edited after saving?)")
        fields_ = ("space", "layer", "model_id", "sae_id", "sae_hash", "method", "config", "provenance")
        return cls(values=values, **{k: meta.get(k) for k in fields_ if k in meta})

    def to_lm_eval_steered(self, path: str | Path, multiplier: float = 1.0, direction: int = 1) -> Path:
        """Export a dense vector in the `.pt` format of lm-eval's built-in `steered` model
        (`--model steered --model_args steer_path=...`; it steers every position)."""
        if self.space != "dense":
            raise SteeringError("space: only dense vectors can be exported to lm-eval's `steered` format")
        coefficient = check_direction(direction) * check_multiplier(multiplier)
        config = {
            f"layers.{self.layer}": {
                "steering_vector": self.values.detach().to(torch.float32).cpu(),
                "steering_coefficient": coefficient,
                "action": "add",
                "bias": None,
                "head_index": None,
            }
        }
        path = Path(path)
        with atomic_file(path) as tmp:
            torch.save(config, tmp)
        return path

    @classmethod
    def from_lm_eval_steered(cls, path: str | Path, **metadata: Any) -> SteeringVector:
        """Import the single `add` hookpoint of an lm-eval `steered` `.pt` file as a dense vector
        (its coefficient folded into the values)."""
        try:
            config = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a bad pickle; all mean "not this format"
            raise VectorFileError(f"vector: {path} is not a readable lm-eval steer file ({err})") from None
        if not isinstance(config, dict) or len(config) != 1:
            raise VectorFileError(f"vector: {path} must hold exactly one hookpoint, found {len(config)}")
        (hookpoint, info), = config.items()
        parts = hookpoint.split(".")
        if len(parts) != 2 or parts[0] != "layers" or not parts[1].isdigit():
            raise VectorFileError(f"vector: hookpoint {hookpoint!r} is not of the form layers.<L>")
        if info.get("action", "add") != "add":
            raise VectorFileError(f"vector: action {info.get('action')!r} cannot be imported; only 'add'")
        values = info["steering_vector"].reshape(-1).float() * float(info.get("steering_coefficient", 1.0))
        return cls.dense(values, layer=int(parts[1]), **metadata)


# ----------------------------------------------------------------------------------------------------
# Φ: the steering maps


def _supports_fast_path(sae: nn.Module) -> bool:
    cfg = sae.cfg
    return (
        cfg.architecture() in _FAST_ARCHITECTURES
        and cfg.normalize_activations == "none"
        and getattr(cfg, "reshape_activations", "none") == "none"
    )


@dataclass(frozen=True)
class SparseWeights:
    """The SAE weights eq. 3 needs for a set of latents, for SAEs whose latents are independent of each
    other (`_supports_fast_path`). `steer` gathers them once per context, not on every forward pass."""

    values: torch.Tensor
    w_enc: torch.Tensor
    b_enc: torch.Tensor
    threshold: torch.Tensor | None
    w_dec: torch.Tensor
    input_shift: torch.Tensor

    @classmethod
    def gather(cls, sae: nn.Module, values: torch.Tensor, support: torch.Tensor | None = None) -> SparseWeights | None:
        """Weights for supp(v) (None when v = 0); `support`: v's non-zero indices when the caller has them (found
        on the CPU copy of v, the GPU is not asked). While v carries a gradient (training) every latent is kept
        instead: the gradient can be non-zero on any latent active on the input, and for the rest
        relu(s + c·0) − s = 0 exactly, so this is the same sum without gathering columns."""
        jumprelu = sae.cfg.architecture() == "jumprelu"
        if values.requires_grad:
            return cls(values, sae.W_enc, sae.b_enc, sae.threshold if jumprelu else None, sae.W_dec,
                       sae.b_dec * sae.cfg.apply_b_dec_to_input)
        if support is None:
            support = (values != 0).nonzero().squeeze(-1)
        columns = support.to(values.device)
        if columns.numel() == 0:
            return None
        return cls(values[columns].float(), sae.W_enc[:, columns].contiguous(), sae.b_enc[columns],
                   sae.threshold[columns] if jumprelu else None, sae.W_dec[columns].contiguous(),
                   sae.b_dec * sae.cfg.apply_b_dec_to_input)

    def delta(self, hidden: torch.Tensor, coefficient: float) -> torch.Tensor:
        """Φ(h) − h = W_decᵀ (ReLU(s + c·v) − s) over these latents, s their codes of h."""
        pre = (hidden - self.input_shift) @ self.w_enc + self.b_enc
        codes = pre.relu() if self.threshold is None else pre.relu() * (pre > self.threshold)
        return ((codes + coefficient * self.values).relu() - codes) @ self.w_dec


def phi_full(hidden: torch.Tensor, values: torch.Tensor, coefficient: float, sae: nn.Module) -> torch.Tensor:
    """Eq. 3 literally: Dec(ReLU(Enc(h) + c·v)) + (h − Dec(Enc(h))). The reference."""
    codes = sae.encode(hidden)
    return sae.decode((codes + coefficient * values).relu()) + (hidden - sae.decode(codes))


def sparse_delta(
    hidden: torch.Tensor, values: torch.Tensor, coefficient: float, sae: nn.Module, form: str = "support",
    weights: SparseWeights | None = None,
) -> torch.Tensor:
    """Φ(h) − h for a vector in SAE space, by the sparse-support form (default) or the full eq. 3.
    `weights`: `SparseWeights.gather(sae, values)` when the caller already has it."""
    if form == "full" or not _supports_fast_path(sae):
        return phi_full(hidden, values, coefficient, sae) - hidden
    weights = weights or SparseWeights.gather(sae, values)
    return torch.zeros_like(hidden) if weights is None else weights.delta(hidden, coefficient)


def steering_delta(
    hidden: torch.Tensor,
    values: torch.Tensor,
    space: str,
    coefficient: float,
    sae: nn.Module | None = None,
    sparse_form: str = "support",
    weights: SparseWeights | None = None,
) -> torch.Tensor:
    """Φ(h) − h in fp32 for a vector's `values` (fp32, on the hidden state's device) in `space`; the single
    implementation of the steering maths. The caller casts it back to the model's dtype."""
    hidden = hidden.float()
    if space == "dense":
        return (coefficient * values).expand_as(hidden)
    return sparse_delta(hidden, values, coefficient, sae, sparse_form, weights)


def support_weights(vector: SteeringVector, values: torch.Tensor, sae: nn.Module | None,
                    sparse_form: str = "support") -> tuple[bool, SparseWeights | None]:
    """Whether `vector` is applied by the sparse-support form (a vector in SAE space, form `support`, an SAE whose
    latents are independent), and if so the weights of its support, gathered once per context by `steer` and by
    every engine (None when v = 0: nothing to add). `values`: the vector's values where the layer runs."""
    gathers = vector.space == "sae" and sparse_form == "support" and _supports_fast_path(sae)
    support = None if vector.values.requires_grad else (vector.values != 0).nonzero().squeeze(-1)
    return gathers, (SparseWeights.gather(sae, values, support) if gathers else None)


def module_device(module: nn.Module) -> torch.device:
    """Where a module's tensors are: its first parameter's device, else its first buffer's (a stand-in layer that
    replays a cached output holds only that), else the CPU."""
    return next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))


# ----------------------------------------------------------------------------------------------------
# steer(): the one context manager


class SteeredPositions:
    """State of one `steer` context: which positions of the current forward pass are steered.

    Positions are absolute indices in the padded sequence (past tokens included during generation).
    For `prompt`/`response` the boundary is `response_start` (per row); when unset, the first forward
    pass of a generation (empty cache) is the prompt and every later token is generated.
    """

    def __init__(self, positions: str | torch.Tensor, response_start: torch.Tensor | None,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)  # where the steered layer runs: every mask is made there
        self.positions = positions.to(self.device) if isinstance(positions, torch.Tensor) else positions
        self.response_start = response_start
        self.calls = 0
        self._mask: torch.Tensor | None = None
        self._prefill_length: int | None = None

    def set_response_start(self, response_start: torch.Tensor | list[int] | None) -> None:
        """Index of each row's first response token, for `positions` = prompt / response."""
        self.response_start = (None if response_start is None else
                                torch.as_tensor(response_start).long().reshape(-1, 1).to(self.device))

    def _begin_forward(self, length: int, past: int, attention_mask: Any, batch: int) -> None:
        real = torch.ones(batch, length, dtype=torch.bool, device=self.device)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:  # 4-D / dict masks: no padding info
            real = attention_mask[:, -length:].to(device=self.device, dtype=torch.bool)
        absolute = torch.arange(past, past + length, device=self.device)
        if isinstance(self.positions, torch.Tensor):
            chosen = self.positions[:, past : past + length].bool()
            if chosen.shape != real.shape:
                raise SteeringError(f"positions: mask covers {tuple(chosen.shape)} but the input is {(batch, length)}")
        elif self.positions == "all":
            chosen = real
        else:
            if past == 0:
                # a plain forward or generation's prefill: without response_start, all of it is prompt
                self._prefill_length = length
            start = self.response_start
            if start is None:
                start = torch.full((batch, 1), self._prefill_length if self._prefill_length is not None else 0,
                                   device=self.device)
            chosen = absolute[None, :] < start if self.positions == "prompt" else absolute[None, :] >= start
        self._mask = chosen & real
        self.calls += 1


@contextlib.contextmanager
def steer(
    model: nn.Module,
    vector: SteeringVector | None,
    multiplier: float = 1.0,
    direction: int = 1,
    positions: Literal["all", "prompt", "response", "generated"] | torch.Tensor = "all",
    sae: nn.Module | None = None,
    response_start: torch.Tensor | list[int] | None = None,
    sparse_form: Literal["support", "full"] = "support",
) -> Iterator[SteeredPositions]:
    """Apply `vector` at its layer for the duration of the block; the hooks go on exit, also on error.

    multiplier λ ≥ 0 and direction d ∈ {−1, +1} scale the vector by d·λ. `positions`: `all` real tokens,
    the `prompt`, or the `response`/`generated` tokens (boundary: `response_start` or generation's
    prefill), or a bool mask [batch, total length]. Padding (attention mask 0) is never steered.
    `vector=None` installs nothing, so callers use one code path for the baseline and steered runs.
    """
    multiplier, direction = check_multiplier(multiplier), check_direction(direction)
    if not isinstance(positions, torch.Tensor) and positions not in POSITIONS:
        raise SteeringError(f"positions: {positions!r}; expected one of {POSITIONS} or a bool mask tensor")
    if sparse_form not in SPARSE_FORMS:
        raise SteeringError(f"sparse_form: {sparse_form!r}; expected one of {SPARSE_FORMS}")
    if vector is None:
        handle = SteeredPositions(positions, None)
        handle.set_response_start(response_start)
        yield handle
        return
    vector.check_compatible(model, sae)
    coefficient = float(direction * multiplier)
    layer_module = get_layer(model, vector.layer)
    # Everything the hooks touch is put on the steered layer's device once, here: nothing crosses devices per
    # forward pass. v stays fp32 (and differentiable while it is trained); the SAE must already be there.
    device = module_device(layer_module)
    if sae is not None and module_device(sae) != device:
        raise SteeringError(f"sae: its weights are on {module_device(sae)} but layer {vector.layer} runs on {device}; "
                            "load the SAE on the model's device")
    handle = SteeredPositions(positions, None, device)
    handle.set_response_start(response_start)
    values = vector.values.to(device=device, dtype=torch.float32)
    gathers, weights = support_weights(vector, values, sae, sparse_form)  # v's SAE columns, read once

    def before_decoder(module: nn.Module, args: tuple, kwargs: dict) -> None:
        arguments = forward_arguments(module, args, kwargs)
        inputs = arguments.get("input_ids")
        if inputs is None:
            inputs = arguments["inputs_embeds"]
        past = cached_tokens(cache_argument(arguments))  # never from position_ids (left padding shifts them)
        handle._begin_forward(inputs.shape[1], past, arguments.get("attention_mask"), inputs.shape[0])

    def after_layer(module: nn.Module, _inputs: tuple, output: Any) -> Any:
        hidden = layer_hidden(output, module)
        mask = handle._mask
        if mask is None or mask.shape != hidden.shape[:2]:
            raise SteeringError("steer: layer ran outside a model forward pass; call the model, not the layer")
        if gathers and weights is None:  # v = 0: nothing to add
            return output
        delta = steering_delta(hidden, values, vector.space, coefficient, sae, sparse_form, weights)
        return with_hidden(output, hidden + (delta * mask[..., None]).to(hidden.dtype))

    hooks = [
        decoder_owner(model).register_forward_pre_hook(before_decoder, with_kwargs=True),
        layer_module.register_forward_hook(after_layer),
    ]
    try:
        yield handle
    finally:
        for hook in hooks:
            hook.remove()
