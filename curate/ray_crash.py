"""A part whose worker process dies (a native crash on some row, the kernel's OOM killer) is tried again a
bounded number of times, then the run stops with one line; Ray Data's defaults retry it forever, and the
run hangs. Between tries, curate.crash_isolation narrows down the rows whose stage call killed the process,
so those rows fail alone and the part goes on.

Ray Data gives its map tasks `max_retries=-1` and its actor pools `max_restarts=-1, max_task_retries=-1`
unless an operator's remote args say otherwise. Saying so per operator is not an option here: Ray Data
fuses consecutive operators only when their remote args are equal, and task and actor operators cannot
share these keys (an actor takes no max_retries, a task no max_restarts), so the download tasks would stop
fusing into the model actor, and on a small node the actors would hold every CPU while the tasks waited
(a deadlock a capfilt test ran into). So, for the length of a session, Ray Data's two defaults are changed
where they are applied (after fusion): a map task's remote function gets `retries` (`retries_for` the
recipe's `ray.max_part_crashes`), and an actor pool's tasks get `retries` task retries. Actor restarts stay unbounded:
every death on a row costs a restart, across all the parts an actor serves; a model load that keeps
killing its process is stopped by crash_isolation.setup_guard instead. An operator that sets its own keys
keeps them. If a Ray release moves either name, the session runs with Ray's defaults (logged at debug).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger("curate")

CRASH_RETRIES = 2  # further tries of a part whose worker process died, where no recipe says otherwise


def retries_for(max_part_crashes: int) -> int:
    """Ray's retries of a part, for a recipe allowing `max_part_crashes` deaths of a stage on one part.

    crash_isolation counts a stage's own deaths on a part and stops the run at that bound. Ray's count is
    higher because it also counts deaths that were not the part's: the task queued behind a dying actor is
    retried too (Ray Data keeps two tasks in flight per actor). It stays finite for deaths outside any
    stage call (reading or committing the part), which no marker records."""
    return 2 * max_part_crashes + 4


def _targets():
    """(task_pool_map_operator module, ActorPoolMapOperator) or None when this Ray has moved them."""
    try:
        from ray.data._internal.execution.operators import task_pool_map_operator as tasks
        from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator
    except ImportError:
        return None
    defaults = ActorPoolMapOperator.__dict__.get("_apply_default_remote_args")
    if not callable(getattr(tasks, "cached_remote_fn", None)) or not isinstance(defaults, staticmethod):
        return None
    return tasks, ActorPoolMapOperator


@contextmanager
def bounded_crash_retries(retries: int = CRASH_RETRIES):
    """Within the block, Ray Data retries a map task, or an actor's task (restarting the actor), `retries`
    times after its worker process died, instead of forever."""
    found = _targets()
    if found is None:
        log.debug("ray_crash: Ray Data's retry defaults are not where expected; keeping Ray's")
        yield False
        return
    tasks, actor_op = found
    original_fn, original_defaults = tasks.cached_remote_fn, actor_op.__dict__["_apply_default_remote_args"]

    def cached_remote_fn(fn, **ray_remote_args):
        ray_remote_args.setdefault("max_retries", retries)
        return original_fn(fn, **ray_remote_args)

    def apply_default_remote_args(ray_remote_args, data_context):
        ray_remote_args = {"max_restarts": -1, "max_task_retries": retries, **ray_remote_args}
        return original_defaults.__func__(ray_remote_args, data_context)

    tasks.cached_remote_fn = cached_remote_fn
    actor_op._apply_default_remote_args = staticmethod(apply_default_remote_args)
    try:
        yield True
    finally:
        tasks.cached_remote_fn = original_fn
        actor_op._apply_default_remote_args = original_defaults


# The notices Ray's driver prints (through its GCS error listener, as "(raylet) ...") for each worker death
# and each retry it causes: several lines apiece, and routine now that a crashing row fails alone.
DEATH_NOTICES = ("A worker died or was killed while executing a task", "retries remaining, so the task will be retried")


@contextmanager
def quiet_death_notices():
    """Within the block, Ray's worker-death and retry notices go to curate's log at debug level (`-v` shows
    them) instead of the terminal; every other Ray notice (an unschedulable resource request, say) is
    printed as before. Ray's listener thread looks `print_to_stdstream` up in its module on each message,
    so replacing that name reaches it; if a Ray release moves it, the notices are printed as before."""
    try:
        from ray._private import worker
    except ImportError:
        yield
        return
    original = getattr(worker, "print_to_stdstream", None)
    if original is None:
        yield
        return

    def print_to_stdstream(data, *args, **kwargs):
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and lines and all(any(n in ln for n in DEATH_NOTICES) for ln in lines):
            for ln in lines:
                log.debug("ray: %s", ln)
            return None
        return original(data, *args, **kwargs)

    worker.print_to_stdstream = print_to_stdstream
    try:
        yield
    finally:
        worker.print_to_stdstream = original
