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

from ray.data._internal.stats import _StatsManager
from ray.data._internal.cluster_autoscaler import default_autoscaling_coordinator as dac

originals = (_StatsManager.__dict__["gen_dataset_id_from_stats_actor"], dac.get_or_create_autoscaling_coordinator)
with runner.ray_session(None, 1) as r:
    procs = sorted(ray._private.worker._global_node.all_processes)
    rows = r.data.from_items([{"x": i} for i in range(6)]).map_batches(
        lambda b: {"y": [v * 2 for v in b["x"]]}, batch_size=None).map_batches(
        lambda b: {"y": [v + 0 for v in b["y"]]}, batch_size=2).take_all()
    actors = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
    session = ray._private.worker._global_node.get_session_dir_path()
    report = {
        "actors": actors,
        "data_patched": (_StatsManager.__dict__["gen_dataset_id_from_stats_actor"] is not originals[0]
                         and dac.get_or_create_autoscaling_coordinator is not originals[1]),
        "procs": procs,
        "skipped": [rc.PROCESS_TYPE_DASHBOARD, rc.PROCESS_TYPE_MONITOR, rc.PROCESS_TYPE_LOG_MONITOR],
        "kept": [rc.PROCESS_TYPE_GCS_SERVER, rc.PROCESS_TYPE_RAYLET],
        "restored": all(getattr(ray_node.Node, n).__name__ == n for n in ("start_api_server", "start_monitor", "start_log_monitor")),
        "env_left": "RAY_enable_metrics_collection" in os.environ,
        "y": sorted(row["y"] for row in rows),
        "session_existed": os.path.isdir(session),
    }
report["session_left"] = os.path.exists(session)  # a finished local session's /tmp/ray folder is removed
print(json.dumps(report))
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
    # Ray Data's stats and autoscaling-coordinator actors are not started: they live in the driver
    assert not {"AutoscalingCoordinator", "datasets_stats_actor"} & set(out["actors"]), out["actors"]
    assert out["data_patched"] is True  # inside the session both are replaced
    assert out["session_existed"] and not out["session_left"]  # nothing of the run stays in /tmp/ray


def test_ray_data_in_driver_is_undone_after_the_session_even_on_error():
    from ray.data._internal.cluster_autoscaler import default_autoscaling_coordinator as dac
    from ray.data._internal.stats import _StatsManager

    names = lean_ray._STATS[2]
    before = ({n: _StatsManager.__dict__[n] for n in names}, dac.get_or_create_autoscaling_coordinator)
    assert lean_ray._data_targets() is not None  # this Ray has the names we patch
    with pytest.raises(RuntimeError):
        with lean_ray.data_in_driver() as on:
            assert on is True
            assert _StatsManager.update_execution_metrics("any", "args") is None
            assert len(_StatsManager.gen_dataset_id_from_stats_actor()) == 32  # a uuid4, no actor
            raise RuntimeError("the run failed")
    assert ({n: _StatsManager.__dict__[n] for n in names}, dac.get_or_create_autoscaling_coordinator) == before


def test_in_driver_coordinator_answers_like_the_actor_without_raising(ray_address):
    """The coordinator class itself, behind the handle surface, on the session's Ray (2 CPUs): a request is
    reserved together with the node's remaining CPUs (what Ray Data's budget reads), and a request it
    rejects is logged and answered, not raised."""
    import ray

    from ray.data._internal.cluster_autoscaler import default_autoscaling_coordinator as dac

    handle = lean_ray._InDriver(lean_ray._coordinator_class(dac._AutoscalingCoordinatorActor)())
    try:
        handle.request_resources.remote(requester_id="r", resources=[{"CPU": 1}], expire_after_s=60,
                                        request_remaining=["CPU"])
        reserved = ray.get(handle.get_reserved_resources.remote("r"))
        assert sum(res.get("CPU", 0) for res in reserved.values()) == 2  # its request plus the rest
        ray.get(handle.request_resources.remote(requester_id="r", resources=[{"CPU": 1}], expire_after_s=60,
                                                request_remaining=["GPU"]))  # may not change: logged
        assert ray.get(handle.get_reserved_resources.remote("r")) == reserved
    finally:
        handle._instance.closed = True


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
