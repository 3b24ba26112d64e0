"""Judge every open-ended sample of an lm-eval output directory; write verdicts and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

from yapo_bench.atomic import atomic_file, writing
from yapo_bench.judge.cache import AnswerCache
from yapo_bench.judge.client import JudgeClient, JudgeItem, Verdict, judge_items
from yapo_bench.judge.config import JudgeConfig
from yapo_bench.judge.samples import judge_fields, judgeable
from yapo_bench.locking import exclusive

# Doc keys worth carrying into each verdict (for localized/non-localized or per-country aggregation later).
_DOC_KEYS = ("item_id", "question_id", "country", "localization", "topic", "behaviour")


def default_cache_path() -> Path:
    """$YAPO_BENCH_CACHE/judge/answers.sqlite (default ~/.cache/yapo_bench): shared by all runs, keyed by content."""
    from yapo_bench.models import cache_dir

    return cache_dir() / "judge" / "answers.sqlite"


def judge_run(run_dir: str | Path, config: JudgeConfig, out_path: str | Path | None = None,
              cache_path: str | Path | None = None, similarity: bool = True, progress: bool = True,
              retry_unparsable: bool = False) -> dict[str, Any]:
    """Score every open-ended sample under `run_dir` (lm-eval --log_samples output) with the judge.

    Writes one JSON line per sample to `out_path` (default `<run_dir>/judge/verdicts.jsonl`; lines are appended
    and flushed to `<out>.partial` as verdicts arrive, and the sorted file replaces `<out>` at the end) and the
    summary to `summary.json` beside it. Means exclude error verdicts (unparsable answers) and failed requests;
    both are counted. Answers are cached in sqlite (`cache_path`, default `default_cache_path()`), committed one
    by one: a rerun, or a run after a kill, asks the server only for what it has not answered yet (and, with
    `retry_unparsable`, for what it answered unparsably). One process at a time writes a verdicts directory."""
    run_dir = Path(run_dir)
    pairs = judgeable(run_dir)
    if not pairs:
        raise ValueError(f"run_dir: {run_dir} has lm-eval samples but none of an open-ended task with a rubric "
                         "(culture_open_*, bipo_*_open)")
    out = Path(out_path) if out_path is not None else run_dir / "judge" / "verdicts.jsonl"
    items = []
    for sample, rubric in pairs:
        meta = {"task": sample.task, "doc_id": sample.doc_id, "source": _relative(sample.source, run_dir),
                "doc": {k: sample.doc[k] for k in _DOC_KEYS if k in sample.doc}}
        items.append(JudgeItem(rubric, judge_fields(sample, rubric), meta))
    similarities = _similarities(items) if similarity else [None] * len(items)
    for item, value in zip(items, similarities, strict=True):
        item.meta["reference_similarity"] = value

    judge_record = config.to_record()
    records: list[dict[str, Any]] = []
    partial = out.with_name(out.name + ".partial")
    client = JudgeClient(config)
    with exclusive(out.parent, "out"):
        try:
            with AnswerCache(cache_path or default_cache_path()) as cache, open(partial, "w", encoding="utf-8") as sink:
                for item, verdict in judge_items(items, config, cache, progress=progress, client=client,
                                                 retry_unparsable=retry_unparsable):
                    record = _record(item, verdict, judge_record)
                    records.append(record)
                    with writing(partial):
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                        sink.flush()
        finally:
            client.close()
        records.sort(key=lambda r: (r["task"], r["source"], r["doc_id"]))
        with atomic_file(out) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        partial.unlink(missing_ok=True)
        summary = summarise(records, judge_record)
        summary.update(run_dir=str(run_dir), verdicts=str(out), api_calls=client.api_calls)
        with atomic_file(out.with_name("summary.json")) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def summarise(records: list[dict[str, Any]], judge_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per task: n, scored, errors (unparsable), failed (transport), and means over scored verdicts only."""
    tasks: dict[str, dict[str, Any]] = {}
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        scored = [r for r in rows if r["score"] is not None]
        expected = [r["expected_score"] for r in scored if r["expected_score"] is not None]
        sims = [r["reference_similarity"] for r in rows if r["reference_similarity"] is not None]
        tasks[task] = {
            "rubric": rows[0]["rubric"], "n": len(rows), "scored": len(scored),
            "errors": sum(1 for r in rows if r["error"] is not None and not r["failed"]),
            "failed": sum(1 for r in rows if r["failed"]),
            "mean_score": fmean(r["score"] for r in scored) if scored else None,
            "mean_expected_score": fmean(expected) if expected else None,
            "mean_reference_similarity": fmean(sims) if sims else None,
        }
    return {
        "n": len(records), "scored": sum(t["scored"] for t in tasks.values()),
        "errors": sum(t["errors"] for t in tasks.values()), "failed": sum(t["failed"] for t in tasks.values()),
        "cache_hits": sum(1 for r in records if r["cached"]), "tasks": tasks, "judge": judge_record,
    }


def _record(item: JudgeItem, verdict: Verdict, judge_record: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: item.meta[k] for k in ("task", "doc_id", "source")},
        "rubric": item.rubric.name, "score": verdict.score, "expected_score": verdict.expected_score,
        "error": verdict.error, "failed": verdict.failed, "cached": verdict.cached,
        "reference_similarity": item.meta.get("reference_similarity"), "doc": item.meta["doc"],
        "raw": verdict.raw, "prompt_sha256": verdict.prompt_sha256, "judge": judge_record,
    }


def _similarities(items: list[JudgeItem]) -> list[float | None]:
    """Response vs the rubric's reference (expected answer; BiPO's matching answer); None where there is none."""
    indices = [i for i, item in enumerate(items)
               if item.rubric.reference_field and str(item.fields.get(item.rubric.reference_field) or "").strip()]
    values: list[float | None] = [None] * len(items)
    if indices:
        from yapo_bench.judge.similarity import reference_similarity

        sims = reference_similarity([str(items[i].fields["response"]) for i in indices],
                                    [str(items[i].fields[items[i].rubric.reference_field]) for i in indices])
        for i, value in zip(indices, sims, strict=True):
            values[i] = value
    return values


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
