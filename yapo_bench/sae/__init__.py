"""Sparse autoencoders through sae-lens: load (a shipped name, a model preset's shipped SAE, a local directory, or
`<release>/<sae_id>` of sae-lens' pretrained registry), identity (the hash a vector records) and fit to a model.
Training is in `sae.training`, evaluation in `sae.evaluation`; steering needs only this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yapo_bench.internals import hidden_size
from yapo_bench.models import PRESETS, model_source
from yapo_bench.resources import resource_dir

SHIPPED_SAE_DIR = resource_dir("data") / "saes"


class SAELoadError(ValueError):
    """An SAE spec that cannot be loaded or does not fit the model."""


# ----------------------------------------------------------------------------------------------------
# Loading and identity


def shipped_sae_path(name: str) -> Path:
    return SHIPPED_SAE_DIR / name


def list_shipped_saes() -> list[str]:
    if not SHIPPED_SAE_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_SAE_DIR.iterdir() if (p / "cfg.json").exists())


def sae_directory(source: str) -> Path:
    """The local directory an SAE source points to (shipped name, preset, or path)."""
    preset = PRESETS.get(source)
    if preset is not None:
        if preset.shipped_sae is None:
            raise SAELoadError(f"sae: preset {source!r} ships no SAE yet; train one with `yapo-bench sae train`")
        source = preset.shipped_sae
    path = Path(source).expanduser()
    if not path.exists() and source in list_shipped_saes():
        return shipped_sae_path(source)
    if not path.exists():
        raise SAELoadError(f"sae: {source!r} is not a shipped SAE ({', '.join(list_shipped_saes()) or 'none'}) "
                           "nor a local directory")
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers now (False at once under HF_HUB_OFFLINE): one request, no retries."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError):
        return False
    return True


def _preset_sae(name: str, device: str, dtype: str) -> nn.Module:
    """A preset's SAE: its sae-lens registry SAE (Gemma Scope 2 for gemma3-270m) when the hub or the HF cache has
    it, else the one we ship, saying so. Offline, only the cache is tried, so a missing SAE costs no retries."""
    from huggingface_hub import constants

    preset = PRESETS[name]
    if preset.hub_sae:
        offline = not hub_reachable()
        try:
            with temporarily(constants, "HF_HUB_OFFLINE", True) if offline else contextlib.nullcontext():
                return load_sae(preset.hub_sae, device, dtype)
        except SAELoadError as err:
            if preset.shipped_sae is None:
                raise
            why = "the hub is unreachable and the HF cache does not hold it" if offline else str(err)
            print(f"note: sae for {name}: {preset.hub_sae} cannot be loaded ({why}); using the shipped "
                  f"{preset.shipped_sae}", file=sys.stderr)
    sae_directory(name)  # says so when the preset ships none
    return load_sae(preset.shipped_sae, device, dtype)


def load_sae(source: str, device: str = "cpu", dtype: str = "float32") -> nn.Module:
    """Load an SAE: a shipped name, a model preset (its registry SAE when reachable, else its shipped one), a local
    sae-lens directory, or `<release>/<sae_id>` from sae-lens' pretrained registry (downloads from the hub)."""
    from sae_lens import SAE

    if source in PRESETS and not Path(source).expanduser().exists():
        return _preset_sae(source, device, dtype)

    release, _, sae_id_in_release = source.partition("/")
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    is_local = source in PRESETS or source in list_shipped_saes() or Path(source).expanduser().exists()
    if is_local:
        path = sae_directory(source)
        if not (path / "cfg.json").exists():
            raise SAELoadError(f"sae: directory {str(path)!r} has no cfg.json (expected sae-lens' on-disk format)")
        sae = SAE.load_from_disk(path, device=device, dtype=dtype)
        sae_id = path.name if path.parent == SHIPPED_SAE_DIR else str(path.resolve())
    elif release in get_pretrained_saes_directory() and sae_id_in_release:
        entry = get_pretrained_saes_directory()[release]
        converter = _gemma_3_loader if entry.conversion_func == "gemma_3" else None
        try:
            sae = SAE.from_pretrained(release, sae_id_in_release, device=device, dtype=dtype, converter=converter)
        except OSError as err:  # not in the HF cache and the hub unreachable or offline: name what was wanted
            path = entry.saes_map.get(sae_id_in_release, sae_id_in_release)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SAELoadError(f"sae: cannot load {source!r} (hub repo {entry.repo_id}, path {path}): {reason}") from err
        sae_id = source
    else:
        raise SAELoadError(
            f"sae: {source!r} is not a shipped SAE ({', '.join(list_shipped_saes()) or 'none'}), a local "
            "directory, nor <release>/<sae_id> of a sae-lens pretrained release"
        )
    sae.requires_grad_(False)
    sae.eval()
    sae.yapo_sae_id = sae_id
    return sae


