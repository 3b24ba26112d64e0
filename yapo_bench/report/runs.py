"""Read lm-eval output directories (results_*.json, samples_*.jsonl) and our judge's verdicts into one
record per evaluation run, with the steering it ran under (method, λ, vector) read from the results' config."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yapo_bench.data.culture import LANGUAGE_OF
from yapo_bench.data.culture_sources import DEFAULT_CULTURE_DATA
from yapo_bench.families import Family, TaskId, get_family, registered

_RESULTS_FILE = re.compile(r"^results_(.+)\.json$")


class ReportError(ValueError):
    """Input that is not what the report needs; the message names the path or field."""


@dataclass
class EvalRun:
    """One lm-eval results file: its aggregate metrics, per-item samples and judge verdicts."""

    path: Path
    method: str
    multiplier: float
    model: str
    steering: dict[str, Any] | None
    vector: dict[str, Any] | None
    metrics: dict[str, dict[str, float]]  # task -> metric -> value ("acc", not "acc,none")
    stderrs: dict[str, dict[str, float]]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""
    versions: dict[str, Any] = field(default_factory=dict)  # what the evaluation ran under
    culture_data: str | None = None  # what its culture tasks read (None: no culture task)
    rendering: str = "plain text"  # how its prompts reached the model: plain text, or "chat template <sha>"
    seed: int | None = None  # the training seed of its vector, as its results record it (None: none recorded)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.metrics)


def culture_family(option: str) -> Family:
    """The culture family a report calls `option` (mcq, letter, boxed, open, or a registered one's)."""
    for family in registered("country"):
        if family.option == option:
            return family
    raise ReportError(f"family: {option!r}; expected one of {', '.join(f.option for f in registered('country'))}")


def culture_task(task: str) -> TaskId | None:
    """The id of a culture task (a family per country and localization), else None."""
    parsed = TaskId.parse(task)
    return parsed if parsed and get_family(parsed.family).unit_kind == "country" else None


def language_of(country: str) -> str:
    """The paper's language group of a context; `other` for a country of a user's own culture data."""
    return LANGUAGE_OF.get(country, "other")


def _parse_model_args(model_args: Any) -> dict[str, str]:
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    return dict(part.split("=", 1) for part in str(model_args or "").split(",") if "=" in part)


def _steering_of(config: dict[str, Any]) -> tuple[str, float, dict | None, dict | None]:
    """(method, multiplier, steering config, vector summary) of a results file's `config`."""
    steering, vector = config.get("yapo_steering"), config.get("yapo_vector")
    args = _parse_model_args(config.get("model_args"))
    if steering is None and config.get("model") != "yapo_steered":  # e.g. lm-eval's `hf`: unsteered
        return "base", 0.0, None, None
    multiplier = float(steering["multiplier"] if steering else args.get("multiplier", 1.0))
    prompted = bool((steering or {}).get("instruction") or args.get("prompt"))
    if vector:
        method = vector.get("method") or "vector"
    elif args.get("train"):
        method = args["train"].split(":", 1)[0] if ":" in args["train"] else args.get("method", "vector")
    elif args.get("vector"):
        method = "vector"
    else:
        method = "base"
    if method == "base" or multiplier == 0:  # no vector, or λ = 0: the unsteered (or only instructed) model
        return "prompt" if prompted else "base", 0.0, steering, vector
    return f"prompt+{method}" if prompted else method, multiplier, steering, vector


def _culture_data_of(data: dict[str, Any]) -> str | None:
    """The culture data a results file's culture tasks read, as the file records it: each task's `culture_data`
    (lm-eval merges `--metadata` / TaskManager(metadata=...) into every task's metadata; eval-only sets carry it in
    their dataset kwargs), else a run-level `culture_data` in the results config, else the tasks' default
    (culture-mini). None when the run has no culture task."""
    config = data.get("config") or {}
    run_level = config.get("culture_data") or (config.get("yapo_steering") or {}).get("culture_data")
    configs = data.get("configs") or {}
    names = set()
    for task in data["results"]:
        if not culture_task(task):
            continue
        task_config = configs.get(task) if isinstance(configs.get(task), dict) else {}
        metadata, kwargs = task_config.get("metadata") or {}, task_config.get("dataset_kwargs") or {}
        recorded = (metadata.get("culture_data") if isinstance(metadata, dict) else None) or kwargs.get("culture_data")
        names.add(str(recorded or run_level or DEFAULT_CULTURE_DATA))
    return ", ".join(sorted(names)) or None


def vector_dir(run: EvalRun) -> Path | None:
    """The directory of the run's steering vector, if it is still on disk: its recorded path as given, or
    relative to a folder above the results file (a run's paths are relative to where it was started)."""
    recorded = (run.vector or {}).get("path")
    if not recorded:
        return None
    candidates = [Path(recorded)] + [parent / recorded for parent in run.path.resolve().parents]
    return next((path for path in candidates if path.is_dir()), None)


def _read_samples(results_file: Path, timestamp: str) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_file.parent.glob(f"samples_*_{timestamp}.jsonl")):
        task = path.name[len("samples_"): -len(f"_{timestamp}.jsonl")]
        with path.open() as handle:
            samples[task] = [json.loads(line) for line in handle if line.strip()]
    return samples


