"""Progress a user can watch, and how loud the CLI is.

Three parts, all cheap:
- verbosity: one level (`-v`/`-q` or CURATE_LOG_LEVEL) decides curate's log level, whether Ray's start-up
  warnings and worker logs reach the terminal, and whether progress is drawn at all;
- per-stage counts: after a stage runs over a part, the worker computes rows in / kept / dropped / failed and
  the stage's seconds (`stage_counts`). They travel with the part as Arrow schema metadata (`carry`), so
  the commit task hands them to the driver at no extra cost; the manifest's `stage_timings` sums them;
- live view: while a part is in flight, workers also send those counts (and, from long stages such as
  download, a row tick every second at most) to a small `ProgressSink` actor that the driver polls; the
  CLI draws them with rich on a terminal, and as one plain line per stage every CURATE_PROGRESS_INTERVAL
  seconds (default 30) when stderr is not a terminal (CI, nohup, cluster job logs).
This module never imports Ray: the runner wraps `ProgressSink` in an actor.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_override: int | None = None


def parse_level(value: str) -> int:
    """A level name (debug, info, warning, error) or number; ValueError for anything else."""
    v = value.strip().lower()
    if v in LEVELS:
        return LEVELS[v]
    if v.isdigit():
        return int(v)
    raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {value!r}")


def log_level() -> int:
    """The level the CLI set (-v/-q), else CURATE_LOG_LEVEL, else warning."""
    if _override is not None:
        return _override
    try:
        return parse_level(os.environ.get("CURATE_LOG_LEVEL") or "warning")
    except ValueError:
        return logging.WARNING


def set_log_level(level: int | None) -> None:
    """Set (or with None, forget) the level for this process, and apply it to the `curate` logger."""
    global _override
    _override = level
    logging.getLogger("curate").setLevel(log_level())


def ray_verbose() -> bool:
    """Whether Ray's own warnings and worker logs are shown: with -v (info or lower), or CURATE_RAY_LOGS=1."""
    return log_level() <= logging.INFO or bool(os.environ.get("CURATE_RAY_LOGS"))


def quiet() -> bool:
    """-q: no progress display, only results and errors."""
    return log_level() >= logging.ERROR


def interval() -> float:
    """Seconds between plain progress lines when stderr is not a terminal (CURATE_PROGRESS_INTERVAL)."""
    try:
        return max(0.1, float(os.environ.get("CURATE_PROGRESS_INTERVAL") or 30))
    except ValueError:
        return 30.0


# ---------------------------------------------------------------------------------------------------------
# per-stage counts (worker side)

COUNT_KEYS = ("rows", "in", "kept", "dropped", "failed")
META_KEY = b"curate.stage_counts"


def stage_counts(before: pa.Table, after: pa.Table, name: str, seconds: float) -> dict:
    """What stage `name` did to one part: rows that passed, rows in play before/after, rows it dropped or
    failed, and its seconds. Derived rows (clips) count as kept."""
    def decided(t: pa.Table, status: str) -> int:
        m = pc.and_(pc.equal(t.column("status"), status), pc.equal(t.column("stage"), name))
        return int(pc.sum(pc.fill_null(m, False)).as_py() or 0)

    def active(t: pa.Table) -> int:
        return int(pc.sum(pc.fill_null(pc.equal(t.column("status"), "ok"), False)).as_py() or 0)

    return {"rows": before.num_rows, "in": active(before), "kept": active(after),
            "dropped": decided(after, "dropped") - decided(before, "dropped"),
            "failed": decided(after, "failed") - decided(before, "failed"), "seconds": round(seconds, 4)}


def merge(into: dict, counts: dict) -> dict:
    """Add one part's counts of a stage into a running total (in place; returns it)."""
    for k in (*COUNT_KEYS, "seconds"):
        into[k] = round(into.get(k, 0) + counts.get(k, 0), 4)
    return into


def carried(table: pa.Table) -> dict:
    """{part: {stage: counts}} carried by a block (empty when none)."""
    meta = table.schema.metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


def carry(table: pa.Table, per_part: dict) -> pa.Table:
    """`table` with `per_part` ({part: {stage: counts}}) in its schema metadata, for the commit task."""
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(per_part).encode()
    return table.replace_schema_metadata(meta)


# ---------------------------------------------------------------------------------------------------------
# live view: worker -> ProgressSink actor -> driver


class ProgressSink:
    """Collects per-stage counts from workers (run as a Ray actor with num_cpus=0; the driver polls it)."""

    def __init__(self):
        self.done: dict[tuple, dict] = {}
        self.flight: dict[tuple, int] = {}
        self.first: dict[str, float] = {}  # when a stage first reported (this actor's clock)

    def _seen(self, stage: str) -> None:
        self.first.setdefault(stage, time.time())

    def stage_done(self, stage: str, part: int, counts: dict) -> None:
        self._seen(stage)
        self.done[(stage, part)] = counts
        self.flight.pop((stage, part), None)

    def tick(self, stage: str, part: int, rows: int) -> None:
        self._seen(stage)
        if (stage, part) not in self.done:
            self.flight[(stage, part)] = rows

    def snapshot(self) -> dict:
        """{stage: counts summed over finished parts, plus `rows` ticked by parts in flight, plus `active_s`:
        seconds since the stage first reported (rates leave out Ray's start-up and the stages before)}."""
        out: dict[str, dict] = {}
        for (stage, _), c in self.done.items():
            merge(out.setdefault(stage, {}), c)
        for (stage, _), n in self.flight.items():
            s = out.setdefault(stage, {})
            s["rows"] = s.get("rows", 0) + n
        now = time.time()
        for stage, s in out.items():
            s["active_s"] = now - self.first.get(stage, now)
        return out


