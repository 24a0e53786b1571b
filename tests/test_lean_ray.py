"""curate.lean_ray: a local Ray started by curate runs without the API server, autoscaler monitor and log monitor,
Ray Data still works on it, and nothing of the start-up trick outlives the start."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from curate import lean_ray

PROBE = r"""
import json, os, ray
from ray._private import node as ray_node, ray_constants as rc
from curate import runner

with runner.ray_session(None, 1) as r:
    procs = sorted(ray._private.worker._global_node.all_processes)
    rows = r.data.from_items([{"x": i} for i in range(6)]).map_batches(
        lambda b: {"y": [v * 2 for v in b["x"]]}, batch_size=None).take_all()
    print(json.dumps({
        "procs": procs,
        "skipped": [rc.PROCESS_TYPE_DASHBOARD, rc.PROCESS_TYPE_MONITOR, rc.PROCESS_TYPE_LOG_MONITOR],
        "kept": [rc.PROCESS_TYPE_GCS_SERVER, rc.PROCESS_TYPE_RAYLET],
        "restored": all(getattr(ray_node.Node, n).__name__ == n for n in ("start_api_server", "start_monitor", "start_log_monitor")),
        "env_left": "RAY_enable_metrics_collection" in os.environ,
        "y": sorted(row["y"] for row in rows),
    }))
"""


def test_local_ray_starts_lean_and_ray_data_runs_on_it():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, not the session's
    env.pop("CURATE_RAY_LEAN", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not set(out["skipped"]) & set(out["procs"]), out["procs"]
    assert set(out["kept"]) <= set(out["procs"]), out["procs"]
    assert out["restored"] and not out["env_left"]
    assert out["y"] == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize("value, lean", [(None, True), ("1", True), ("0", False), ("off", False), ("false", False)])
def test_curate_ray_lean_switch(monkeypatch, value, lean):
    if value is None:
        monkeypatch.delenv("CURATE_RAY_LEAN", raising=False)
    else:
        monkeypatch.setenv("CURATE_RAY_LEAN", value)
    assert lean_ray.enabled() is lean


def test_patched_start_methods_are_restored_even_when_the_start_fails():
    from ray._private import node as ray_node

    before = {n: ray_node.Node.__dict__[n] for n in lean_ray.SKIPPED}
    with pytest.raises(RuntimeError):
        with lean_ray._without(lean_ray.SKIPPED):
            assert ray_node.Node.start_api_server(None) is None  # a no-op while Ray starts
            raise RuntimeError("ray.init failed")
    assert {n: ray_node.Node.__dict__[n] for n in lean_ray.SKIPPED} == before
    assert lean_ray._patchable(lean_ray.SKIPPED + (lean_ray.LOG_MONITOR,))  # this Ray has the names we patch
