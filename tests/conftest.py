"""Tiny randomly initialised llama and gemma3 models and SAEs, plus the real packaged model (loaded once per
process), and how the suite runs under pytest-xdist (pytest.ini: `-n 2 --dist loadgroup`).

Under xdist each worker is one process on one core: it runs torch, MKL/OpenMP and the subprocesses it starts
(lm_eval, accelerate, yapo-bench run) single-threaded, so that two workers share two cores instead of fighting over
them. torch, transformers and sae-lens are imported lazily so that the xdist controller, which runs no test, does not
pay for them."""

from __future__ import annotations

import json
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker (xdist sets it before this file is imported)
    # before torch is imported, and inherited by the subprocesses the tests start
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    import torch

    torch.set_num_threads(1)  # in case a plugin imported torch before this file

HIDDEN = 32
D_SAE = 96
REAL_MODEL_GROUP = "real-model"  # the xdist group of every test that uses the `real_model` fixture


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (`-p no:xdist`, or a venv without it), accept pytest.ini's `-n`/`--dist` and run
    serially, as `-n 0` does."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist", "pytest-xdist is not loaded: -n and --dist are accepted and ignored")
        group._addoption("-n", "--numprocesses", dest="numprocesses", default=None, help="ignored without xdist")
        group.addoption("--dist", dest="dist", default="no", help="ignored without xdist")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses `real_model` joins one xdist group: the model is loaded by one worker only (once: the
    fixture is per session, i.e. per worker), and only one process writes its dequantised checkpoint into a cold
    $YAPO_BENCH_CACHE."""
    for item in items:
        if "real_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(REAL_MODEL_GROUP))


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(seed: int = 0) -> Gemma3ForCausalLM:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, sliding_window=16, pad_token_id=0,
    )
    return Gemma3ForCausalLM(config).eval()


def random_sae(kind: str = "jumprelu", d_in: int = HIDDEN, d_sae: int = D_SAE, seed: int = 0) -> torch.nn.Module:
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    if kind == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    elif kind == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    elif kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.copy_(torch.rand_like(param) * 0.3)
            else:
                param.copy_(torch.randn_like(param) * 0.3)
    sae.requires_grad_(False)
    return sae.eval()


@pytest.fixture(params=["llama", "gemma3"])
def tiny_model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_llama() if request.param == "llama" else tiny_gemma3()


@pytest.fixture(scope="session")
def real_model():
    """The packaged default model, loaded once per test session."""
    from yapo_bench.models import load_model

    return load_model("smollm2-135m")


def tiny_tokenizer():
    """A word-level tokenizer over a 128-entry vocabulary, built offline (ids match the tiny models)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(124)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny_texts(n: int = 12, seed: int = 0) -> list[str]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(0, 124, (int(length),), generator=gen))
            for length in torch.randint(10, 40, (n,), generator=gen)]


def tiny_run_config(tmp_path, **overrides):
    """A run config on a tiny llama saved under `tmp_path` (once): one country, the base, CAA and BiPO at two λ,
    culture MCQ, 2 items per task, 2 training steps; `overrides` replace any field."""
    from yapo_bench.pipeline import RunConfig

    model_dir = tmp_path / "model"
    if not model_dir.exists():
        tiny_llama().save_pretrained(model_dir)
        tiny_tokenizer().save_pretrained(model_dir)
    fields = {"name": "tiny", "out": str(tmp_path / "out"), "model": str(model_dir), "layer": 1,
              "countries": ["egypt"], "methods": ["base", "caa", "bipo"], "families": ["mcq"], "limit": 2,
              "training": {"steps": 2, "lr": 0.01}, "multipliers": {"bipo": [1.0, 2.0]}}
    return RunConfig(**{**fields, **overrides})


class StubJudge:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 that answers {"score": 7}, except for the next `fail`
    requests, which get a 400 (a non-retryable error: the request fails at once). `url` for the judge settings;
    `close()` stops it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.fail, self.calls, self.lock = 0, 0, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stub.lock:
                    stub.calls += 1
                    failing = stub.fail > 0
                    stub.fail -= failing
                if failing:
                    status, body = 400, {"error": {"message": "injected", "type": "invalid_request_error"}}
                else:
                    status, body = 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                             "role": "assistant", "content": '{"score": 7}'}}]}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
