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
Ray Data's stats and autoscaling-coordinator actors are kept in the driver for the session
(`data_in_driver`, below). Measured before/after by bench/ray_overhead.py (bench/RESULTS.md, section
ray-overhead).

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


# -- Ray Data's two per-cluster actors, kept in the driver of a lean local run ---------------------------------
#
# On its first dataset Ray Data starts two detached actors, each a Python worker process that imports
# ray.data (~210 MB RSS, ~1 CPU s each, and the first dataset waits for one: its id comes from a call to it):
#   - _StatsActor, which only gathers dataset metrics for the dashboard's Prometheus export: the lean start
#     has no dashboard and no metrics collection, so nothing reads them;
#   - _AutoscalingCoordinatorActor, which shares the cluster's resources among the datasets that run at
#     once and forwards their requests to the autoscaler (there is none on a fixed local node).
# `data_in_driver` keeps both in the driver: the metrics calls become no-ops (dataset ids fall back to a
# uuid4, as Ray Data does when its actor fails), and the coordinator's own class runs in this process behind
# an object with the actor handle's `.method.remote(...)` calls (results as ray.put refs, so Ray Data's
# ray.wait / ray.get on them work). Same checks as the start: if a Ray release moves these names, or
# CURATE_RAY_LEAN=0, Ray Data runs as it ships. Measured by bench/ray_overhead.py.

_STATS = ("ray.data._internal.stats", "_StatsManager",
          ("update_execution_metrics", "update_iteration_metrics", "register_dataset_to_stats_actor",
           "gen_dataset_id_from_stats_actor"))
_COORDINATOR = ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
                "get_or_create_autoscaling_coordinator", "_AutoscalingCoordinatorActor")


class _Call:
    """`handle.method.remote(*a, **kw)` for an object in this process: run now, return a ref to the result.
    As with the actor, an error does not reach the caller: it is logged and the ref holds `on_error`."""

    def __init__(self, fn, on_error=None):
        self.fn, self.on_error = fn, on_error

    def remote(self, *args, **kwargs):
        import ray

        try:
            result = self.fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - an actor's error stays in the actor; Ray Data logs and goes on
            log.warning("Ray Data's in-driver autoscaling coordinator: %s failed", self.fn.__name__, exc_info=True)
            result = self.on_error
        return ray.put(result)


class _InDriver:
    """An actor handle's surface over a local instance (get_reserved_resources answers {} on an error: what
    Ray Data's client holds before its first answer)."""

    def __init__(self, instance):
        self._instance = instance

    def __getattr__(self, name):
        return _Call(getattr(self._instance, name), {} if name == "get_reserved_resources" else None)


def _coordinator_class(base):
    class _Coordinator(base):
        """The coordinator, ticking only while its Ray session lasts (its tick thread sleeps 20 s at a time
        and cannot be stopped: after the session it finds `closed` and does nothing)."""

        closed = False

        def _tick(self):
            if not self.closed:
                super()._tick()

    return _Coordinator


def _data_targets():
    """(Ray Data's _StatsManager, its coordinator module) where this Ray has every name we replace, else None."""
    import importlib

    try:
        stats = getattr(importlib.import_module(_STATS[0]), _STATS[1])
        coord = importlib.import_module(_COORDINATOR[0])
    except (ImportError, AttributeError):
        return None
    ok = (all(n in stats.__dict__ and callable(getattr(stats, n)) for n in _STATS[2])
          and callable(getattr(coord, _COORDINATOR[1], None)) and isinstance(getattr(coord, _COORDINATOR[2], None), type)
          and callable(getattr(getattr(coord, _COORDINATOR[2]), "_tick", None)))
    return (stats, coord) if ok else None


@contextmanager
def data_in_driver():
    """Ray Data without its stats and autoscaling-coordinator actors for the duration of the block (a lean
    local run's Ray session); everything patched is restored after, and the coordinator stops ticking."""
    import threading
    import uuid

    targets = _data_targets() if enabled() else None
    if targets is None:
        yield False
        return
    stats, coord_mod = targets
    saved_stats = {n: stats.__dict__[n] for n in _STATS[2]}
    saved_get = getattr(coord_mod, _COORDINATOR[1])
    holder: list = []
    lock = threading.Lock()  # Ray Data may ask from several threads: one coordinator, as with the named actor

    def get_or_create():
        with lock:
            if not holder:
                holder.append(_coordinator_class(getattr(coord_mod, _COORDINATOR[2]))())
        return _InDriver(holder[0])

    try:
        for n in _STATS[2]:
            setattr(stats, n, staticmethod(lambda *a, **kw: None))
        stats.gen_dataset_id_from_stats_actor = staticmethod(lambda: uuid.uuid4().hex)
        setattr(coord_mod, _COORDINATOR[1], get_or_create)
        yield True
    finally:
        for n, fn in saved_stats.items():
            setattr(stats, n, fn)
        setattr(coord_mod, _COORDINATOR[1], saved_get)
        for c in holder:
            c.closed = True
