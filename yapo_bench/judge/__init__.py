"""The LLM judge: rubrics, an OpenAI-compatible client with retries and a sqlite cache, a local llama.cpp server,
and reference similarity. See `judge_run` for scoring an lm-eval output directory."""

from yapo_bench.judge.config import JudgeConfig
from yapo_bench.judge.rubrics import RUBRICS, Rubric, get_rubric, rubric_for_task

__all__ = ["RUBRICS", "JudgeConfig", "Rubric", "get_rubric", "judge_run", "local_server", "reference_similarity",
           "rubric_for_task"]


def __getattr__(name: str):  # heavy parts (openai, torch, xllamacpp) load only when used
    if name == "judge_run":
        from yapo_bench.judge.run import judge_run

        return judge_run
    if name == "local_server":
        from yapo_bench.judge.server import local_server

        return local_server
    if name == "reference_similarity":
        from yapo_bench.judge.similarity import reference_similarity

        return reference_similarity
    raise AttributeError(name)
