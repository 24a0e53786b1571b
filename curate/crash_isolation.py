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

A row that makes a stage call hang (a plugin that loops or blocks on one input, a C library stuck on one
image) is turned into the same kind of death, so it fails alone too, as `failed/stage_timeout`. Each guarded
call has a bound (`CallBound`: the stage's `row_timeout_s` per row of the call, at least `call_timeout_s`;
setup, where a model loads or compiles, is outside every call). A watchdog thread in the worker
(`_Watchdog`) keeps the deadlines of the calls running in its process; when one passes, it renames the call's
range marker to a timeout marker and ends the process with os._exit: the thread that hangs cannot be
stopped safely, but its process can. Ray then retries the part as after a crash, and the next try splits the
range that timed out as it splits one that died. Why a watchdog in the worker rather than a timer in the
driver (ray.get with a timeout, then ray.cancel(force=True) or ray.kill of the actor): Ray does not retry
a cancelled task (its docs: "max_task_retries aren't respected"), so the part would fail instead of being
split; a running task of a regular actor cannot be cancelled at all (only the whole actor killed); the
driver does not hold Ray Data's task references or know which stage of a fused chain is running; and a
killed task leaves its marker as a plain death, so the row would end `stage_crashed`. The worker knows the
call, its rows and its bound, and reuses the crash path unchanged: a timeout is one of Ray's retries of the
part (ray_crash.retries_for) and one of its `ray.max_part_crashes` deaths, and the loop rule stops a stage
that runs past its bound on most rows (its line then says to raise the bound). A part split this way costs
about log2(n) + 1 timeouts per hanging row, each its call's bound: the halves' bounds shrink with their
rows, down to `call_timeout_s` (the floor). Like crash markers, timeout markers last one session: a
--resume of an interrupted run finds a hanging row of an uncommitted part again; committed parts keep
their `stage_timeout` rows.

