"""curate.crash_isolation's time bound without Ray: a stage call past its bound ends its process after
turning its range marker into a timeout marker, and the next try (a fresh process, as Ray retries the part)
splits that range down to the row, which fails alone as `stage_timeout`. In the run's own process (no Ray)
a call blocked outside Python cannot be interrupted: the process ends with one line and leaves the marker
that sends the --resume through Ray. (End-to-end runs: test_stage_timeout.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from curate.runner import _drop_time_bounds

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from typing import ClassVar
    import pyarrow as pa
    from curate import crash_isolation, schema
    from curate.crash_isolation import CallBound, CrashWatch, watching
    from curate.stage import Annotations, Stage

    class Hang(Stage):
        name: ClassVar[str] = "test_hang"
        def annotate(self, active):
            if "hang" in active.column("text").to_pylist():
                time.sleep(10_000)  # blocked outside Python code
            return Annotations()

    texts = ["a", "b", "c", "d", "e", "hang", "f", "g"]
    t = pa.table({"uid": [f"u{i}" for i in range(8)], "text": texts})
    t = schema.conform(t, schema.run_schema({}))
    t = t.set_column(t.column_names.index("status"), "status", pa.array([schema.OK] * 8, pa.string()))
    crash_isolation.DRIVER_GRACE_S = 0.2
    watch = CrashWatch(Path(FOLDER), "0-test_hang", "stage test_hang on part 0", bound=CallBound(0.5, 0.01),
                       in_driver=IN_DRIVER)
    with watching(watch):
        out = Hang().run(t)
    print(out.column("reason").to_pylist(), out.column("error")[5].as_py())
""")


def _try(folder, in_driver: bool = False) -> subprocess.CompletedProcess:
    code = CHILD.replace("FOLDER", repr(str(folder))).replace("IN_DRIVER", str(in_driver))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_call_past_its_bound_ends_its_worker_and_the_next_tries_isolate_the_row(tmp_path):
    t0, codes = time.time(), []
    for _ in range(6):
        proc = _try(tmp_path)
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
        assert "a call ran past its time bound of 0.5 s" in proc.stderr, proc.stderr
    # 8 rows: the calls on [0, 8), [4, 8), [4, 6), [5, 6) ran past their bound; the 5th try skips row 5
    assert codes == [1, 1, 1, 1, 0], codes
    reasons, error = proc.stdout.strip().split("] ", 1)
    assert reasons == "[None, None, None, None, None, 'stage_timeout', None, None"
    assert error.startswith("RangeTimedOut: stage test_hang on part 0 ran past its time bound of 0.5 s on this row")
    assert len(list(tmp_path.glob("*.timeout.json"))) == 4 and not list(tmp_path.glob("*.range.json"))
    assert time.time() - t0 < 40


