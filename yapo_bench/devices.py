"""Where a model runs and in which precision: one setting pair (`device`, `dtype`) that every entry point takes
(run configs, `yapo-bench train`, `sae eval`, the analyses, yapo_steered) and records with what it made.

`auto` picks the GPU when there is one, else the CPU; and bf16 on a GPU, fp32 on the CPU. A device asked for
by name that is not there is refused, never quietly replaced. SAEs and steering vectors stay fp32 on the model's
device: the steering maths runs in fp32 and is cast back to the model's dtype.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype (`torch_dtype` for loading)."""

    device: str
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def record(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype}


def resolve_device(device: str | None = "auto", field: str = "device") -> str:
    """`auto` (or None): cuda when available (cuda:<LOCAL_RANK> in a process of a multi-GPU launch), else cpu. A
    named device must exist: `cuda` on a machine without one is refused in one line (`field` names the setting)."""
    device = "auto" if device in (None, "") else str(device)
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{os.environ['LOCAL_RANK']}" if os.environ.get("LOCAL_RANK") else "cuda"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{field}: {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{field}: {device!r} but this machine has no CUDA device; use auto or cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{field}: {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{field}: 'mps' but this machine has no MPS device; use auto or cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{field}: {device!r}; expected auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: str, field: str = "dtype") -> str:
    """`auto` (or None): bfloat16 on a GPU, float32 on the CPU; else one of float32, bfloat16, float16."""
    if isinstance(dtype, torch.dtype):
        names = {value: name for name, value in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"{field}: {dtype}; expected one of {', '.join(DTYPE_CHOICES)}")
        return names[dtype]
    dtype = "auto" if dtype in (None, "") else str(dtype).removeprefix("torch.")
    if dtype == "auto":
        return "float32" if torch.device(device).type == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise ValueError(f"{field}: {dtype!r}; expected one of {', '.join(DTYPE_CHOICES)}")
    return dtype


def resolve_placement(device: str | None = "auto", dtype: str | torch.dtype | None = "auto",
                      device_field: str = "device", dtype_field: str = "dtype") -> Placement:
    resolved = resolve_device(device, device_field)
    return Placement(resolved, resolve_dtype(dtype, resolved, dtype_field))


def model_placement(model: torch.nn.Module) -> dict[str, str]:
    """Where a loaded model runs, as recorded with what it made: {"device": ..., "dtype": ...}."""
    parameter = next(model.parameters())
    names = {value: name for name, value in DTYPES.items()}
    return {"device": str(parameter.device), "dtype": names.get(parameter.dtype, str(parameter.dtype))}


def add_placement_arguments(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device and --dtype (default auto: the GPU in bf16 when there is one, else the CPU in fp32)."""
    where = "the config's" if default is None else "%(default)s"
    parser.add_argument("--device", default=default,
                        help=f"auto, cpu, cuda or cuda:N; auto is the GPU when there is one (default: {where})")
    parser.add_argument("--dtype", default=default, choices=DTYPE_CHOICES,
                        help=f"model precision; auto is bfloat16 on a GPU, float32 on the CPU (default: {where})")


def placement_of(args: argparse.Namespace) -> Placement:
    return resolve_placement(args.device, args.dtype, "--device", "--dtype")
