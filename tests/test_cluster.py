"""`yapo-bench run --executor ray` on a local Ray cluster of 2 workers (one thread each): the same report as the local
executor, value by value; a worker killed mid-step (retried, or with retries off failed by name and resumed); the
out directory checked on every node; Ctrl-C; the cost plan's wall time on N workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import StubJudge, tiny_run_config

from yapo_bench.pipeline import StepIncomplete, make_plan, run
from yapo_bench.pipeline.cluster import ClusterSettings
from yapo_bench.pipeline.records import StepRecords

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one Ray cluster at a time on the machine's cores

WORKERS = ClusterSettings(workers=2, threads=1)
TRAIN = "train-bipo-culture-egypt"


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module's runs (each run starts and stops its own workers on it)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def judge():
    stub = StubJudge()
    yield stub
    stub.close()


def config_for(root: Path, out: str, judge: StubJudge, **overrides):
    """The tiny run with culture MCQ and open-ended questions judged by a real HTTP server: training, evaluation
    and judge steps, and a report."""
    return tiny_run_config(root, out=str(root / out), families=["mcq", "open"], max_gen_toks=4,
                           judge={"url": judge.url, "model": "stub", "concurrency": 2}, **overrides)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, judge: StubJudge) -> Path:
    """The reference: the same run by the local executor, on one thread like each worker."""
    import torch

    root = tmp_path_factory.mktemp("cluster")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(config_for(root, "local", judge), progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def numbers(out: Path) -> dict:
    """report.json with what names this run rather than its results left out: the out directory, lm-eval's
    timestamped file names, when each step finished and how long it took."""
    text = (out / "report.json").read_text().replace(str(out), "<out>")
    text = re.sub(r"results_[0-9T:.\-]+\.json", "results_<time>.json", text)
    report = json.loads(text)
    for step in report["steps"]:
        del step["finished"], step["seconds"]
    return report


def test_two_workers_give_exactly_the_local_executors_report(cluster, local_run: Path, judge: StubJudge) -> None:
    config = config_for(local_run, "ray", judge)
    done = run(config, progress=False, cluster=WORKERS)
    plan = make_plan(config)
    assert sorted(step.key for step in done) == sorted(step.key for step in plan)
    assert any(key.startswith("judge-") for key in (s.key for s in plan))
    assert numbers(local_run / "ray") == numbers(local_run / "local")
    logs = {path.stem: path.read_text() for path in (local_run / "ray" / "logs").glob("*.log")}
    assert set(logs) == {step.key for step in plan if step.kind != "report"}  # one log a step
    workers = {re.search(r"on (w\d)", text).group(1) for key, text in logs.items() if not key.startswith("judge")}
    assert workers == {"w0", "w1"}  # both took steps
    # each worker loaded the model once, on its first step, and reused it: one process per worker name
    pids = {name: {re.search(r"pid (\d+)", text).group(1) for text in logs.values() if f"on {name}," in text}
            for name in workers}
    assert all(len(found) == 1 for found in pids.values()), pids
    assert run(config, progress=False, cluster=WORKERS) == []  # everything done: nothing reruns, under either
    assert run(config, progress=False) == []


def kill_when_started(out: Path, key: str, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the worker process running `key` as soon as the step's log names it."""
    log = out / "logs" / f"{key}.log"

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = re.search(r"pid (\d+)", log.read_text()) if log.exists() else None
            if found:
                killed.append(int(found.group(1)))
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_step_is_retried_and_the_numbers_are_the_same(cluster, local_run: Path,
                                                                           judge: StubJudge) -> None:
    config = config_for(local_run, "retried", judge)
    killed: list[int] = []
    watcher = kill_when_started(Path(config.out), TRAIN, killed)
    run(config, progress=False, cluster=WORKERS)
    watcher.join()
    attempts = re.findall(r"^== .* pid (\d+)", (Path(config.out) / "logs" / f"{TRAIN}.log").read_text(), re.M)
    assert len(attempts) == 2 and int(attempts[0]) == killed[0] != int(attempts[1])  # a new process retried it
    assert numbers(Path(config.out)) == numbers(local_run / "local")


