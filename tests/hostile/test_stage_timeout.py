"""A row that makes a stage call hang (a plugin that sleeps or loops on one input, as a C library stuck on
one image would) fails alone, as `failed/stage_timeout`, and the rest of its part and the run go on; before,
nothing bounded a stage call and the whole run hung. Through Ray on a task stage and on a model (actor)
stage, and in a run without Ray (the CLI's own process), with short bounds (`call_timeout_s`,
`row_timeout_s`). The units without Ray are in test_stage_timeout_units.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

STAGE = '''
import time
from typing import ClassVar
from curate.stage import Annotations, Filter, Stage

class HangOn(Stage):
    """Test stage: a call holding the caption "hang" never returns (it sleeps, blocked outside Python)."""
    name: ClassVar[str] = "hang_on"
    uses_model: ClassVar[bool] = USES_MODEL  # True: runs on an actor pool (a model stage), False: tasks
    def annotate(self, active):
        if "hang" in active.column("text").to_pylist():
            time.sleep(10_000)
        return Annotations()

class SpinOn(Filter):
    """Test filter (model-free: a small run goes in the CLI's own process): loops forever on "hang"."""
    name: ClassVar[str] = "spin_on"
    def check(self, table):
        while "hang" in table.column("text").to_pylist():
            pass
        return [None] * table.num_rows
'''
HANG = 5  # the row whose caption is "hang"
BOUNDS = "{call_timeout_s: 2, row_timeout_s: 0.1}"  # a call on 4 rows (a part) or fewer: 2 s


def _run(tmp_path, *, actor: bool = False, stage: str = "HangOn", bounds: str, ray_address: str | None,
         extra: tuple[str, ...] = ()):
    pkg = tmp_path / "hangstage"
    if not pkg.exists():
        pkg.mkdir()  # a package: the runner ships it to the session cluster's workers
        (pkg / "__init__.py").write_text(STAGE.replace("USES_MODEL", str(actor)))
        rows = [{"url": f"http://127.0.0.1:9/{i}", "caption": "hang" if i == HANG else f"c{i}"} for i in range(12)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "urls.parquet")
        (tmp_path / "r.yaml").write_text("name: hang\noutput: {samples_per_shard: 4}\nstages:\n"
                                         f"  - hangstage:{stage}: {bounds}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(tmp_path / "r.yaml"), "-i",
                           str(tmp_path / "urls.parquet"), "-o", str(tmp_path / "out"), *extra],
                          env=env, capture_output=True, text=True, timeout=240)
    return proc, time.time() - t0


def _outcomes(tmp_path) -> dict[int, dict]:
    meta = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "meta").glob("*.parquet"))])
    return {r["row"]: r for r in meta.select(["row", "status", "stage", "reason", "error"]).to_pylist()}


def _check_isolated(tmp_path, stage: str) -> None:
    rows = _outcomes(tmp_path)
    assert len(rows) == 12  # every input row accounted for, once
    hang = rows[HANG]
    assert (hang["status"], hang["stage"], hang["reason"]) == ("failed", stage, "stage_timeout"), hang
    assert f"stage {stage} on part 1" in hang["error"] and "time bound of 2 s" in hang["error"], hang["error"]
    assert all(r["status"] == "ok" for i, r in rows.items() if i != HANG), rows  # its part-mates too
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("actor", [False, True], ids=["task", "actor"])
def test_a_row_that_hangs_its_stage_fails_alone_and_the_run_goes_on(ray_address, tmp_path, actor):
    # the task stage sets its own bounds; the actor stage takes the recipe's ray section's
    bounds = "{}" if actor else BOUNDS
    extra = ("--set", "ray.call_timeout_s=2", "--set", "ray.row_timeout_s=0.1") if actor else ()
    proc, took = _run(tmp_path, actor=actor, bounds=bounds, ray_address=ray_address, extra=extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    _check_isolated(tmp_path, "hang_on")
    # a part of 4 rows: its calls on 4, 2 and 1 rows timed out (3 x 2 s, plus a worker start each)
    assert took < 90, took
    if actor:
        return  # (validate and resume below see the same run directory either way)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    check = subprocess.run([sys.executable, "-m", "curate.cli", "validate", str(tmp_path / "out")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    resumed, _ = _run(tmp_path, actor=actor, bounds=bounds, ray_address=ray_address, extra=(*extra, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _outcomes(tmp_path)[HANG]["reason"] == "stage_timeout"


def test_a_filter_that_loops_forever_in_a_run_without_ray_fails_its_row_alone(tmp_path):
    """The CLI's own process cannot be ended; a Python loop there is interrupted instead (StageTimedOut)."""
    proc, took = _run(tmp_path, stage="SpinOn", bounds=BOUNDS, ray_address=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and took < 60, took
    _check_isolated(tmp_path, "spin_on")
