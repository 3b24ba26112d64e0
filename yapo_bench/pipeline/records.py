"""The record of every finished step, `<out>/steps/<key>/<fingerprint>.json`, written atomically after the step's
output: its fingerprint, the inputs and upstream fingerprints it was made with, its result (where its output is)
and the versions of the software that made it. A step is done when the record of its current fingerprint exists and
its output is still there; records of other fingerprints stay, so reverting an edit finds the earlier outputs
again, and the latest record of a key says what changed since."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from yapo_bench.atomic import atomic_file
from yapo_bench.environment import versions
from yapo_bench.pipeline.plan import Plan, Step, changed_inputs

PATHS = ("output", "vector", "page")  # result fields that name files: recorded relative to the out directory, so a
# run read back from another working directory, or an out directory moved whole, still finds its outputs


class StepRecords:
    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / "steps"

    def _path(self, step: Step) -> Path:
        return self.root / step.key / f"{step.fingerprint}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        record["result"] = {k: str(self.out / v) if k in PATHS else v for k, v in record["result"].items()}
        return record

    def done(self, step: Step) -> dict[str, Any] | None:
        """The record of `step` at its fingerprint when its output is still on disk, else None."""
        record = self._read(self._path(step))
        if record is None or not Path(record["result"]["output"]).exists():
            return None
        return record

    def latest(self, key: str) -> dict[str, Any] | None:
        """The most recently finished record of a step key, whatever its fingerprint."""
        records = [r for path in (self.root / key).glob("*.json") if (r := self._read(path)) is not None]
        return max(records, key=lambda r: r["finished_ns"], default=None)

    def write(self, step: Step, plan: Plan, result: dict[str, Any], seconds: float) -> dict[str, Any]:
        relative = {k: os.path.relpath(v, self.out) if k in PATHS else v for k, v in result.items()}
        record = {**step.record(), "needs": {key: plan[key].fingerprint for key in step.needs}, "result": relative,
                  "versions": versions(), "seconds": round(seconds, 1), "finished_ns": time.time_ns(),
                  "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        with atomic_file(self._path(step)) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        return {**record, "result": result}

    def status(self, step: Step, plan: Plan) -> tuple[str, str]:
        """(done | to run | stale, why): a stale step ran before with other inputs, and `why` says what changed
        since: the settings that feed it, or the steps it reads."""
        if self.done(step) is not None:
            return "done", ""
        before = self.latest(step.key)
        if before is None:
            return "to run", ""
        changes = changed_inputs(before["inputs"], step.inputs)
        if not changes:
            changes = [f"{key} changed" for key in step.needs if before["needs"].get(key) != plan[key].fingerprint]
        return "stale", f"({'; '.join(changes) or 'its output is gone'})"
