"""curate.ray_crash: Ray Data's retry defaults are bounded inside a session and restored after it, even when
the session fails; an operator's own settings win (the end-to-end crash is tests/hostile/test_worker_crash.py)."""
from __future__ import annotations

import pytest

from curate import ray_crash


def test_defaults_are_bounded_inside_and_restored_after_even_on_error():
    from ray.data import DataContext
    from ray.data._internal.execution.operators import task_pool_map_operator as tasks
    from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator as actors

    before = (tasks.cached_remote_fn, actors.__dict__["_apply_default_remote_args"])
    ctx = DataContext.get_current()
    with pytest.raises(RuntimeError):
        with ray_crash.bounded_crash_retries(2) as on:
            assert on is True
            args = actors._apply_default_remote_args({}, ctx)
            # task retries bounded; restarts not (each death on a row costs one, across every part an actor
            # serves; a model load that keeps dying is stopped by crash_isolation.setup_guard)
            assert args["max_restarts"] == -1 and args["max_task_retries"] == 2
            own = actors._apply_default_remote_args({"max_task_retries": 0}, ctx)  # an operator's own choice wins
            assert own["max_task_retries"] == 0
            remote = tasks.cached_remote_fn(lambda: None, num_cpus=1)  # what a map operator builds its task from
            assert remote._default_options.get("max_retries") == 2
            mine = tasks.cached_remote_fn(lambda: 1, num_cpus=1, max_retries=5)
            assert mine._default_options.get("max_retries") == 5
            raise RuntimeError("the run failed")
    assert (tasks.cached_remote_fn, actors.__dict__["_apply_default_remote_args"]) == before
    assert actors._apply_default_remote_args({}, ctx)["max_task_retries"] == -1  # Ray's own default again