def _read_verdicts(directory: Path) -> list[dict[str, Any]]:
    """Every verdict `yapo-bench judge` wrote under `directory` (judge/verdicts.jsonl, at any depth)."""
    verdicts = []
    for path in sorted(directory.rglob("verdicts.jsonl")):
        with path.open() as handle:
            verdicts.extend(json.loads(line) for line in handle if line.strip())
    return verdicts


def _verdicts_of(verdicts: list[dict[str, Any]], timestamp: str, only_run: bool) -> list[dict[str, Any]]:
    """The verdicts on this results file's samples: their `source` samples file carries its timestamp (a verdict
    without a source is kept only when the directory holds this run alone)."""
    suffix = f"_{timestamp}.jsonl"
    return [v for v in verdicts if str(v.get("source", "")).endswith(suffix) or (only_run and not v.get("source"))]


def load_run(results_file: Path, verdicts: list[dict[str, Any]] | None = None, only_run: bool = True) -> EvalRun:
    """One EvalRun from an lm-eval `results_<timestamp>.json`, with the samples beside it and those of
    `verdicts` (default: the ones under its directory) that judged its samples (`only_run`: the directory
    holds this run alone, so verdicts without a source are its own too)."""
    try:
        data = json.loads(results_file.read_text())
        results, config = data["results"], data.get("config", {})
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ReportError(f"run_dir: {results_file} is not an lm-eval results file ({err})") from None
    metrics: dict[str, dict[str, float]] = {}
    stderrs: dict[str, dict[str, float]] = {}
    for task, values in results.items():
        for key, value in values.items():
            name, _, _filter = key.partition(",")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not _filter:
                continue
            if name.endswith("_stderr"):
                stderrs.setdefault(task, {})[name[: -len("_stderr")]] = float(value)
            else:
                metrics.setdefault(task, {})[name] = float(value)
    method, multiplier, steering, vector = _steering_of(config)
    timestamp = _RESULTS_FILE.match(results_file.name)[1]
    args = _parse_model_args(config.get("model_args"))
    if verdicts is None:
        verdicts = _read_verdicts(results_file.parent)
    return EvalRun(path=results_file, method=method, multiplier=multiplier,
                   model=str(args.get("model") or args.get("pretrained") or config.get("model")),
                   steering=steering, vector=vector, metrics=metrics, stderrs=stderrs,
                   samples=_read_samples(results_file, timestamp),
                   verdicts=_verdicts_of(verdicts, timestamp, only_run), versions=_versions_of(data, config),
                   culture_data=_culture_data_of(data), rendering=_rendering_of(data, config),
                   seed=(vector or {}).get("seed") if multiplier else None)  # at λ 0 no vector acted


def _rendering_of(data: dict[str, Any], config: dict[str, Any]) -> str:
    """How a run's prompts reached the model, as yapo_steered recorded it, else as lm-eval's CLI records it."""
    recorded = config.get("yapo_rendering")
    sha = recorded.get("chat_template_sha") if recorded else data.get("chat_template_sha")
    return f"chat template {sha[:12]}" if sha else "plain text"


def check_rendering(runs: list[EvalRun]) -> None:
    """Refuse runs whose prompts were rendered differently (chat template or not): the template alone moves the
    base model's scores, so a prompted run beside a base or steered run rendered otherwise compares renderings."""
    renderings = {run.rendering: run for run in runs}
    if len(renderings) > 1:
        (first, a), (second, b) = list(renderings.items())[:2]
        raise ReportError(f"runs: {a.path} was rendered as {first} and {b.path} as {second}; a report compares runs "
                          "rendered alike (one chat_template setting for every run)")