A run without Ray (curate's in-process path for filters and jobs) cannot end its own process: there the
watchdog raises StageTimedOut in the hung thread (this stops Python code that loops, so the range is split
in the same process), and only when the call has still not returned `DRIVER_GRACE_S` later does it leave the
timeout marker and end the process with a one-line message; the `--resume` then goes through Ray
(Runner._died_in_process), which isolates the row.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Callable

from curate import schema

STAGE_CRASHED = "stage_crashed"
schema.declare_reasons({
    STAGE_CRASHED: "the stage's worker process died (a native crash in a decoder or model, or the out-of-memory "
                   "killer) while processing this row alone; the rest of its part went on",
})
STAGE_TIMEOUT = "stage_timeout"
schema.declare_reasons({
    STAGE_TIMEOUT: "a stage call on this row alone ran past its time bound (the stage's row_timeout_s, at least "
                   "call_timeout_s), so its worker was stopped; the rest of its part went on",
})
CALL_TIMEOUT_S = 600.0  # the least a stage call may take, whatever its rows (ray.call_timeout_s; 0: no bound)
ROW_TIMEOUT_S = 10.0  # and per row of the call (ray.row_timeout_s)
DRIVER_GRACE_S = 5.0  # in a run without Ray: how long a timed-out call has to unwind before the process ends
SETUP_DEATHS = 2  # model loads that killed their process on this host before the run stops
MAX_PART_CRASHES = 48  # deaths of one stage on one part before the run stops (ray.max_part_crashes)
_MARK, _PASSED, _TIMEOUT = ".range.json", ".passed.json", ".timeout.json"

_current: contextvars.ContextVar["CrashWatch | None"] = contextvars.ContextVar("curate_crash_watch", default=None)


class RangeCrashed(Exception):
    """This range holds rows whose stage call killed a worker process on an earlier try: not called again."""

    def __init__(self, rows: int, timed_out: bool = False):
        super().__init__("the worker process died while the stage processed this row (a native crash or the "
                         "out-of-memory killer)" if rows == 1 else
                         f"a stage call ran past its time bound on a range of these {rows} rows on an earlier try"
                         if timed_out else f"the worker process died on a range of these {rows} rows on an earlier try")


class RangeTimedOut(RangeCrashed):
    """A single row whose stage call ran past its bound on an earlier try (its worker was ended): not called
    again, it fails alone as `stage_timeout`."""

    def __init__(self, where: str, seconds: float):
        Exception.__init__(self, f"{where} ran past its time bound of {seconds:g} s on this row alone (row_timeout_s, "
                                 "at least call_timeout_s), so its worker process was stopped")


class StageTimedOut(Exception):
    """Raised inside a stage call that ran past its bound in a run without Ray (see the module's docstring)."""

    detail = "the stage call ran past its time bound (row_timeout_s, at least call_timeout_s) and was stopped"

    def __init__(self, *args):
        super().__init__(*(args or (self.detail,)))  # raised by class (PyThreadState_SetAsyncExc): no arguments


def timed_out(err: BaseException) -> bool:
    """Whether a row's error means its call ran past the bound (reason stage_timeout, not crashed or error)."""
    return isinstance(err, (RangeTimedOut, StageTimedOut))


@dataclass(frozen=True)
class CallBound:
    """How long one stage call may run: `per_row` seconds for each row it is given, at least `floor`.

    Why scaled by rows: a part's first call holds all its rows, and each split halves them; a fixed bound
    either kills healthy big calls or waits long on one hanging row. Why a floor: small calls still pay
    fixed costs (a model's first batch warms up or compiles, a GPU transfer). floor 0 turns the bound off."""
    floor: float = CALL_TIMEOUT_S
    per_row: float = ROW_TIMEOUT_S

    def seconds(self, rows: int) -> float | None:
        if not self.floor:
            return None
        return max(self.floor, self.per_row * rows)


class _Watchdog:
    """One daemon thread per process that stops a watched call when it runs past its deadline.

    Starting and ending a call is a dict update under a lock; the thread sleeps until the earliest deadline
    and is woken only when a new call's deadline comes sooner (measured cost: bench/crash_isolation.py).
    The thread acts on a call only under that lock and while the call is still on the list, so `stop`
    (the call has ended) and the stop of the call are never crossed: a call that ended is not interrupted
    afterwards, when its thread runs the next call or the runner's own code, and its process is not ended."""

    def __init__(self):
        self.cond = threading.Condition()
        self.calls: dict[int, _Call] = {}
        self.wake = math.inf  # when the thread means to look next
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()

    def start(self, deadline: float, marker, where: str, seconds: float, in_driver: bool) -> int:
        token = id(marker)
        with self.cond:
            if self.thread is None or self.pid != os.getpid():  # (a forked child has no thread)
                self.pid, self.thread = os.getpid(), threading.Thread(target=self._run, name="curate-watchdog",
                                                                      daemon=True)
                self.thread.start()
            self.calls[token] = _Call(deadline, marker, where, seconds, threading.get_ident(), in_driver)
            if deadline < self.wake:
                self.cond.notify()
        return token

    def stop(self, token: int) -> None:
        with self.cond:
            call = self.calls.pop(token, None)
            if call is not None and call.interrupted:  # not raised yet (the call returned meanwhile): never
                _set_async_exc(call.thread, None)      # raise it outside the call

    def _run(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                for token in [t for t, c in self.calls.items() if c.deadline <= now]:
                    self._expire(token, self.calls[token])
                self.wake = min((c.deadline for c in self.calls.values()), default=math.inf)
                self.cond.wait(None if self.wake == math.inf else max(self.wake - now, 0))

    def _expire(self, token: int, call: "_Call") -> None:
        """The call is past its deadline and still running (under the lock: `stop` waits)."""
        if not call.in_driver:
            _mark_timeout(call.marker)
            _exit(f"{call.where}: a call ran past its time bound of {call.seconds:g} s; ending this worker so the "
                  "part is tried again without the hanging rows (stage_timeout)")
        if not call.interrupted:  # first StageTimedOut in its thread, then DRIVER_GRACE_S to unwind
            call.interrupted, call.deadline = True, time.monotonic() + DRIVER_GRACE_S
            detail = (f"{call.where} ran past its time bound of {call.seconds:g} s (row_timeout_s, at least "
                      "call_timeout_s) and was stopped")
            _set_async_exc(call.thread, type("StageTimedOut", (StageTimedOut,), {"detail": detail}))
            return
        del self.calls[token]
        if call.marker.exists():  # the call did not unwind: blocked outside Python code (a marker gone: it did,
            _mark_timeout(call.marker)  # the exception arrived before its stop())
            _exit(f"error: {call.where} ran past its time bound of {call.seconds:g} s and cannot be stopped in this "
                  "process (a run without Ray); run the same command with --resume: it goes through Ray, which "
                  "fails the hanging row alone (stage_timeout)")


@dataclass
class _Call:
    """A watched call: when it is due, what to mark and say, the thread that runs it."""
    deadline: float
    marker: object
    where: str
    seconds: float
    thread: int
    in_driver: bool
    interrupted: bool = False  # StageTimedOut was sent to its thread (a run without Ray)


def _set_async_exc(thread: int, exc) -> None:
    """Raise `exc` (a class) in thread `thread` at its next Python instruction; None clears one not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc) if exc else None)


def _mark_timeout(marker) -> None:
    """Turn a running call's range marker into a timeout marker (the next try reads it)."""
    with contextlib.suppress(OSError):
        marker.rename(marker.with_name(marker.name[:-len(_MARK)] + _TIMEOUT))


def _exit(line: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    os._exit(1)


_WATCHDOG = _Watchdog()


class StageCrashLoop(RuntimeError):
    """A stage kills its worker process on a part more than a few rows can explain: the run stops (one line)."""


class CrashWatch:
    """The crash markers of one stage on one part (a folder that Path or UPath can address).

    A range marker left behind is a death. After a death, calls that return leave a `passed` marker (on a
    first try they leave nothing: most parts never die, and their folders stay empty), so the next try can
    tell a stage that dies on a few rows from one that dies on every row."""

    def __init__(self, folder, stage_key: str, where: str = "", limit: int | None = MAX_PART_CRASHES,
                 bound: CallBound | None = None, in_driver: bool = False):
        self.folder, self.key, self.where, self.limit = folder, stage_key, where, limit
        self.bound, self.in_driver = bound, in_driver  # no bound: calls are not timed
        self.crashed: list[frozenset[str]] = []
        self.timed_out: set[frozenset[str]] = set()  # the ranges among `crashed` that ran past their bound
        self.passed: set[str] = set()
        for name, uids in self._markers():
            if name.endswith(_PASSED):
                self.passed.update(uids)
                continue
            self.crashed.append(frozenset(uids))
            if name.endswith(_TIMEOUT):
                self.timed_out.add(self.crashed[-1])

    def _markers(self):
        if not self.folder.exists():
            return
        for f in self.folder.iterdir():
            if f.name.startswith(self.key + ".") and f.name.endswith((_MARK, _PASSED, _TIMEOUT)):
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

        timed = {next(iter(s)) for s in self.timed_out if len(s) == 1}

        def guarded(lo: int, hi: int):
            if suspect(lo, hi):
                if hi - lo == 1 and uids[lo] in timed:
                    raise RangeTimedOut(self.where or self.key, self.bound.seconds(1) if self.bound else 0)
                rows = set(uids[lo:hi])
                raise RangeCrashed(hi - lo, any(s & now <= rows for s in self.timed_out))
            with self._marker(uids[lo:hi]) as marker, self._timed(marker, hi - lo):
                token = _current.set(None)  # a stage nested inside this call is covered by this marker
                try:
                    return call(lo, hi)
                finally:
                    _current.reset(token)
        return guarded, suspect

    @contextmanager
    def _timed(self, marker, rows: int):
        """Within the block, the call on `rows` rows runs under its bound (the module's docstring)."""
        seconds = self.bound.seconds(rows) if self.bound is not None else None
        if seconds is None:
            yield
            return
        token = _WATCHDOG.start(time.monotonic() + seconds, marker, self.where or self.key, seconds, self.in_driver)
        try:
            yield
        finally:
            _WATCHDOG.stop(token)

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
        if len(self.timed_out) * 2 > len(self.crashed):  # mostly calls that ran past their bound
            raise StageCrashLoop(f"{self.where or self.key}: the stage ran past its time bound {why}, so the stage, "
                                 "not a few rows, is too slow or hangs: committed parts are kept; raise the stage's "
                                 "row_timeout_s / call_timeout_s (or fix the stage), then --resume")
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
            yield path
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
