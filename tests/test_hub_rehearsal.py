"""The paper's assets rehearsed offline through the real hub loaders (issue 17).

tests/hub_rehearsal.py writes tiny stand-ins under the real hub ids into a throwaway HF_HOME. A fresh Python
process with HF_HOME pointing there, HF_HUB_OFFLINE=1 and every proxy pointing at a closed local port then runs
yapo-bench's own loaders, which call transformers' `from_pretrained(hub id)`, sae-lens' `SAE.from_pretrained(
release, id)` and datasets' `load_dataset(hub id)` unpatched. That nothing was mocked is shown three ways: the
process records (audit hook) which files it opened, all inside the temp cache and none in any other HF cache;
the loaded weights equal the bytes the builder wrote; and the same loaders fail in an empty HF_HOME.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_rehearsal import (
    ANSWERS,
    DATASET_ID,
    GEMMA2_ID,
    GEMMA3_ID,
    GEMMA_SCOPE,
    GEMMA_SCOPE_2,
    QUESTIONS,
    ROW_COUNTRIES,
    TEST_TOPICS,
    build_hub_cache,
    build_preset_sae_cache,
    gemma_scope_params,
    offline_env,
)

DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, so any stray HTTP(S) call fails at once
SCOPE_SPEC, SCOPE_2_SPEC = "/".join(GEMMA_SCOPE), "/".join(GEMMA_SCOPE_2)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_hub_cache(tmp_path_factory.mktemp("hf_home"))


def _run_probe(mode: str, hf_home: str, args: dict) -> dict:
    """Run this file's probe in a fresh process under the offline environment; its last stdout line is JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(offline_env(Path(hf_home)), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, ALL_PROXY=DEAD_PROXY, NO_PROXY="",
               http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, all_proxy=DEAD_PROXY, no_proxy="")
    done = subprocess.run([sys.executable, __file__, mode, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise AssertionError(f"probe {mode} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.xdist_group("hub-cache")  # shares `hub_cache` (built once per worker) with the paper run
def test_yapo_bench_loaders_resolve_the_paper_ids_offline(hub_cache: dict) -> None:
    hf_home = hub_cache["hf_home"]
    scope = hub_cache["saes"][SCOPE_SPEC]
    other_caches = [os.path.expanduser("~/.cache/huggingface")] + [
        os.environ[k] for k in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE") if os.environ.get(k)]
    report = _run_probe("probe", hf_home, {"hf_home": hf_home, "live_latents": scope["live_latents"],
                                           "other_caches": other_caches})

    # The process really was offline and pointed at the temp cache.
    assert report["hub_cache"] == str(Path(hf_home) / "hub")
    assert report["datasets_cache"] == str(Path(hf_home) / "datasets")
    assert report["stray_hub_call"].startswith(("OfflineModeIsEnabled", "LocalEntryNotFoundError"))
    assert report["stray_http_call"].startswith(("ProxyError", "ConnectionError"))

    # Models: the real architectures and tokenizer class, weights equal to the snapshot's safetensors.
    gemma2, gemma3 = report["models"][GEMMA2_ID], report["models"][GEMMA3_ID]
    assert gemma2["class"] == "Gemma2ForCausalLM" and gemma2["tokenizer"] == "GemmaTokenizer"
    assert gemma2["softcapping"] == [50.0, 30.0] and gemma2["sliding_window"] == 32
    assert {"sliding_attention", "full_attention"} <= set(gemma2["layer_types"]) and gemma2["layers"] == 16
    assert gemma3["class"] == "Gemma3ForCausalLM" and gemma3["model_type"] == "gemma3_text" and gemma3["layers"] == 18
    for model in (gemma2, gemma3):
        assert model["weights_match_snapshot"] and model["chat"].startswith("<bos><start_of_turn>user\n")
        assert model["chat"].endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert gemma2["system_turn"].startswith("TemplateError") and "System role not supported" in gemma2["system_turn"]

    # SAEs: sae-lens' JumpReLU SAEs at the layers and hooks its registry gives, with the written weights.
    sae, sae2 = report["saes"][SCOPE_SPEC], report["saes"][SCOPE_2_SPEC]
    assert (sae["class"], sae["d_in"], sae["d_sae"], sae["layer"]) == ("JumpReLUSAE", 2304, 65536, 15)
    assert sae["hook_name"] == "blocks.15.hook_resid_post" and sae["model_name"] == "gemma-2-2b"
    arrays, live = gemma_scope_params(2304, 65536)
    assert live == scope["live_latents"]
    assert sae["w_enc_live_sha256"] == hashlib.sha256(np.ascontiguousarray(arrays["W_enc"][:, live]).tobytes()).hexdigest()
    assert (sae2["class"], sae2["d_in"], sae2["d_sae"], sae2["layer"]) == ("JumpReLUSAE", 64, 16384, 9)
    assert sae2["hf_hook_name"] == "model.layers.9.output" and sae2["model_name"] == GEMMA3_ID

    # The SAE fits its model and a sparse vector steers it (λ = 0 is the identity).
    for spec in (SCOPE_SPEC, SCOPE_2_SPEC):
        steering = report["steering"][spec]
        assert steering["fits"] and steering["identity_at_zero"] and steering["max_logit_change"] > 1e-3

    # Data: the paper's columns through load_dataset, converted with localized/non-localized pairs.
    data = report["data"]
    assert {"prompt-mcq", "chosen-mcq", "rejected_gemma_2_2b_it_mcq", "rejected_gemma_2_2b_it_open_ended"} <= set(
        data["columns"])
    train_topics = [t for t in QUESTIONS if t not in TEST_TOPICS]
    assert data["train_items"] == 2 * len(ROW_COUNTRIES) * len(train_topics)
    assert data["test_items"] == 2 * len(ROW_COUNTRIES) * len(TEST_TOPICS)
    assert set(data["countries"]) == set(ROW_COUNTRIES) and data["localizations"] == ["localized", "nonlocalized"]
    assert data["pair_sizes"] == [2]  # every question id holds exactly its localized and non-localized variant
    golds = {ANSWERS[t][c] for t in train_topics for c in ROW_COUNTRIES}
    assert set(data["gold_options"]) == golds and data["groups"]["egypt"] == "arabic"

    # Nothing came from anywhere but the temp cache.
    opened = report["opened"]
    assert not opened["other_hf_caches"], opened["other_hf_caches"]
    snapshot = hub_cache["models"][GEMMA2_ID]["snapshot"]
    assert f"{snapshot}/config.json" in opened["temp_cache"] and f"{snapshot}/tokenizer.json" in opened["temp_cache"]
    assert f"{scope['snapshot']}/{scope['path']}/params.npz" in opened["temp_cache"]
    scope2 = hub_cache["saes"][SCOPE_2_SPEC]
    assert f"{scope2['snapshot']}/{scope2['path']}/config.json" in opened["temp_cache"]
    assert any(path.startswith(hub_cache["dataset"]["prepared"]) for path in opened["temp_cache"])


def test_the_gemma3_preset_takes_gemma_scope_2_from_the_cache_else_its_shipped_sae(tmp_path: Path) -> None:
    """Offline, the preset's registry SAE comes from the HF cache when it is there (no hub call, no retries),
    and the shipped SAE otherwise, with a note saying which and why."""
    from yapo_bench.models import PRESETS

    preset = PRESETS["gemma3-270m"]
    release, sae_id = preset.hub_sae.split("/")
    build_preset_sae_cache(tmp_path / "cached", (release, sae_id), d_in=640, model_name="google/gemma-3-270m")
    cached = _run_probe("preset", str(tmp_path / "cached"), {})
    assert (cached["sae_id"], cached["d_in"], cached["d_sae"], cached["layer"]) == (preset.hub_sae, 640, 1024, 9)
    assert cached["said"] == ""
    (tmp_path / "empty").mkdir()
    shipped = _run_probe("preset", str(tmp_path / "empty"), {})
    assert (shipped["sae_id"], shipped["d_in"], shipped["layer"]) == (preset.shipped_sae, 640, 9)
    assert f"{preset.hub_sae} cannot be loaded (the hub is unreachable" in shipped["said"]
    assert f"using the shipped {preset.shipped_sae}" in shipped["said"]


def test_the_same_loaders_fail_without_the_cache(tmp_path: Path) -> None:
    """The negative control: an empty HF_HOME, same environment, and each loader raises."""
    report = _run_probe("control", str(tmp_path), {})
    assert report["model"].startswith(f"ModelLoadError: model: cannot load hub id '{GEMMA2_ID}'")
    assert report["sae"].startswith(f"SAELoadError: sae: cannot load '{SCOPE_SPEC}' (hub repo google/gemma-scope-2b-pt")
    assert report["sae_2"].startswith(f"SAELoadError: sae: cannot load '{SCOPE_2_SPEC}' (hub repo google/gemma-scope-2-")
    assert report["data"].startswith("ValueError: paper data: cannot load")


# ------------------------------------------------------------------------------------------------------
# The probes, run as `python tests/test_hub_rehearsal.py {probe,control} ARGS` in the offline environment.


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:400]


def _probe(args: dict) -> dict:
    opened: list[str] = []
    sys.addaudithook(lambda event, info: opened.append(os.fsdecode(info[0]))
                     if event == "open" and isinstance(info[0], (str, bytes, os.PathLike)) else None)

    import datasets
    import huggingface_hub
    import requests
    import torch
    from jinja2.exceptions import TemplateError
    from safetensors.torch import load_file
    from transformers.utils.hub import cached_file

    from yapo_bench.data.culture_convert import convert_paper
    from yapo_bench.models import load_model
    from yapo_bench.sae import check_sae_fits, load_sae, sae_layer
    from yapo_bench.steering import SteeringVector, steer

    report: dict = {"hub_cache": huggingface_hub.constants.HF_HUB_CACHE,
                    "datasets_cache": datasets.config.HF_DATASETS_CACHE, "models": {}, "saes": {}, "steering": {}}
    try:
        huggingface_hub.hf_hub_download(GEMMA2_ID, "a-file-never-written.json")
        report["stray_hub_call"] = "succeeded"
    except Exception as err:  # noqa: BLE001 - the point is that it raises; its type is checked by the test
        report["stray_hub_call"] = _error(err)
    try:
        requests.get("https://huggingface.co/api/models/google/gemma-2-2b-it", timeout=5)
        report["stray_http_call"] = "succeeded"
    except Exception as err:  # noqa: BLE001
        report["stray_http_call"] = _error(err)

    loaded = {}
    for hub_id in (GEMMA2_ID, GEMMA3_ID):
        model = loaded[hub_id] = load_model(hub_id)
        config = model.model.config
        snapshot = load_file(cached_file(hub_id, "model.safetensors"))
        state = model.model.state_dict()
        messages = [{"role": "user", "content": "What do we eat for breakfast?"}]
        try:
            model.tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *messages], tokenize=False)
            system_turn = "accepted"
        except TemplateError as err:
            system_turn = _error(err)
        report["models"][hub_id] = {
            "class": type(model.model).__name__, "model_type": config.model_type, "layers": config.num_hidden_layers,
            "tokenizer": type(model.tokenizer).__name__, "layer_types": sorted(set(config.layer_types)),
            "softcapping": [config.attn_logit_softcapping, config.final_logit_softcapping],
            "sliding_window": config.sliding_window, "system_turn": system_turn,
            "weights_match_snapshot": all(torch.equal(state[k], v) for k, v in snapshot.items()),
            "chat": model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        }

    live = args["live_latents"]
    for spec, hub_id, latents in ((SCOPE_SPEC, GEMMA2_ID, live[:4]), (SCOPE_2_SPEC, GEMMA3_ID, [0, 1, 2, 3])):
        sae = load_sae(spec)
        meta = sae.cfg.metadata
        report["saes"][spec] = {
            "class": type(sae).__name__, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "layer": sae_layer(sae),
            "hook_name": meta.hook_name, "hf_hook_name": getattr(meta, "hf_hook_name", None),
            "model_name": meta.model_name,
        }
        if spec == SCOPE_SPEC:
            w_enc = np.ascontiguousarray(sae.W_enc[:, live].numpy())
            report["saes"][spec]["w_enc_live_sha256"] = hashlib.sha256(w_enc.tobytes()).hexdigest()
        model = loaded[hub_id]
        check_sae_fits(sae, model.model)
        values = torch.zeros(sae.cfg.d_sae)
        values[latents] = 1.0
        vector = SteeringVector.sparse(values, layer=sae_layer(sae), sae=sae, model_id=model.model_id)
        prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": "Hello, how are you?"}],
                                                     tokenize=False, add_generation_prompt=True)
        inputs = model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            base = model.model(**inputs).logits
            with steer(model.model, vector, multiplier=0.0, sae=sae):
                unchanged = model.model(**inputs).logits
            with steer(model.model, vector, multiplier=8.0, sae=sae):
                steered = model.model(**inputs).logits
        report["steering"][spec] = {"fits": True, "identity_at_zero": bool(torch.equal(base, unchanged)),
                                    "max_logit_change": float((steered - base).abs().max())}
        del sae

    raw = datasets.load_dataset(DATASET_ID, split="train")
    items = convert_paper(DATASET_ID)
    pairs: dict[str, list] = {}
    for item in items:
        pairs.setdefault(item.question_id, []).append(item.localization)
    report["data"] = {
        "columns": raw.column_names, "train_items": len(items), "test_items": len(convert_paper(DATASET_ID, "test")),
        "countries": sorted({i.country for i in items}), "localizations": sorted({i.localization for i in items}),
        "pair_sizes": sorted({len(v) for v in pairs.values()}), "gold_options": sorted({i.gold_option for i in items}),
        "groups": {i.country: i.language_group for i in items},
    }
    hf_home = os.path.realpath(args["hf_home"])
    report["opened"] = {
        "temp_cache": sorted({p for p in opened if os.path.realpath(p).startswith(hf_home) or p.startswith(hf_home)}),
        "other_hf_caches": sorted({p for p in opened if any(p.startswith(c) for c in args["other_caches"])}),
    }
    return report


