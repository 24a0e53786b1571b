"""A row that kills the worker process (as a segfault in a native decoder or model would) must stop the run
with one line, not hang it: Ray Data retries a part whose worker died forever by default, and the run sat at
75% until killed. Now the part is tried CRASH_RETRIES more times, then the run stops (exit 2) with the parts
already committed kept, on a task stage and on a model (actor) stage. (The crash is os._exit in a test
stage: a real segfault kills the process the same way, and cannot be produced on purpose portably.)"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.ray_crash import CRASH_RETRIES

STAGE = '''
import os
from typing import ClassVar
from curate.stage import Annotations, Stage

class CrashOn(Stage):
    """Test stage: the worker process dies on a caption containing 'poison'."""
    name: ClassVar[str] = "crash_on"
    uses_model: ClassVar[bool] = USES_MODEL  # True: runs on an actor pool (a model stage), False: tasks
    def annotate(self, active):
        if any("poison" in (t or "") for t in active.column("text").to_pylist()):
            os._exit(139)
        return Annotations()
'''


@pytest.mark.parametrize("actor,line", [(False, "a worker process died"), (True, "a model worker process died")])
def test_a_row_that_kills_its_worker_stops_the_run_in_one_line(ray_address, tmp_path, actor, line):
    (tmp_path / "crashstage").mkdir()  # a package: the runner ships it to the session cluster's workers
    (tmp_path / "crashstage" / "__init__.py").write_text(STAGE.replace("USES_MODEL", str(actor)))
    rows = [{"url": f"http://127.0.0.1:9/{i}.jpg", "caption": "poison" if i == 35 else f"c{i}"} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "urls.parquet")
    (tmp_path / "r.yaml").write_text("name: crash\noutput: {samples_per_shard: 10}\nstages:\n"
                                     "  - crashstage:CrashOn: {}\n  - download: {timeout_s: 1, retries: 0}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "RAY_ADDRESS": ray_address}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(tmp_path / "r.yaml"), "-i",
                           str(tmp_path / "urls.parquet"), "-o", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {line} on the same part three times"), last
    assert "Traceback" not in proc.stderr and time.time() - t0 < 300
    assert CRASH_RETRIES == 2  # "three times" in the message: the first attempt and two retries
    committed = sorted((tmp_path / "out" / "meta").glob("part-*.parquet"))
    assert len(committed) <= 3  # the parts without the poison row may have committed; the run kept them
