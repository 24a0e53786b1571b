"""A row that kills its worker process (a native crash in a decoder or model, the kernel's OOM killer) fails
alone, as `failed/stage_crashed`, and the rest of its part goes on.

A Python exception is caught and isolated within one call (curate.stage.isolate bisects the batch). A dead
process leaves nothing to catch, so the evidence is kept outside it: before a stage is called on a range of
rows, the uids of that range go into a marker file under the run directory
(`_work/crashes/segment<s>/part-<k>/`), and the marker goes when the call returns or raises (after a death,
a call that returns leaves it renamed `passed`). Ray tries a part again when its worker died (curate.ray_crash), and a range marker
still there on the next try names a range that killed a process. `isolate` then never calls the stage on a
range that holds such a range (`RangeCrashed` splits it, as an exception would), and a single row that killed a process fails
alone with `stage_crashed`. Each death halves the suspect range, so one crashing row in a part of n rows
costs about log2(n) + 1 worker deaths. A stage that kills its process on most rows stops the run in one
line (StageCrashLoop): after two rows died alone with fewer rows passing, or after `ray.max_part_crashes`
deaths on one part.

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

STAGE_CRASHED = "stage_crashed"
schema.declare_reasons({
    STAGE_CRASHED: "the stage's worker process died (a native crash in a decoder or model, or the out-of-memory "
                   "killer) while processing this row alone; the rest of its part went on",
})
SETUP_DEATHS = 2  # model loads that killed their process on this host before the run stops
MAX_PART_CRASHES = 48  # deaths of one stage on one part before the run stops (ray.max_part_crashes)
_MARK, _PASSED = ".range.json", ".passed.json"

_current: contextvars.ContextVar["CrashWatch | None"] = contextvars.ContextVar("curate_crash_watch", default=None)


class RangeCrashed(Exception):
    """This range holds rows whose stage call killed a worker process on an earlier try: not called again."""

    def __init__(self, rows: int):
        super().__init__("the worker process died while the stage processed this row (a native crash or the "
                         "out-of-memory killer)" if rows == 1 else
                         f"the worker process died on a range of these {rows} rows on an earlier try")


class StageCrashLoop(RuntimeError):
    """A stage kills its worker process on a part more than a few rows can explain: the run stops (one line)."""


class CrashWatch:
    """The crash markers of one stage on one part (a folder that Path or UPath can address).

    A range marker left behind is a death. After a death, calls that return leave a `passed` marker (on a
    first try they leave nothing: most parts never die, and their folders stay empty), so the next try can
    tell a stage that dies on a few rows from one that dies on every row."""

    def __init__(self, folder, stage_key: str, where: str = "", limit: int | None = MAX_PART_CRASHES):
        self.folder, self.key, self.where, self.limit = folder, stage_key, where, limit
        self.crashed: list[frozenset[str]] = []
        self.passed: set[str] = set()
        for name, uids in self._markers():
            if name.endswith(_MARK):
                self.crashed.append(frozenset(uids))
            else:
                self.passed.update(uids)

    def _markers(self):
        if not self.folder.exists():
            return
        for f in self.folder.iterdir():
            if f.name.startswith(self.key + ".") and f.name.endswith((_MARK, _PASSED)):
                try:
                    yield f.name, json.loads(f.read_text())
                except (OSError, ValueError):  # a marker cut short by the crash itself: nothing to learn
                    continue

    def guard(self, call: Callable, uids: list[str]) -> tuple[Callable, Callable]:
        """(`call(lo, hi)` guarded, `suspect(lo, hi)`). The guarded call refuses a range that holds a range
        which died before (RangeCrashed, so `isolate` splits it) and leaves a marker while it runs;
        `suspect` says whether a range holds one, so `isolate` runs the clean half of a split first. Ranges
        that died are reduced to the rows in play now (`uids`): a row that left the batch between tries
        does not keep ranges suspect. Raises StageCrashLoop when the deaths say the stage, not some rows,
        is failing (`_check_loop`)."""
        now = set(uids)
        suspects = [s & now for s in self.crashed]
        suspects = [s for s in suspects if s]
        self._check_loop(suspects, now)

        def suspect(lo: int, hi: int) -> bool:
            rows = set(uids[lo:hi])
            return any(s <= rows for s in suspects)

        def guarded(lo: int, hi: int):
            if suspect(lo, hi):
                raise RangeCrashed(hi - lo)
            with self._marker(uids[lo:hi]):
                token = _current.set(None)  # a stage nested inside this call is covered by this marker
                try:
                    return call(lo, hi)
                finally:
                    _current.reset(token)
        return guarded, suspect

    def _check_loop(self, suspects: list[frozenset[str]], now: set[str]) -> None:
        """Stop when this part has died `limit` times in this stage, or, once the deaths exceed what
        isolating two rows costs (2 log2(n) + 1), when fewer rows passed (after a death) than died alone:
        the rule `isolate` uses for exceptions. So a stage that dies on every row of a big part stops after
        ~2 log2(n) deaths, not `limit`, while a small part whose rows all crash (a --retry-failed of the
        crashed rows) has its rows isolated, not the run stopped."""
        alone = {next(iter(s)) for s in suspects if len(s) == 1}
        passed = len(self.passed & now)
        if self.limit is not None and len(self.crashed) >= self.limit:
            why = f"{len(self.crashed)} times (ray.max_part_crashes)"
        elif len(self.crashed) > 1 + 2 * max(1, (len(now) - 1).bit_length()) and len(alone) >= 2 \
                and passed < len(alone):
            why = f"on {len(alone)} rows alone while {passed} passed"
        else:
            return
        raise StageCrashLoop(f"{self.where or self.key}: the worker process died {why}, so the stage, not a few "
                             "rows, is failing (a native crash in it, or out of memory): committed parts are "
                             "kept; run with -v to see the worker's log, fix or remove the stage, then --resume")

    @contextmanager
    def _marker(self, uids: list[str]):
        path = self.folder / f"{self.key}.{uuid.uuid4().hex}{_MARK}"
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(uids))
        ok = False
        try:
            yield
            ok = True
        finally:  # returned or raised: the process lived through it
            with contextlib.suppress(OSError):
                if ok and self.crashed:  # evidence for the next try, only where a try has died already
                    path.rename(path.with_name(path.name[:-len(_MARK)] + _PASSED))
                else:
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