def test_a_blocked_call_in_the_runs_own_process_ends_it_in_one_line_and_leaves_the_marker(tmp_path):
    proc = _try(tmp_path, in_driver=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: stage test_hang on part 0 ran past its time bound of 0.5 s and cannot be stopped in this process")
    assert "Traceback" not in proc.stderr
    assert len(list(tmp_path.glob("*.timeout.json"))) == 1  # Runner._died_in_process sends the --resume to Ray


def test_a_resume_may_change_the_time_bounds_only():
    saved = {"ray": {"num_cpus": 2, "call_timeout_s": 600.0, "row_timeout_s": 10.0},
             "stages": [{"hang": {"x": 1, "call_timeout_s": 5}}]}
    now = {"ray": {"num_cpus": 2, "call_timeout_s": 60.0, "row_timeout_s": 1.0}, "stages": [{"hang": {"x": 1}}]}
    _drop_time_bounds(saved), _drop_time_bounds(now)
    assert saved == now


def test_a_stage_past_its_bound_on_most_rows_stops_the_part_with_the_bound_in_its_line(tmp_path):
    """The crash loop rule counts timeouts as deaths; when most of them are timeouts, the line says to raise
    the bound (a stage slower than row_timeout_s on every row), not to look for a native crash."""
    import json

    import pytest

    from curate.crash_isolation import CrashWatch, StageCrashLoop

    rows = ["u0", "u1", "u2", "u3"]
    for i, uids in enumerate([rows, rows[:2], ["u0"], rows[2:], ["u2"], ["u1"]]):
        (tmp_path / f"0-test_hang.t{i}.timeout.json").write_text(json.dumps(uids))
    with pytest.raises(StageCrashLoop, match="stage test_hang on part 0: the stage ran past its time bound on 3 rows "
                                             "alone while 0 passed.*raise the stage's row_timeout_s"):
        CrashWatch(tmp_path, "0-test_hang", "stage test_hang on part 0").guard(lambda lo, hi: None, rows)


RACE = textwrap.dedent("""
    import threading, time
    from pathlib import Path
    from curate import crash_isolation
    from curate.crash_isolation import StageTimedOut

    class Marker:
        # a call's real marker file, whose exists() the watchdog of before asked after it had taken the late
        # call off its list: it waits there until the call has ended, the interleaving under test
        def __init__(self, path):
            self.path, self.asked, self.ended = path, threading.Event(), threading.Event()
            self.name = path.name
        def exists(self):
            self.asked.set()
            self.ended.wait(5)
            return self.path.exists()
        def rename(self, target):
            return self.path.rename(target)
        def with_name(self, name):
            return self.path.with_name(name)

    crash_isolation.DRIVER_GRACE_S = 0.3
    path = Path(FOLDER) / "0-x.1.range.json"
    path.write_text("[]")
    marker, dog = Marker(path), crash_isolation._Watchdog()
    t0 = time.monotonic()
    token = dog.start(t0 + 0.2, marker, "stage x", 0.2, True)
    inside = leaked = None
    try:
        while not marker.asked.is_set() and time.monotonic() < t0 + 3:
            pass  # the call, in Python code past its bound
    except StageTimedOut as err:
        inside = err
    dog.stop(token)  # the call has ended (its marker goes just after, as CrashWatch's does)
    marker.ended.set()
    try:
        t1 = time.monotonic()
        while time.monotonic() - t1 < 1:
            pass  # the run's own code after the call
    except StageTimedOut as err:
        leaked = err
    path.unlink()
    time.sleep(0.5)  # past the grace: the process lives on
    print("inside", inside is not None, "leaked", leaked is not None)
""")


def test_a_call_that_ended_is_never_interrupted_afterwards(tmp_path):
    # In a run without Ray the watchdog raises StageTimedOut in the thread of a call past its bound. It must
    # do so only while that call runs: delivered after the call ended, it would fail the next call's rows
    # (a range that did not run past its bound) or break the runner's own code outside any call.
    code = RACE.replace("FOLDER", repr(str(tmp_path)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["inside", "True", "leaked", "False"], proc.stdout + proc.stderr


def test_a_stage_whose_rows_take_minutes_keeps_its_own_least_bound(tmp_path):
    """clip_split re-encodes whole videos (minutes a row): the recipe's default 10 s a row would stop healthy
    calls as hanging, so the stage's min_row_timeout_s raises the bound; its own row_timeout_s still wins."""
    from curate.recipe import build_recipe
    from curate.runner import Runner

    def bound(extra: dict, ray: dict | None = None):
        recipe = build_recipe({"name": "t", "input": {"format": "parquet"}, "ray": ray or {},
                               "output": {"path": str(tmp_path / "out")},
                               "stages": [{"caption_text": {}}, {"download_video": {}}, {"clip_split": extra}]})
        runner = Runner(recipe)
        return runner._bound(0), runner._bound(2)

    text, video = bound({})
    assert (text.per_row, video.per_row) == (10.0, 3600.0) and video.seconds(4) == 4 * 3600.0
    assert bound({}, {"row_timeout_s": 2})[1].per_row == 3600.0  # the recipe-wide default does not lower it
    assert bound({"row_timeout_s": 30})[1].per_row == 30.0  # the stage's own setting wins