def test_with_retries_off_the_run_fails_naming_the_step_and_a_rerun_redoes_nothing_finished(
        cluster, local_run: Path, judge: StubJudge) -> None:
    config = config_for(local_run, "failed", judge)
    out = Path(config.out)
    killed: list[int] = []
    watcher = kill_when_started(out, TRAIN, killed)
    with pytest.raises(StepIncomplete) as failed:
        run(config, progress=False, cluster=ClusterSettings(workers=2, threads=1, retries=0))
    watcher.join()
    reasons = re.search(r"is incomplete \((.*)\); no report", str(failed.value)).group(1).split("; ")
    assert reasons[0].startswith(f"{TRAIN} failed: its worker died (0 retries)")
    assert {reason.split()[0] for reason in reasons[1:]} == {  # and what depends on it, nothing else
        "eval-bipo-culture-egypt-x1", "eval-bipo-culture-egypt-x2", "judge-bipo-culture-egypt-x1",
        "judge-bipo-culture-egypt-x2"}
    assert killed and not (out / "report.json").exists()
    records = StepRecords(out)
    plan = make_plan(config)
    kept = {step.key: records.done(step) for step in plan if records.done(step) is not None}
    assert TRAIN not in kept and "eval-base" in kept and "train-caa-culture-egypt" in kept
    rerun = [step.key for step in run(config, progress=False)]  # the local executor takes over
    assert set(rerun) == {step.key for step in plan} - set(kept)
    assert all(records.done(plan[key])["finished_ns"] == record["finished_ns"] for key, record in kept.items())
    assert numbers(out) == numbers(local_run / "local")