def _cached_tensor_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    """Tensor shapes of a safetensors file in a hub repo, read from the copy huggingface_hub fetches (or finds in its
    cache, also offline)."""
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    with safe_open(hf_hub_download(repo_id, filename), framework="pt") as weights:
        return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118


def _gemma_3_loader(repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
                    cfg_overrides: dict | None = None) -> tuple:
    """sae-lens' Gemma Scope 2 (`gemma_3`) loader, except for how it learns d_in/d_sae. sae-lens (6.54) reads them
    with raw `requests` range requests to huggingface.co, which ignore HF_HUB_OFFLINE and the cache, so no Gemma
    Scope 2 SAE could load offline; here the same header is read from the file the loader downloads next anyway."""
    from sae_lens.loading import pretrained_sae_loaders as loaders

    with temporarily(loaders, "get_safetensors_tensor_shapes", _cached_tensor_shapes):
        return loaders.gemma_3_sae_huggingface_loader(repo_id, folder_name, device, force_download, cfg_overrides)


def sae_layer(sae: nn.Module) -> int | None:
    """The layer an SAE reads, from its sae-lens hook name (`blocks.15.hook_resid_post`, `model.layers.15`)."""
    return _hook_layer(getattr(getattr(sae.cfg, "metadata", None), "hook_name", None))


def _hook_layer(hook: str | None) -> int | None:
    numbers = [part for part in (hook or "").split(".") if part.isdigit()]
    return int(numbers[0]) if len(numbers) == 1 else None