def _preset() -> dict:
    """The gemma3-270m preset's SAE as a run resolves it (`sae: null`), and what it said."""
    import contextlib
    import io

    from yapo_bench.sae import load_sae, sae_layer

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        sae = load_sae("gemma3-270m")
    return {"sae_id": sae.yapo_sae_id, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "layer": sae_layer(sae),
            "said": said.getvalue()}


def _control() -> dict:
    """The same loaders against an empty HF_HOME: each must fail."""
    from yapo_bench.data.culture_convert import convert_paper
    from yapo_bench.models import load_model
    from yapo_bench.sae import load_sae

    report = {}
    for key, call in (("model", lambda: load_model(GEMMA2_ID)), ("sae", lambda: load_sae(SCOPE_SPEC)),
                      ("sae_2", lambda: load_sae(SCOPE_2_SPEC)), ("data", lambda: convert_paper(DATASET_ID))):
        try:
            call()
            report[key] = "loaded"
        except Exception as err:  # noqa: BLE001 - recorded and checked by the test
            report[key] = _error(err)
    return report


if __name__ == "__main__":
    mode, payload = sys.argv[1], json.loads(sys.argv[2])
    result = {"probe": _probe, "preset": lambda _: _preset(), "control": lambda _: _control()}[mode](payload)
    print(json.dumps(result, default=str))


