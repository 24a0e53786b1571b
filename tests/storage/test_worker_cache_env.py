"""A run's Ray workers fetch into the cache the driver names: CURATE_CACHE_DIR set on the driver reaches the
workers of a cluster the run connects to (here the test session's own Ray, joined by address from a fresh
process as a run joins a cluster), unless the worker has its own (runtime_env env_vars, or the machine's
environment), and they share the driver's fetch session. Before, a cluster's workers used ~/.cache/curate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from curate.io import storage

PROBE = r"""
import json, os, sys, ray
from curate import runner
from curate.io import storage

@ray.remote(num_cpus=0)
def seen():
    return [os.environ.get("CURATE_CACHE_DIR"), str(storage.cache_dir()), os.environ.get("CURATE_FETCH_SESSION")]

out = []
with storage.fetch_session() as session:
    for runtime_env in (None, {"env_vars": {"CURATE_CACHE_DIR": sys.argv[1]}}):
        with runner.ray_session(os.environ["RAY_ADDRESS"], runtime_env=runtime_env) as r:
            out.append(ray.get(seen.remote()))
print(json.dumps({"seen": out, "session": session}))
"""


def test_cluster_workers_get_the_drivers_cache_dir_unless_they_have_their_own(ray_address, tmp_path):
    driver, own = str(tmp_path / "big-disk"), str(tmp_path / "worker-own")
    env = {**os.environ, "RAY_ADDRESS": ray_address, "CURATE_CACHE_DIR": driver}
    proc = subprocess.run([sys.executable, "-c", PROBE, own], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    forwarded, overridden = out["seen"]
    assert forwarded[1] == driver and forwarded[2] == out["session"]  # the driver's cache, its fetch session
    assert overridden[:2] == [own, own]  # the worker's own setting wins


def test_cache_dir_prefers_the_machines_own_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("CURATE_CACHE_DIR", raising=False)
    monkeypatch.setenv(storage.DRIVER_CACHE_ENV, str(tmp_path / "driver"))
    assert storage.cache_dir() == tmp_path / "driver"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "own"))
    assert storage.cache_dir() == tmp_path / "own"
    monkeypatch.delenv("CURATE_CACHE_DIR")
    monkeypatch.delenv(storage.DRIVER_CACHE_ENV)
    assert storage.cache_dir() == storage.Path.home() / ".cache" / "curate"
    assert "CURATE_DRIVER_CACHE_DIR" not in storage.worker_env()  # forwarded only when set on the driver