def _registry_entry(source: str) -> tuple[Any, str] | None:
    """(sae-lens registry entry, sae id) of `<release>/<sae_id>`, None for any other source."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, _, sae_id = source.partition("/")
    entry = get_pretrained_saes_directory().get(release)
    return (entry, sae_id) if entry is not None and sae_id in entry.saes_map else None


def planned_sae_source(model: str, sae_spec: str | None) -> str | None:
    """The SAE source a run will load, decided before anything loads: `sae_spec`, else the preset's registry SAE
    when the HF cache holds it or the hub answers, else its shipped SAE (None for a model without one)."""
    if sae_spec:
        return sae_spec
    preset = PRESETS.get(model)
    if preset is None or preset.shipped_sae is None:
        return None
    if preset.hub_sae:
        from yapo_bench.digests import hf_cached_revision

        entry, sae_id = _registry_entry(preset.hub_sae)
        if hf_cached_revision(entry.repo_id, inside=entry.saes_map[sae_id]) or hub_reachable():
            return preset.hub_sae
    return preset.shipped_sae


def source_identity(source: str) -> dict[str, Any]:
    """What an SAE source names, without loading it, for fingerprints: a local or shipped SAE by its files'
    content, a registry SAE by its id and the HF cache's revision of it (None: not cached, the hub's is fetched)."""
    from yapo_bench.digests import file_digest, hf_cached_revision

    registry = _registry_entry(source)
    if registry is not None and not Path(source).expanduser().exists():
        entry, sae_id = registry
        return {"sae": source, "repo": entry.repo_id,
                "revision": hf_cached_revision(entry.repo_id, inside=entry.saes_map[sae_id])}
    path = sae_directory(source)
    return {"sae": path.name if path.parent == SHIPPED_SAE_DIR else str(path.resolve()),
            **{name: file_digest(path / name) for name in ("cfg.json", "sae_weights.safetensors")
               if (path / name).is_file()}}


def source_layer(source: str) -> int | None:
    """The layer an SAE source reads, without loading it: its cfg.json's hook name, or a registry id's `layer_N`."""
    import json
    import re

    registry = _registry_entry(source)
    if registry is not None and not Path(source).expanduser().exists():
        found = re.search(r"layer_(\d+)", registry[1])
        return int(found[1]) if found else None
    try:
        config = json.loads((sae_directory(source) / "cfg.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return _hook_layer((config.get("metadata") or {}).get("hook_name") or config.get("hook_name"))


def resolve_sae_and_layer(model: str, sae_spec: str | None, layer: int | None, needs_sae: bool,
                          sae_field: str = "sae", purpose: str = "a sparse vector",
                          layer_field: str = "layer",
                          load: Callable[[str], nn.Module] | None = None,
                          device: str | torch.device = "cpu") -> tuple[nn.Module | None, int | None]:
    """The SAE (`sae_spec`, else the preset's shipped one when `needs_sae`) and the layer to steer: explicit,
    else the SAE's own layer, else the preset's default; None when nothing says (callers name their field).
    An explicit layer that is not the SAE's own is refused: the SAE would encode a layer it was not trained on.
    `load`: how to load an SAE source (default `load_sae` onto `device`, the model's; a run passes one that loads
    each source once)."""
    model_source(model)  # an unknown model is the first thing wrong, before anything about its SAE or layer
    preset = PRESETS.get(model)
    sae = None
    if sae_spec or needs_sae:
        if not sae_spec and not (preset and preset.shipped_sae):
            raise SAELoadError(f"{sae_field}: required for {purpose} with model {model!r}, which has no shipped SAE")
        sae = load(sae_spec or model) if load else load_sae(sae_spec or model, device=str(device))
    own = sae_layer(sae) if sae is not None else None
    if layer is not None and own is not None and layer != own:
        raise SAELoadError(f"{layer_field}: {layer} but the SAE {sae_identity(sae)} reads layer {own}; pass an SAE "
                           f"for layer {layer} ({sae_field}) or leave {layer_field} unset")
    if layer is None:
        layer = own
    if layer is None and preset:
        layer = preset.default_layer
    return sae, layer


def sae_hash(sae: nn.Module) -> str:
    """Content hash of the SAE's weights: a vector records it and refuses any other SAE."""
    cached = getattr(sae, "_yapo_sae_hash", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    sae._yapo_sae_hash = digest.hexdigest()[:16]
    return sae._yapo_sae_hash


def sae_identity(sae: nn.Module) -> str:
    return getattr(sae, "yapo_sae_id", None) or f"{sae.cfg.architecture()}-{sae.cfg.d_in}x{sae.cfg.d_sae}"


def check_sae_fits(sae: nn.Module | None, model: nn.Module, needed_by: str | None = None) -> None:
    """Raise unless `sae` reads the model's residual stream; `needed_by` names a method that requires one."""
    if sae is None:
        raise SAELoadError(f"sae: {needed_by or 'this'} works in SAE latent space; pass an SAE")
    d_model = hidden_size(model)
    if sae.cfg.d_in != d_model:
        raise SAELoadError(f"sae: d_in is {sae.cfg.d_in} but the model's hidden size is {d_model}")


@contextlib.contextmanager
def temporarily(target: Any, name: str, value: Any) -> Iterator[None]:
    """`target[name]` (a mapping such as os.environ) or `target.name` set to `value` within the block only."""
    mapping = isinstance(target, MutableMapping)
    missing = object()
    old = target.get(name, missing) if mapping else getattr(target, name)
    if mapping:
        target[name] = value
    else:
        setattr(target, name, value)
    try:
        yield
    finally:
        if not mapping:
            setattr(target, name, old)
        elif old is missing:
            del target[name]
        else:
            target[name] = old


def describe_sae_source(source: str | None, model: str) -> tuple[str, int]:
    """What an SAE source names, without loading it: (a line for plans, its number of latents or 0 if unknown).
    A registry id is resolved to its hub repo and file through sae-lens' registry."""
    import json
    import math
    import re

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    if source is None:
        preset = PRESETS.get(model)
        if preset is None or preset.shipped_sae is None:
            return "none", 0
        if preset.hub_sae:
            hub, latents = describe_sae_source(preset.hub_sae, model)
            shipped, _ = describe_sae_source(preset.shipped_sae, model)
            return f"{hub} if the hub or the HF cache has it, else {shipped}", latents
        source = preset.shipped_sae
    release, _, sae_id = source.partition("/")
    entry = get_pretrained_saes_directory().get(release)
    if entry is not None and sae_id in entry.saes_map:
        width = re.search(r"width_(\d+)([km])", sae_id)
        # Gemma Scope's widths are powers of two named in thousands: 16k = 16,384, 65k = 65,536, 1m = 1,048,576
        latents = 2 ** round(math.log2(int(width[1]) * (1e3 if width[2] == "k" else 1e6))) if width else 0
        l0 = (entry.expected_l0 or {}).get(sae_id)
        return (f"{source} (sae-lens registry: repo {entry.repo_id}, file {entry.saes_map[sae_id]}"
                + (f", {latents:,} latents" if latents else "") + (f", L0 {l0:g}" if l0 else "") + ")"), latents
    try:
        config = json.loads((sae_directory(source) / "cfg.json").read_text())
    except (SAELoadError, OSError, json.JSONDecodeError):
        return f"{source} (not found here)", 0
    return f"{source} ({config.get('d_sae', '?'):,} latents, local)", int(config.get("d_sae") or 0)
