"""Start a local Ray with only the processes a local curate run uses (curate.runner.ray_session calls this).

`ray.init(include_dashboard=False)` on one machine starts, next to the GCS, the raylet and the raylet's two
agents (dashboard agent, runtime_env agent; the raylet fate-shares with both, so they stay):
  - an API server (ray/dashboard/dashboard.py): with include_dashboard=False it still runs, loading only the
    usage-stats module, and ray.init polls the GCS until it has registered (up to 60 s) before returning;
  - the autoscaler monitor (ray/autoscaler/_private/monitor.py): a fixed local node has nothing to scale;
  - the log monitor, which streams worker logs to the driver: only `log_to_driver` (curate -v) reads them.
Each is a Python process that imports Ray's dashboard or autoscaler packages (80-100 MB RSS, 1-3 CPU s of
start-up each, and the API server sits on ray.init's critical path). `lean_local_init` starts Ray without
them, and sets Ray's config switch RAY_enable_metrics_collection=0 (src/ray/common/ray_config_def.h) for the
processes it starts: nothing reads metrics without the dashboard. It goes in as an environment variable, not
_system_config, because a GCS given a _system_config key its release does not know aborts at start-up
(ray_config.cc "unexpected config parameter"), while an unknown RAY_* variable is ignored.
Measured before/after by bench/ray_overhead.py (bench/RESULTS.md, section ray-overhead).

How: Ray has no public switch for the three processes (RayParams has include_log_monitor/no_monitor, which
ray.init does not pass on), so while ray.init starts the head node the three `Node.start_*` methods are
replaced by no-ops and restored right after. The private names are checked first; if a Ray release moves
them, or CURATE_RAY_LEAN=0 is set, Ray starts exactly as ray.init(include_dashboard=False) does. Cluster
mode (RAY_ADDRESS / --ray-address) never comes here: a cluster keeps whatever its `ray start` started.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

log = logging.getLogger("curate")

# Ray's own config switches (src/ray/common/ray_config_def.h), for the processes of the local head only.
LEAN_ENV = {"RAY_enable_metrics_collection": "0"}
# The Node methods that start the processes a local run does not use (ray/_private/node.py).
SKIPPED = ("start_api_server", "start_monitor")
LOG_MONITOR = "start_log_monitor"


def enabled() -> bool:
    """Lean start unless CURATE_RAY_LEAN=0 (an escape hatch, and the 'before' side of bench/ray_overhead.py)."""
    return os.environ.get("CURATE_RAY_LEAN", "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def _without(names: tuple[str, ...]):
    """ray._private.node.Node with the named start methods as no-ops, for the duration of the block."""
    from ray._private import node as ray_node

    saved = {n: ray_node.Node.__dict__[n] for n in names}
    try:
        for n in names:
            setattr(ray_node.Node, n, lambda self, *a, **kw: None)
        yield
    finally:
        for n, fn in saved.items():
            setattr(ray_node.Node, n, fn)


def _patchable(names: tuple[str, ...]) -> bool:
    try:
        from ray._private import node as ray_node
    except ImportError:
        return False
    return all(callable(ray_node.Node.__dict__.get(n)) for n in names)


def lean_local_init(*, keep_log_monitor: bool, **init_kwargs) -> bool:
    """ray.init(address="local", **init_kwargs): a new local Ray without the API server, autoscaler monitor and (unless
    keep_log_monitor) log monitor, with LEAN_ENV. Returns whether the lean start was used."""
    import ray

    names = SKIPPED + (() if keep_log_monitor else (LOG_MONITOR,))
    # "local": a new Ray for this run, as documented. Without an address ray.init joins the cluster named in
    # /tmp/ray/ray_current_cluster (left by any `ray start` on the machine) and then refuses num_cpus.
    init_kwargs.setdefault("address", "local")
    if not enabled() or not _patchable(names):
        if enabled():
            log.debug("lean Ray start unavailable in ray %s: starting Ray with its defaults", ray.__version__)
        ray.init(**init_kwargs)
        return False
    with _without(names), _environ(LEAN_ENV):
        ray.init(**init_kwargs)
    return True


@contextmanager
def _environ(values: dict[str, str]):
    """os.environ with `values` (where not set already) while Ray's processes are spawned; restored after, so
    nothing leaks into the caller's later subprocesses."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