def test_ctrl_c_stops_the_run_and_its_workers(tmp_path: Path) -> None:
    import yaml

    config = tiny_run_config(tmp_path, training={"steps": 400, "lr": 0.01})
    fields = {k: v for k, v in vars(config).items() if k != "countries_checked"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**fields, "training": vars(config.training)}))
    process = subprocess.Popen([sys.executable, "-m", "yapo_bench.cli", "run", str(tmp_path / "run.yaml"),
                                "--executor", "ray", "--workers", "2", "--no-progress"],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               # as from a terminal: an xdist worker ignores SIGINT, and a child inherits that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, deadline = Path(config.out) / "logs" / f"{TRAIN}.log", time.monotonic() + 300
    while not (log.exists() and "pid" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(re.search(r"pid (\d+)", log.read_text()).group(1))
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted; finished steps are kept" in err
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()  # the worker is gone with the run
    assert StepRecords(Path(config.out)).latest(TRAIN) is None  # the interrupted step is not recorded as done


def test_settings_are_checked_and_the_out_directory_must_be_visible(tmp_path: Path) -> None:
    for bad, message in ((dict(workers=0), "workers: 0; expected an integer >= 1"),
                         (dict(threads=True), "threads: True"), (dict(retries=-1), "retries: -1")):
        with pytest.raises(ValueError, match=re.escape(message)):
            ClusterSettings(**bad)
    from yapo_bench.pipeline.cluster import sees

    (tmp_path / ".workers").mkdir()
    (tmp_path / ".workers" / "token").write_text("token")
    assert sees(str(tmp_path), "token") is None
    assert "No such file" in sees(str(tmp_path / "elsewhere"), "token")


def test_the_command_line_refuses_cluster_flags_without_the_cluster_and_dry_runs_on_n_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from yapo_bench.cli import main

    config = str(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert main(["run", config, "--dry-run", "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "yapo-bench: error: --workers: only with --executor ray"
    assert main(["run", config, "--dry-run", "--executor", "ray", "--retries", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "yapo-bench: error: retries: -1; expected an integer >= 0"
    out = tmp_path / "demo"
    assert main(["run", config, "--dry-run", "--executor", "ray", "--workers", "3", "--out", str(out)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"on 3 workers: \d+ (s|min|h) on cpu .* each \(critical path \d+ (s|min|h)\), .*", last), last
    assert not out.exists()  # a dry run starts no cluster and writes nothing


def test_the_cost_plan_estimates_the_wall_time_on_n_workers() -> None:
    from yapo_bench.pipeline import RunConfig
    from yapo_bench.pipeline.costs import parallel_seconds, plan_costs

    def walls(judge: dict | None, workers: int, done: list[bool] | None = None) -> tuple[float, float, float]:
        config = RunConfig(name="p", out="x", countries=["egypt", "nepal"], methods=["base", "caa", "yapo"],
                           judge=judge, families=["mcq", "open"] if judge else ["mcq"])
        plan = make_plan(config)
        costs = plan_costs(plan, None, 4096)[0]["cpu"]
        return (*parallel_seconds(plan, costs, done or [False] * len(costs), workers), sum(e.seconds for e in costs))

    one, path, serial = walls(None, 1)
    two, same_path, _ = walls(None, 2)
    many, _, _ = walls(None, 100)
    assert one == pytest.approx(serial) and path == same_path  # one worker: the serial time
    assert path < two < one and many == pytest.approx(path)  # enough workers: the critical path
    # judge steps run beside the workers, one at a time on the judge server: never longer than serial, never
    # shorter than the critical path
    one, path, serial = walls({"local": True}, 1)
    many, _, _ = walls({"local": True}, 100)
    assert path <= many < one < serial
    # finished steps cost nothing: with everything but the base evaluation (and the report) done, it is all left
    plan = make_plan(RunConfig(name="p", out="x", countries=["egypt", "nepal"], methods=["base", "caa", "yapo"]))
    left = [step.key in ("eval-base", "report") for step in plan]
    wall, path, _ = walls(None, 2, [not x for x in left])
    costs = plan_costs(plan, None, 4096)[0]["cpu"]
    assert wall == path == costs[[s.key for s in plan].index("eval-base")].seconds > 0


def test_a_node_that_cannot_see_the_out_directory_is_refused_before_any_step(cluster, tmp_path: Path) -> None:
    """A second node joins the cluster from a private mount namespace in which the out directory's parent is an
    empty tmpfs: on that node the out directory does not exist, as on a node without the shared filesystem."""
    hidden = tmp_path / "not-shared"
    hidden.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here (no mount namespaces for a node that cannot see the out dir)")
    ray_cli = Path(sys.executable).parent / "ray"
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs none {hidden} && exec {ray_cli} start --block --num-cpus=1 "
                             f"--address={ray.get_runtime_context().gcs_address}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive() -> int:
        return sum(n["Alive"] for n in ray.nodes())

    try:
        deadline = time.monotonic() + 120
        while alive() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive() == 2, "the second node did not join"
        config = tiny_run_config(tmp_path, out=str(hidden / "out"))
        with pytest.raises(ValueError, match=rf"^out: {re.escape(str(hidden / 'out'))} is not visible from the "
                                             r"cluster's node .* No such file or directory .*a shared filesystem"):
            run(config, progress=False, cluster=WORKERS)
        assert not (hidden / "out" / "steps").exists()  # refused before any step ran
    finally:
        node.terminate()
        node.wait(timeout=60)
        deadline = time.monotonic() + 60
        while alive() > 1 and time.monotonic() < deadline:  # the cluster of the next tests has one node again
            time.sleep(0.2)
        joined = Path("/tmp/ray/ray_current_cluster")  # `ray start` names the cluster it joined there for later
        if joined.exists() and joined.read_text().strip() == ray.get_runtime_context().gcs_address:
            joined.unlink()