@pytest.mark.xdist_group("hub-cache")
def test_the_papers_run_config_runs_end_to_end_offline_through_the_hub_loaders(hub_cache: dict, tmp_path: Path) -> None:
    """`yapo-bench run configs/paper.yaml` with small overrides (two contexts, 2 steps, 2 items, a stub judge on
    127.0.0.1), in a fresh process under HF_HUB_OFFLINE=1 with HF_HOME at the stand-ins: gemma-2-2b-it, the L0-68
    Gemma Scope SAE and Deep-Culture-Lense come through from_pretrained, SAE.from_pretrained and load_dataset."""
    import yaml
    from conftest import StubJudge

    from yapo_bench.data.spec import data_dir

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "paper.yaml").read_text())
    judge = StubJudge()
    try:
        shared = data_dir()
    except ValueError:  # a machine without the public data: the culture part alone
        shared = None
    config.update(out=str(tmp_path / "paper"), countries=["usa", "egypt"], limit=2, max_gen_toks=8,
                  training={**config["training"], "steps": 2, "batch_size": 2, "warmup_steps": 1},
                  judge={"url": judge.url, "model": "stub-judge", "concurrency": 2}, device="cpu", dtype="float32",
                  behaviours=[],  # BiPO's data is not a hub path, and 65k-latent YaPO training on it is slow
                  mmlu=["mmlu_local_anatomy"] if shared else [],  # one subject: the path, not the numbers
                  # few-shot needs MMLU's dev examples; 1-shot takes the paper's 5-shot path with ~400-token prompts
                  # instead of ~1,000 (through a d_model-2304 stand-in, at every λ): 100 s instead of 165 s
                  num_fewshot=1 if shared else 0)
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(offline_env(Path(hub_cache["hf_home"])), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               YAPO_BENCH_CACHE=str(tmp_path / "cache"), HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY,
               NO_PROXY="127.0.0.1,localhost", http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY,
               no_proxy="127.0.0.1,localhost")
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "yapo-bench"), "run", str(tmp_path / "paper.yaml"),
                               "--no-progress"], env=env, capture_output=True, text=True, timeout=900)
    finally:
        judge.close()
    assert done.returncode == 0, done.stderr[-4000:]
    out = tmp_path / "paper"
    report = json.loads((out / "report.json").read_text())
    assert "google/gemma-2-2b-it" in json.dumps(report["provenance"])
    assert DATASET_ID in json.dumps(report["provenance"])
    assert {row["label"] for row in report["tables"]["table1_mcq"]} == {"base", "prompt", "caa", "sas", "bipo", "yapo"}
    assert all(run["rendering"].startswith("chat template") for run in report["runs"])  # the paper's setting
    yapo = json.loads(next((out / "vectors").glob("yapo-*/vector.json")).read_text())
    assert yapo["sae_id"] == SCOPE_SPEC and yapo["model_id"] == "google/gemma-2-2b-it" and yapo["layer"] == 15
    pairs = [json.loads(line) for line in next((out / "pairs").glob("usa-*.jsonl")).read_text().splitlines()]
    assert pairs and all(p["rejected_kind"] == "model" for p in pairs)  # the dataset's own rejected answers
    plan = json.loads((out / "plan.json").read_text())
    assert plan["config"]["sae"] == SCOPE_SPEC and plan["config"]["culture_data"] == DATASET_ID
    (judged,) = [json.loads(path.read_text())["result"] for path in (out / "steps" / "judge-base").glob("*.json")]
    assert judge.calls > 0 and judged["failed"] == 0 and judged["scored"] > 0
