"""The stages bench/crash_isolation.py runs: they do nothing to a row, except that a batch holding a caption
with POISON kills the worker process with a real segmentation fault (ctypes reading address 0), as a bug in
a native decoder or model would (the same mechanism as tests/hostile/test_worker_crash.py's test stage).

A package, not a module, so the runner ships it to Ray's workers (py_modules) as it ships a user's plugin.
Before dying, a stage appends its pid to its `deaths_log` file (when set): the bench's own count of deaths,
to check the count it reads from the run's crash markers against (a recipe setting, not an environment
variable, so that it reaches the workers of a cluster started before the run too).
"""
from __future__ import annotations

import ctypes
import os
from typing import ClassVar

from curate.stage import Annotations, Stage

POISON = "poison"


def _maybe_die(texts: list, log: str) -> None:
    """Segfault when a caption in the batch holds POISON, after noting this process's death in `log`."""
    if not any(POISON in (t or "") for t in texts):
        return
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
    ctypes.string_at(0)  # SIGSEGV


class CrashTask(Stage):
    """A task stage (no model): Ray runs it as tasks, and a death is retried as a new task."""
    name: ClassVar[str] = "bench_crash_task"
    uses_model: ClassVar[bool] = False
    deaths_log: str = ""

    def annotate(self, active):
        _maybe_die(active.column("text").to_pylist(), self.deaths_log)
        return Annotations()


class CrashModel(Stage):
    """A model stage (its setup loads nothing): Ray runs it on an actor pool, and a death restarts the actor."""
    name: ClassVar[str] = "bench_crash_model"
    uses_model: ClassVar[bool] = True
    deaths_log: str = ""

    def setup(self):
        """Loads nothing: the actor pool, not a model, is what this stage measures."""

    def annotate(self, active):
        _maybe_die(active.column("text").to_pylist(), self.deaths_log)
        return Annotations()
