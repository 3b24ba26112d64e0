"""Data parallelism as far as a 2-core CPU machine allows: 2 processes started by the real `accelerate launch`
(torchrun underneath, gloo between the ranks) on tiny random models.
- Data-parallel BiPO/YaPO training ends with the vector that one process gets on the same batches, on every
  rank, and only rank 0 writes the run directory.
- `accelerate launch -m lm_eval --model yapo_steered` splits the requests between the ranks and reports what
  one process reports.

Run as a script (what `accelerate launch` starts in the training test), this file is the training worker:
`test_distributed.py OUT_DIR` trains BiPO and YaPO into OUT_DIR/<method> and saves each rank's vectors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_sae
from test_lm_eval_model import model_dir  # noqa: F401 - the tiny model saved once, a fixture
from test_training import PAIRS, _loaded, _spec

from yapo_bench.distributed import DataParallel, data_parallel
from yapo_bench.methods import get_method
from yapo_bench.methods.preference import train_preference_vector
from yapo_bench.steering import SteeringVector

pytestmark = pytest.mark.xdist_group("distributed")  # 2 ranks each: one such test at a time (pytest.ini)

# batch 3 over 2 ranks: shares of 1 and 2 pairs; one d per pair; held-out evaluation and checkpoints on the way
TRAINING = {"steps": 6, "batch_size": 3, "direction_mode": "example", "eval_every": 3, "checkpoint_every": 2}
STOP_AT = 3  # the data-parallel YaPO run stops here and resumes from its checkpoint
RUN_FILES = ["checkpoint.pt", "train_log.jsonl", "vector.json", "vector.safetensors"]


def _train(out: Path, stop_and_resume: bool) -> dict[str, torch.Tensor]:
    """BiPO straight through, then YaPO, optionally stopped at STOP_AT and resumed (on every rank the
    resumed run must start from rank 0's checkpoint)."""
    sae = random_sae()
    bipo = get_method("bipo").fit(_loaded(), PAIRS, _spec(**TRAINING, run_dir=str(out / "bipo")))
    if stop_and_resume:
        stopped = train_preference_vector(_loaded(), PAIRS, _spec(**TRAINING, run_dir=str(out / "yapo")), sae, "yapo",
                                          on_step=lambda record: record["step"] == STOP_AT)
        assert stopped.provenance["steps_run"] == STOP_AT
    yapo = get_method("yapo").fit(_loaded(), PAIRS, _spec(**TRAINING, run_dir=str(out / "yapo"),
                                                          resume=stop_and_resume), sae=sae)
    return {"bipo": bipo.values, "yapo": yapo.values}


def _accelerate_launch(*args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` with 2 processes on this machine's CPU. `--multi_gpu` is the launcher that starts
    several local processes (torchrun); with CUDA hidden they run on the CPU over gloo (`--cpu` starts one process
    unless given an MPI hostfile). Hidden on a GPU machine too: with one GPU both ranks would share it (NCCL
    refuses that), and the comparisons below are with one process on the CPU in fp32."""
    with socket.socket() as probe:  # a free port, so parallel runs do not collide on accelerate's default
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *args]
    launched = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert launched.returncode == 0, launched.stderr[-3000:]
    return launched


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_shards_cover_a_batch_once_and_a_lone_process_is_rank_0_of_1() -> None:
    for size in range(7):
        parts = [list(range(size))[DataParallel(rank, 3).shard(size)] for rank in range(3)]
        assert [i for part in parts for i in part] == list(range(size))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert data_parallel() == DataParallel(0, 1) and not data_parallel().active


def test_data_parallel_training_equals_one_process(tmp_path: Path) -> None:
    _accelerate_launch(__file__, str(tmp_path / "parallel"))
    one_process = _train(tmp_path / "one", stop_and_resume=False)
    ranks = [torch.load(tmp_path / "parallel" / f"rank{rank}.pt") for rank in (0, 1)]
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == ["bipo", "rank0.pt", "rank1.pt", "yapo"]
    for method in ("bipo", "yapo"):
        assert torch.equal(ranks[0][method], ranks[1][method])  # the same v on every rank
        assert ranks[0][method].abs().sum() > 0
        # the same maths as one process, up to float summation order (shares of 1 and 2 pairs, then a sum)
        torch.testing.assert_close(ranks[0][method], one_process[method], rtol=1e-5, atol=1e-7)
        run_dir = tmp_path / "parallel" / method
        assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES  # rank 0's files, no temporaries
        assert torch.equal(SteeringVector.load(run_dir).values, ranks[0][method])
        parallel, single = _records(run_dir), _records(tmp_path / "one" / method)
        # one log, every step once (rank 0 writes), with the whole batch's loss and stats
        assert [(r["step"], r["kind"]) for r in parallel] == [(r["step"], r["kind"]) for r in single]
        for mine, theirs in zip(parallel, single):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert mine[key] == (pytest.approx(value, rel=1e-4, abs=1e-6) if isinstance(value, float) else value)


def test_lm_eval_splits_requests_between_ranks(model_dir: Path, tmp_path: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same merged results and per-item log-likelihoods as one process, with each rank given its share.
    The vector comes from train=: rank 0 trains it alone while rank 1 waits, then rank 1 reuses it."""
    from yapo_bench.cli import main

    monkeypatch.setenv("YAPO_BENCH_CACHE", str(tmp_path / "cache"))  # read by both launched ranks too
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"w{i}", "chosen": f"w{i + 1}", "rejected": f"w{i + 2}"}) + "\n"
                             for i in range(6)))
    args = ["--model_args", f"model={model_dir},train=bipo:{pairs},layer=1,steps=3,lr=0.5,multiplier=2", "--tasks",
            "culture_mcq_usa_both", "--limit", "5", "--log_samples"]
    launched = _accelerate_launch("-m", "lm_eval", "--model", "yapo_steered", *args,
                                  "--output_path", str(tmp_path / "parallel"))
    assert "culture_mcq_usa_both on rank 1" in launched.stderr  # rank 1 built its own share of requests
    (trained,) = (tmp_path / "cache" / "vectors").iterdir()  # trained once, by rank 0
    assert SteeringVector.load(trained).norm > 0
    # reuses that vector; on the CPU as the ranks were (auto would be bf16 on a GPU)
    assert main(["eval", *args, "--device", "cpu", "--output_path", str(tmp_path / "one")]) == 0

    def outputs(root: Path) -> tuple[dict, list[dict]]:
        (results,) = root.rglob("results_*.json")  # exactly one results file: rank 0 alone writes
        (samples,) = root.rglob("samples_*.jsonl")
        rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
        return json.loads(results.read_text())["results"]["culture_mcq_usa_both"], rows

    (parallel, parallel_rows), (single, single_rows) = outputs(tmp_path / "parallel"), outputs(tmp_path / "one")
    assert len(parallel_rows) == len(single_rows) == 5
    for metric in ("acc,none", "acc_norm,none", "p_gold,none", "p_gold_norm,none"):
        assert parallel[metric] == pytest.approx(single[metric], abs=1e-6)
    for mine, theirs in zip(parallel_rows, single_rows):
        assert mine["doc_id"] == theirs["doc_id"]
        assert [float(r[0][0]) for r in mine["resps"]] == pytest.approx([float(r[0][0]) for r in theirs["resps"]],
                                                                        abs=1e-5)


if __name__ == "__main__":
    group = data_parallel()
    assert group.world_size == 2, group
    vectors = _train(Path(sys.argv[1]), stop_and_resume=True)
    torch.save(vectors, Path(sys.argv[1]) / f"rank{group.rank}.pt")
