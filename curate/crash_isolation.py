"""A row that kills its worker process (a native crash in a decoder or model, the kernel's OOM killer) fails
alone, as `failed/stage_crashed`, and the rest of its part goes on.

A Python exception is caught and isolated within one call (curate.stage.isolate bisects the batch). A dead
process leaves nothing to catch, so the evidence is kept outside it: before a stage is called on a range of
rows, the uids of that range go into a marker file under the run directory
(`_work/crashes/segment<s>/part-<k>/`), and the marker is removed when the call returns or raises. Ray tries
a part again when its worker died (`ray.crash_retries` times, curate.ray_crash), and a marker still there on
the next try names a range that killed a process. `isolate` then never calls the stage on a range that holds
such a range (`RangeCrashed` splits it, as an exception would), and a single row that killed a process fails
alone with `stage_crashed`. Each death halves the suspect range, so one crashing row in a part of n rows
costs about log2(n) + 1 worker deaths; a stage that kills its process on most rows runs out of tries and
stops the run in one line.

Markers are matched by uid, not position, because the rows that reach a stage may differ between tries (the
stages fused before it run again). Markers live only as long as one run session: `Runner` clears them at
start, so the leftovers of an interrupted run (Ctrl-C kills workers mid-call too) are not read as crashes.

A model worker that dies while loading its model is restarted by Ray as well; `setup_guard` stops that loop:
after SETUP_DEATHS dead loads on this host it raises ModelLoadError, which stops the run in one line.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
import uuid
from contextlib import contextmanager
from typing import Callable

from curate import schema

STAGE_CRASHED, STAGE_CRASHED_UNISOLATED = "stage_crashed", "stage_crashed_unisolated"
schema.declare_reasons({
    STAGE_CRASHED: "the stage's worker process died (a native crash in a decoder or model, or the out-of-memory "
                   "killer) while processing this row alone; the rest of its part went on",
})
SETUP_DEATHS = 2  # model loads that killed their process on this host before the run stops
_MARK = ".range.json"

_current: contextvars.ContextVar["CrashWatch | None"] = contextvars.ContextVar("curate_crash_watch", default=None)


class RangeCrashed(Exception):
    """This range holds rows whose stage call killed a worker process on an earlier try: not called again."""

    def __init__(self, rows: int):
        super().__init__("the worker process died while the stage processed this row (a native crash or the "
                         "out-of-memory killer)" if rows == 1 else
                         f"the worker process died on a range of these {rows} rows on an earlier try")


class CrashWatch:
    """The crash markers of one stage on one part (a folder that Path or UPath can address)."""

    def __init__(self, folder, stage_key: str):
        self.folder, self.key = folder, stage_key
        self.crashed: list[frozenset[str]] = list(self._left_behind())

    def _left_behind(self):
        if not self.folder.exists():
            return
        for f in self.folder.iterdir():
            if f.name.startswith(self.key + ".") and f.name.endswith(_MARK):
                try:
                    yield frozenset(json.loads(f.read_text()))
                except (OSError, ValueError):  # a marker cut short by the crash itself: nothing to learn
                    continue

    def guard(self, call: Callable, uids: list[str]) -> Callable:
        """`call(lo, hi)` that refuses ranges holding a range that crashed before, and leaves a marker while it
        runs. Crashed ranges are reduced to the rows in play now (`uids`), so a row that left the batch
        between tries does not keep every range suspect."""
        now = set(uids)
        suspects = [s & now for s in self.crashed]
        suspects = [s for s in suspects if s]

        def guarded(lo: int, hi: int):
            rows = set(uids[lo:hi])
            if any(s <= rows for s in suspects):
                raise RangeCrashed(hi - lo)
            with self._marker(uids[lo:hi]):
                token = _current.set(None)  # a stage nested inside this call is covered by this marker
                try:
                    return call(lo, hi)
                finally:
                    _current.reset(token)
        return guarded

    @contextmanager
    def _marker(self, uids: list[str]):
        path = self.folder / f"{self.key}.{uuid.uuid4().hex}{_MARK}"
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(uids))
        try:
            yield
        finally:  # returned or raised: the process lived through it
            with contextlib.suppress(OSError):
                path.unlink()


@contextmanager
def watching(watch: CrashWatch | None):
    """Within the block, the first `isolate` guards its calls with `watch`."""
    token = _current.set(watch)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> CrashWatch | None:
    return _current.get()


@contextmanager
def setup_guard(folder, stage_key: str, what: str):
    """Around a model worker's setup: leave a marker naming this process while it loads; raise
    ModelLoadError when SETUP_DEATHS earlier loads on this host died (their process is gone, the marker is
    still there), instead of letting Ray restart the worker forever."""
    from curate.models.clip import ModelLoadError

    host, prefix = socket.gethostname(), f"setup.{stage_key}."
    dead = [f for f in _setup_markers(folder, prefix) if _died_here(f.name[len(prefix):], host)]
    if len(dead) >= SETUP_DEATHS:
        raise ModelLoadError(f"{what}: the worker process died while setting up (loading its model) "
                             f"{len(dead)} times (a native crash, or out of memory): check the model and the "
                             "machine's memory, and run with -v to see the worker's log")
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{prefix}{os.getpid()}@{host}"
    marker.write_text("")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()


def _setup_markers(folder, prefix: str) -> list:
    if not folder.exists():
        return []
    return [f for f in folder.iterdir() if f.name.startswith(prefix)]


def _died_here(owner: str, host: str) -> bool:
    """A setup marker's process (`pid@host`) is on this host and no longer runs (another host's cannot be
    checked from here)."""
    pid, _, where = owner.partition("@")
    if where != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process reuses the pid: ours is gone
        return True
    return False
