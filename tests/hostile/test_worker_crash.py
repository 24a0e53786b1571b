"""A row that kills its worker process (as a segfault in a native decoder or model would) fails alone, as
`failed/stage_crashed`, and the rest of its part and the run go on; before, it stopped the whole run (and,
before that, Ray Data's infinite retries hung it at 75%). A stage that kills its process on every row, or a
model load that does, stops the run in one line instead of retrying forever. Tested on a task stage and on
a model (actor) stage. The crash is a real segmentation fault (ctypes reading address 0), as a bug in a
native decoder or model would cause."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.hostile.server import hostile_server  # noqa: F401 - a fixture

STAGE = '''
import ctypes
from typing import ClassVar
from curate.stage import Annotations, Stage

class CrashOn(Stage):
    """Test stage: the worker process dies on a caption containing WORD (every caption holds "c")."""
    name: ClassVar[str] = "crash_on"
    uses_model: ClassVar[bool] = USES_MODEL  # True: runs on an actor pool (a model stage), False: tasks
    def setup(self):
        if SETUP_DIES:
            ctypes.string_at(0)  # SIGSEGV
    def annotate(self, active):
        if any("WORD" in (t or "") for t in active.column("text").to_pylist()):
            ctypes.string_at(0)  # SIGSEGV
        return Annotations()
'''


def _run(tmp_path, ray_address, *, actor: bool, word: str = "poison", setup_dies: bool = False, ray_yaml: str = "",
         url: str = "http://127.0.0.1:9/x.jpg"):
    (tmp_path / "crashstage").mkdir()  # a package: the runner ships it to the session cluster's workers
    (tmp_path / "crashstage" / "__init__.py").write_text(
        STAGE.replace("USES_MODEL", str(actor)).replace("WORD", word).replace("SETUP_DIES", str(setup_dies)))
    rows = [{"url": f"{url}?{i}", "caption": "poison" if i in (35, 38) else f"c{i}"} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "urls.parquet")
    (tmp_path / "r.yaml").write_text(f"name: crash\noutput: {{samples_per_shard: 10}}\n{ray_yaml}stages:\n"
                                     "  - crashstage:CrashOn: {}\n  - download: {timeout_s: 1, retries: 0}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "RAY_ADDRESS": ray_address}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(tmp_path / "r.yaml"), "-i",
                           str(tmp_path / "urls.parquet"), "-o", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=400)
    return proc, time.time() - t0


@pytest.mark.parametrize("actor", [False, True], ids=["task", "actor"])
def test_a_row_that_kills_its_worker_fails_alone_and_the_run_goes_on(ray_address, tmp_path, actor, hostile_server):
    proc, _ = _run(tmp_path, ray_address, actor=actor, url=hostile_server.url("/ok.jpg"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # Ray's notice for each death and retry (several lines apiece) goes to the log at debug, not the terminal
    assert "A worker died" not in proc.stdout + proc.stderr and "retries remaining" not in proc.stdout + proc.stderr
    meta = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "meta").glob("*.parquet"))])
    rows = {r["row"]: r for r in meta.select(["row", "status", "stage", "reason", "error"]).to_pylist()}
    assert len(rows) == 40  # every input row accounted for, once
    for i in (35, 38):  # the two rows that kill the process, in the same part, each found alone
        assert (rows[i]["status"], rows[i]["stage"], rows[i]["reason"]) == ("failed", "crash_on", "stage_crashed")
        assert "worker process died" in rows[i]["error"]
    # every other row, including the poison rows' part-mates, went past the stage and is kept
    assert all(r["status"] == "ok" for i, r in rows.items() if i not in (35, 38)), \
        [r for i, r in rows.items() if i not in (35, 38) and r["status"] != "ok"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert not (tmp_path / "out" / "_work").exists()  # the crash markers went with the finished run's work folder
    if actor:
        return
    # --retry-failed puts the two crashed rows alone in a new part: they crash again and fail alone again;
    # the run stays complete (the evidence rule once stopped this retry and left the run 'running')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "RAY_ADDRESS": ray_address}
    retry = subprocess.run([sys.executable, "-m", "curate.cli", "run", "--retry-failed", str(tmp_path / "out")],
                           env=env, capture_output=True, text=True, timeout=400)
    assert retry.returncode in (0, 3), retry.stderr[-2000:]  # (3: every retried row failed again)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "complete"
    again = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "meta").glob("*.parquet"))])
    crashed = [r for r in again.select(["row", "reason"]).to_pylist() if r["reason"] == "stage_crashed"]
    assert sorted(r["row"] for r in crashed) == [35, 38]


@pytest.mark.parametrize("limit,why", [(48, r"on \d+ rows alone while 0 passed"), (3, r"3 times \(ray.max_part_crashes\)")])
def test_a_stage_that_kills_its_worker_on_every_row_stops_the_run_in_one_line(ray_address, tmp_path, limit, why):
    # word "" is in every caption: the stage dies on any batch. Rows dying alone with none passing, past
    # what isolating two rows costs (10-row parts: 9 deaths), is the stage's fault; max_part_crashes stops it too
    proc, took = _run(tmp_path, ray_address, actor=False, word="", ray_yaml=f"ray: {{max_part_crashes: {limit}}}\n")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage crash_on on part ") and re.search(f"the worker process died {why}", last), last
    assert "Traceback" not in proc.stderr and took < 300
    assert len(list((tmp_path / "out" / "meta").glob("part-*.parquet"))) == 0


def test_a_model_load_that_kills_its_worker_stops_the_run_in_one_line(ray_address, tmp_path):
    proc, took = _run(tmp_path, ray_address, actor=True, setup_dies=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "died while setting up (loading its model) 2 times" in last, last
    assert "Traceback" not in proc.stderr and took < 300


FILTER = '''
import ctypes
from typing import ClassVar
from curate.stage import Filter

class CrashFilter(Filter):
    """Test filter (model-free: the run goes in the CLI's own process): segfaults on a 'poison' caption."""
    name: ClassVar[str] = "crash_filter"
    def check(self, table):
        if any("poison" in (t or "") for t in table.column("text").to_pylist()):
            ctypes.string_at(0)  # SIGSEGV
        return [None] * table.num_rows
'''


def test_a_crash_in_a_run_without_ray_is_isolated_by_the_resume(tmp_path):
    """A run of filters only runs in the CLI's process: a segfault there kills the CLI itself, and its
    --resume died the same way every time. The resume now sees the marker the death left and runs through
    Ray, whose retries isolate the row."""
    (tmp_path / "crashfilter").mkdir()
    (tmp_path / "crashfilter" / "__init__.py").write_text(FILTER)
    rows = [{"url": f"http://127.0.0.1:9/{i}", "caption": "poison" if i == 7 else f"c{i}"} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "urls.parquet")
    (tmp_path / "r.yaml").write_text("name: f\noutput: {samples_per_shard: 10}\nstages:\n  - crashfilter:CrashFilter: {}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)  # no cluster named: the in-process path
    cmd = [sys.executable, "-m", "curate.cli", "run", str(tmp_path / "r.yaml"), "-i", str(tmp_path / "urls.parquet"),
           "-o", str(tmp_path / "out")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -11, first.stderr[-2000:]  # the CLI process itself died
    # (still no cluster named: the run itself chooses Ray, and starts a local one)
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "goes through Ray" in resumed.stderr
    meta = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "meta").glob("*.parquet"))])
    got = {r["row"]: (r["status"], r["reason"]) for r in meta.select(["row", "status", "reason"]).to_pylist()}
    assert len(got) == 30 and got[7] == ("failed", "stage_crashed")
    assert all(v == ("ok", None) for i, v in got.items() if i != 7)
