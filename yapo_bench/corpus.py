"""Text corpora for collecting activations (SAE training and evaluation).

The built-in corpus `python-stdlib` is text that ships with every CPython 3.11 install (PSF licence): the
language reference topics (`pydoc_data.topics`), the standard library's docstrings, and a fixed sixth of
its source code in 40-line chunks (~0.95M tokens in all, about half prose). It is legal to use, needs no
download, contains none of the evaluation tasks' data, and anyone can regenerate the shipped SAE from it.
A fixed hash split holds out ~3% of its documents for evaluation.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

BUILTIN_CORPORA = ("python-stdlib",)
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "dist-packages"}


def _hash_mod(text: str, modulus: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % modulus


def _python_stdlib() -> list[str]:
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIP_DIRS & set(path.relative_to(stdlib).parts):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue  # a few stdlib files are deliberately invalid (encoding tests)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    texts.append(doc)
        lines = source.splitlines()
        for start in range(0, len(lines), 40):
            chunk = "\n".join(lines[start : start + 40]).strip()
            if len(chunk) >= 200 and _hash_mod(chunk, 6) == 0:
                texts.append(chunk)
    return texts


def _is_heldout(text: str) -> bool:
    return _hash_mod(text, 32) == 0


def _read_file(path: Path, column: str) -> list[str]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        missing = [i for i, row in enumerate(rows, 1) if not isinstance(row.get(column), str)]
        if missing:
            raise ValueError(f"corpus: {path} row {missing[0]} has no string field {column!r}")
        return [row[column] for row in rows]
    if path.suffix in {".txt", ".md"}:
        # Paragraphs separated by blank lines are the documents.
        return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    raise ValueError(f"corpus: {path} has suffix {path.suffix!r}; expected .txt, .md or .jsonl")


def load_corpus(source: str, split: str = "train", column: str = "text") -> list[str]:
    """Documents of a corpus.

    source: `python-stdlib` (built in, split by a fixed hash into train / heldout), a file or glob of
    .txt/.md/.jsonl files, or `hf:<datasets id>[:<split>]` (needs the hub). `split` applies to the
    built-in corpus; for files the whole set is returned.
    """
    if split not in {"train", "heldout"}:
        raise ValueError(f"split: {split!r}; expected 'train' or 'heldout'")
    if source == "python-stdlib":
        docs = _python_stdlib()
        return [d for d in docs if _is_heldout(d) == (split == "heldout")]
    if source.startswith("hf:"):
        import datasets

        name, _, hf_split = source[3:].partition(":")
        ds = datasets.load_dataset(name, split=hf_split or "train")
        if column not in ds.column_names:
            raise ValueError(f"corpus: dataset {name!r} has no column {column!r}; columns: {ds.column_names}")
        return list(ds[column])
    paths = sorted(Path(p) for p in glob.glob(source)) or ([Path(source)] if Path(source).exists() else [])
    if not paths:
        raise ValueError(
            f"corpus: {source!r} matches no file; expected one of {BUILTIN_CORPORA}, a .txt/.jsonl path or glob, "
            "or hf:<datasets id>"
        )
    texts: list[str] = []
    for path in paths:
        texts.extend(_read_file(path, column))
    return texts


# ----------------------------------------------------------------------------------------------------
# Documents as the model reads them: chat-rendered, cut into token windows, batched


def render_documents(tokenizer: object, texts: Sequence[str], chat_every: int = 0) -> list[str]:
    """Plain documents, with every `chat_every`-th one rendered as a chat turn (first line as the user's
    message, the rest as the assistant's answer) so the SAE also sees the chat template's tokens."""
    if not chat_every or getattr(tokenizer, "chat_template", None) is None:
        return list(texts)
    rendered = []
    for i, text in enumerate(texts):
        if i % chat_every:
            rendered.append(text)
            continue
        head, _, tail = text.partition("\n")
        messages = [{"role": "user", "content": head}, {"role": "assistant", "content": tail or head}]
        rendered.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return rendered


def token_windows(tokenizer: object, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """Each document's tokens cut into consecutive windows of at most `seq_len` (no text is lost to
    truncation; callers pass `pairs.length_limit(model, seq_len)`, so no window exceeds the model's positions);
    windows shorter than 8 tokens are dropped."""
    windows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        windows.extend(ids[i : i + seq_len] for i in range(0, len(ids), seq_len) if len(ids[i : i + seq_len]) >= 8)
    return windows


def window_batches(tokenizer: object, windows: Sequence[list[int]], batch_size: int) -> Iterator[dict]:
    """Right-padded batches of token windows with their attention masks."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(windows), batch_size):
        rows = windows[start : start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        yield {"input_ids": ids, "attention_mask": mask}