def _versions_of(data: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The versions a results file records: yapo_steered's own record, else what lm-eval itself writes."""
    if config.get("yapo_versions"):
        return dict(config["yapo_versions"])
    return {name: data[key] for name, key in (("transformers", "transformers_version"), ("lm_eval", "lm_eval_version"))
            if data.get(key)}


def load_runs(paths: list[str | Path]) -> list[EvalRun]:
    """Every lm-eval results file under `paths` (directories searched recursively, or results files);
    `PATH=LABEL` names a run's column in the report instead of its method."""
    runs: list[EvalRun] = []
    for entry in paths:
        text, _, label = str(entry).partition("=") if "=" in str(entry) and not Path(str(entry)).exists() else (
            str(entry), "", "")
        path = Path(text)
        if not path.exists():
            raise ReportError(f"run_dir: {path} does not exist")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("results_*.json") if _RESULTS_FILE.match(p.name))
        if not files:
            raise ReportError(f"run_dir: {path} holds no lm-eval results (results_*.json); pass an lm_eval --output_path")
        verdicts = _read_verdicts(path if path.is_dir() else path.parent)  # `judge RUN_DIR` writes under RUN_DIR
        for file in files:
            run = load_run(file, verdicts, only_run=len(files) == 1)
            run.label = label
            runs.append(run)
    _label(runs)
    return runs


def load_evaluations(outputs: list[tuple[Path, Path | None]]) -> list[EvalRun]:
    """One run per lm-eval output directory holding one evaluation, with the verdicts of the judge file given for
    it (None: no verdicts), never whatever else lies under it: a run's report reads exactly what its plan names."""
    runs = []
    for directory, verdicts_file in outputs:
        files = sorted(p for p in directory.rglob("results_*.json") if _RESULTS_FILE.match(p.name))
        if len(files) != 1:
            raise ReportError(f"run_dir: {directory} holds {len(files)} lm-eval results files; expected one")
        verdicts = []
        if verdicts_file is not None:
            with verdicts_file.open() as handle:
                verdicts = [json.loads(line) for line in handle if line.strip()]
        runs.append(load_run(files[0], verdicts, only_run=True))
    _label(runs)
    return runs


def any_overlap(groups: Iterable[set[Any]]) -> bool:
    """Whether any two of the sets share an element (a method's λs scored on common tasks or items: a sweep)."""
    seen: set[Any] = set()
    for group in groups:
        if seen & group:
            return True
        seen |= group
    return False


def _label(runs: list[EvalRun]) -> None:
    """A column name per run: its method, with λ when the method ran at several multipliers on the same tasks (a
    sweep); one λ per country's vector (different λ on disjoint tasks) shares the method's column."""
    tasks_at: dict[str, dict[float, set[str]]] = {}
    for run in runs:
        tasks_at.setdefault(run.method, {}).setdefault(run.multiplier, set()).update(run.metrics)
    swept = {method for method, by_multiplier in tasks_at.items() if any_overlap(by_multiplier.values())}
    seeded = {method for method in tasks_at if len(seeds_of(runs, method)) > 1}
    for run in runs:
        if not run.label:
            several = run.method != "base" and run.method in swept
            run.label = f"{run.method}@{run.multiplier:g}" if several else run.method
            if run.method in seeded:  # one column per training seed
                run.label += f"-seed{run.seed}"
    claimed: dict[str, list[set[str]]] = {}  # the same config on other tasks (e.g. per country) shares a column;
    for run in runs:                          # on overlapping tasks, the runs are numbered apart
        groups = claimed.setdefault(run.label, [])
        index = next((i for i, tasks in enumerate(groups) if not tasks & set(run.metrics)), len(groups))
        if index == len(groups):
            groups.append(set())
        groups[index] |= set(run.metrics)
        if index:
            run.label = f"{run.label}#{index + 1}"


def seeds_of(runs: list[EvalRun], method: str) -> list[int | None]:
    """The training seeds of a method's runs, in order (None: a run that records none)."""
    return sorted({run.seed for run in runs if run.method == method}, key=lambda s: (s is None, s or 0))


def method_order() -> tuple[str, ...]:
    """The base, the prompting baseline, the registered methods in registry order (the paper's: CAA, SAS, BiPO,
    YaPO), then each with the prompt."""
    from yapo_bench.methods import run_method_names

    return run_method_names()


def method_rank(label: str) -> tuple[int, str, float, str]:
    """Sort key for run labels: the paper's method order, then λ numerically (so 2.5 comes before 10)."""
    name, _, rest = label.partition("#")[0].split("-seed")[0].partition("@")
    try:
        multiplier = float(rest) if rest else 0.0
    except ValueError:
        multiplier = 0.0
    order = method_order()
    rank = order.index(name) if name in order else len(order)
    return (rank, name, multiplier, label)
