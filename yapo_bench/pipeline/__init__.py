"""`yapo-bench run CONFIG`: the paper's study on any model from one YAML file, split by job —
`config` (the run config, checked), `plan` (typed steps with fingerprints of their inputs), `steps` (one executor
per step kind), `resources` (the model and SAEs the steps share), `records` (what finished, with what),
`lifecycle` (what every executor does around a step), `executor` (carries a plan out in this process, or hands it to
`cluster`: the steps as Ray tasks on a cluster's workers). `costs` estimates a plan's time and memory per device,
serially and on N workers."""

from yapo_bench.pipeline.config import JudgeSpec, RunConfig
from yapo_bench.pipeline.executor import run
from yapo_bench.pipeline.plan import Plan, Step, Unit, make_plan
from yapo_bench.pipeline.steps import StepIncomplete

__all__ = ["JudgeSpec", "Plan", "RunConfig", "Step", "StepIncomplete", "Unit", "make_plan", "run"]