_current: dict | None = None  # the stage a worker is running, while a sink listens


@contextmanager
def reporting(sink, stage: str, part: int):
    """Inside, `tick()` sends this stage's rows done in `part` to `sink` (at most once a second)."""
    global _current
    _current = None if sink is None else {"sink": sink, "stage": stage, "part": part, "rows": 0, "sent": 0.0}
    try:
        yield
    finally:
        _current = None


def tick(rows: int = 1) -> None:
    """A long stage finished `rows` more rows of its part: cheap, and a no-op unless a sink listens."""
    cur = _current
    if cur is None:
        return
    cur["rows"] += rows
    now = time.time()
    if now - cur["sent"] >= 1.0:
        cur["sent"] = now
        try:
            cur["sink"].tick.remote(cur["stage"], cur["part"], cur["rows"])
        except Exception:  # noqa: BLE001 - progress is a view: it never fails a row
            pass


# ---------------------------------------------------------------------------------------------------------
# driver side: drawing


def duration(seconds: float | None) -> str:
    """1h02m, 3m05s, 42s; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def stage_line(name: str, c: dict, total: int, elapsed: float) -> str:
    """`download: 3000/10000 rows (30%), kept 2800, dropped 100, failed 100, 97 rows/s, ETA 1m12s`.

    The rate counts from the stage's first report (`active_s`) when known, else from `elapsed`."""
    rows = min(c.get("rows", 0), total) if total else c.get("rows", 0)
    secs = c.get("active_s") or elapsed
    rate = rows / secs if secs > 0 else 0.0
    eta = (total - rows) / rate if rate > 0 and total else None
    pct = f" ({100 * rows / total:.0f}%)" if total else ""
    when = "done" if total and rows >= total else f"ETA {duration(eta)}"
    return (f"{name}: {rows}/{total} rows{pct}, kept {c.get('kept', 0)}, dropped {c.get('dropped', 0)}, "
            f"failed {c.get('failed', 0)}, {rate:.1f} rows/s, {when}")


class ProgressView:
    """Draws the runner's progress: rich bars per stage on a terminal, else plain lines every `every` seconds.

    Feed it with `parts(label, done, total)` (Runner.on_progress) and `rows(event)` (Runner.on_rows)."""

    def __init__(self, console, every: float | None = None, enabled: bool = True):
        self.console, self.every = console, interval() if every is None else every
        self.enabled = enabled and not quiet()
        self.live = self.enabled and console.is_terminal
        self.started = time.time()
        self.last_line = time.time()
        self._bars = None
        self._tasks: dict[str, int] = {}

    # -- context: the rich display lives only while the run does
    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                                  TimeElapsedColumn(), console=self.console, transient=False)
            self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    def _bar(self, key: str, description: str, done: float, total: float, stats: str) -> None:
        if self._bars is None:
            return
        if key not in self._tasks:
            self._tasks[key] = self._bars.add_task(description, total=total or None, stats=stats)
        self._bars.update(self._tasks[key], completed=done, total=total or None, stats=stats)

    def _print(self, line: str) -> None:
        self.console.print(f"[{duration(time.time() - self.started)}] {line}", highlight=False, markup=False,
                           soft_wrap=True)

    def parts(self, label: str, done: int, total: int) -> None:
        """Parts committed (segments) or a job's 0/1 -> 1/1."""
        if not self.enabled:
            return
        if self.live:
            self._bar(f"parts:{label}", label, done, total, f"{done}/{total} parts")
        elif done == total:
            self._print(f"{label}: {done}/{total} parts")

    def rows(self, event: dict) -> None:
        """A poll of the run: {"phase": "segment", "stages": {name: counts}, "total": rows, "elapsed": s}
        or {"phase": "job", "name": ..., "elapsed": s}."""
        if not self.enabled:
            return
        if self.live:
            for name, c in event.get("stages", {}).items():
                rows = min(c.get("rows", 0), event["total"] or c.get("rows", 0))
                self._bar(f"rows:{name}", f"  {name}", rows, event["total"],
                          stage_line(name, c, event["total"], event["elapsed"]).split(": ", 1)[1])
            return
        if time.time() - self.last_line < self.every:
            return
        self.last_line = time.time()
        if event.get("phase") == "job":
            self._print(f"job {event['name']}: running for {duration(event['elapsed'])}")
            return
        stages = event.get("stages") or {}
        if not stages and event.get("order"):
            self._print(f"{event.get('label', 'segment')}: starting ({duration(event['elapsed'])})")
        for name in event.get("order", list(stages)):
            if name in stages:
                self._print(stage_line(name, stages[name], event["total"], event["elapsed"]))
