"""Reports: lm-eval run directories (and our judge's verdicts) → the paper's tables and better ones."""

from yapo_bench.report.render import build_report, write_report
from yapo_bench.report.runs import EvalRun, ReportError, load_runs

__all__ = ["EvalRun", "ReportError", "build_report", "load_runs", "write_report"]
