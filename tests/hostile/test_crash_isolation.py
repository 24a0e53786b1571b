"""curate.crash_isolation without Ray: a marker names the rows of a stage call while it runs and goes when
the call returns or raises; one left by a process that died makes the next try split that range, down to
the row that fails alone as `stage_crashed`. (A real process dies here, of a real segmentation fault:
ctypes reading address 0; the end-to-end runs through Ray are in test_worker_crash.py.)"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import pyarrow as pa
import pytest

from curate import crash_isolation, schema
from curate.crash_isolation import CrashWatch, StageCrashLoop, setup_guard, watching
from curate.models.clip import ModelLoadError
from curate.stage import Annotations, Stage


class Seen(Stage):
    """Records the texts of every call; segfaults on `die` when DIE is set (a child process only)."""

    name: ClassVar[str] = "test_seen"
    calls: ClassVar[list[list[str]]] = []

    def annotate(self, active: pa.Table) -> Annotations:
        texts = active.column("text").to_pylist()
        type(self).calls.append(texts)
        if "die" in texts and os.environ.get("DIE"):
            ctypes.string_at(0)  # SIGSEGV
        if "raise" in texts:
            raise ValueError("a Python error, not a crash")
        return Annotations()


def _table(texts) -> pa.Table:
    t = pa.table({"uid": [f"u{i}" for i in range(len(texts))], "text": texts})
    t = schema.conform(t, schema.run_schema({}))
    return t.set_column(t.column_names.index("status"), "status", pa.array([schema.OK] * len(texts), pa.string()))


TEXTS = ["a", "b", "c", "d", "e", "die", "f", "g"]
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from test_crash_isolation import Seen, _table, TEXTS
    from curate.crash_isolation import CrashWatch, watching
    from pathlib import Path
    with watching(CrashWatch(Path({folder!r}), "0-test_seen")):
        Seen().run(_table(TEXTS))
    print("survived")
""")


def _try_in_child(folder) -> int:
    """One try of the part in a fresh process (as Ray retries it in a new worker): its exit code."""
    code = CHILD.format(here=os.path.dirname(__file__), folder=str(folder))
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "DIE": "1"},
                          capture_output=True).returncode  # (Python's fault handler prints to stderr)


def test_markers_go_when_a_call_returns_or_raises(tmp_path):
    Seen.calls.clear()
    with watching(CrashWatch(tmp_path, "0-test_seen")):
        out = Seen().run(_table(["a", "raise", "b"]))
    assert out.column("reason").to_pylist() == [None, "stage_error", None]  # a Python error: isolated as before
    assert list(tmp_path.iterdir()) == []  # every marker removed: no call died


def test_a_row_that_kills_the_process_is_narrowed_down_over_tries_and_fails_alone(tmp_path):
    codes = []
    for _ in range(6):
        codes.append(_try_in_child(tmp_path))
        if codes[-1] == 0:
            break
    # 8 rows: the whole part died, then [4, 8), [4, 6), [5, 6); the 5th try skips row 5 and lives
    assert codes == [-11, -11, -11, -11, 0], codes  # killed by SIGSEGV four times
    Seen.calls.clear()
    with watching(CrashWatch(tmp_path, "0-test_seen")):  # what the 5th try did, in this process
        out = Seen().run(_table(TEXTS))
    assert out.column("reason").to_pylist() == [None] * 5 + ["stage_crashed", None, None]
    assert "worker process died" in out.column("error")[5].as_py()
    assert ["die"] not in Seen.calls and sum(len(c) for c in Seen.calls) == 7  # every other row was called once
    assert len(list(tmp_path.glob("*.range.json"))) == 4  # the four deaths' markers; this try's calls all returned
    assert list(tmp_path.glob("*.passed.json"))  # after a death, calls that return leave evidence for the next try


def test_markers_of_another_stage_or_of_rows_no_longer_in_play_are_ignored(tmp_path):
    for _ in range(2):
        assert _try_in_child(tmp_path) == -11
    Seen.calls.clear()
    with watching(CrashWatch(tmp_path, "1-test_seen")):  # the same stage at another position: not its markers
        Seen().run(_table(["a", "b"]))
    assert Seen.calls == [["a", "b"]]
    Seen.calls.clear()
    with watching(CrashWatch(tmp_path, "0-test_seen")):  # rows [4, 8) left the batch between tries
        Seen().run(_table(TEXTS[:4]))
    # the first death's range still holds these four, so they are not called together; the [4, 8) death's
    # rows are gone, so nothing narrows further
    assert Seen.calls == [TEXTS[:2], TEXTS[2:4]]


def _deaths(folder, *ranges) -> None:
    for i, uids in enumerate(ranges):
        (folder / f"0-test_seen.d{i}.range.json").write_text(json.dumps(list(uids)))


def test_rows_dying_alone_with_none_passing_stop_the_part_past_the_isolation_cost(tmp_path):
    """The evidence rule, as `isolate` applies it to exceptions: once the deaths exceed what isolating two
    rows costs (2 log2 n + 1: 5 for 4 rows), fewer rows passing than dying alone means the stage fails."""
    rows = ["u0", "u1", "u2", "u3"]
    _deaths(tmp_path, rows, rows[:2], ["u0"], rows[2:], ["u2"], ["u1"])  # 6 deaths, 3 rows alone, none passed
    with pytest.raises(StageCrashLoop, match="stage test_seen on part 0: the worker process died on 3 rows alone "
                                             "while 0 passed"):
        CrashWatch(tmp_path, "0-test_seen", "stage test_seen on part 0").guard(lambda lo, hi: None, rows)
    (tmp_path / "0-test_seen.p.passed.json").write_text(json.dumps(["u2", "u3"]))  # later tries: rows passed
    (tmp_path / "0-test_seen.q.passed.json").write_text(json.dumps(["u0", "u1"]))
    CrashWatch(tmp_path, "0-test_seen").guard(lambda lo, hi: None, rows)  # as many passed as died alone: go on
    with pytest.raises(StageCrashLoop, match=r"died 6 times \(ray.max_part_crashes\)"):  # the hard bound
        CrashWatch(tmp_path, "0-test_seen", limit=6).guard(lambda lo, hi: None, rows)


def test_a_part_of_only_crashing_rows_has_them_isolated_not_the_run_stopped(tmp_path):
    """--retry-failed puts only the failed rows in new parts: two rows that crash, and nothing else. Their
    three deaths are what isolating them costs; the rows fail alone (it stopped the retried run and left
    the finished one 'running')."""
    _deaths(tmp_path, ["u0", "u1"], ["u0"], ["u1"])
    Seen.calls.clear()
    with watching(CrashWatch(tmp_path, "0-test_seen", "stage test_seen on part 0")):
        out = Seen().run(_table(["die", "die"]))
    assert out.column("reason").to_pylist() == ["stage_crashed", "stage_crashed"] and Seen.calls == []


def test_without_a_watch_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Seen().run(_table(["a", "b"]))
    assert crash_isolation.current() is None and list(tmp_path.iterdir()) == []


def test_a_model_load_that_keeps_killing_its_process_is_refused(tmp_path):
    code = textwrap.dedent(f"""
        import ctypes
        from pathlib import Path
        from curate.crash_isolation import setup_guard
        with setup_guard(Path({str(tmp_path)!r}), "2-model", "model"):
            ctypes.string_at(0)  # SIGSEGV while loading
    """)
    for _ in range(2):
        assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == -11
    with pytest.raises(ModelLoadError, match="died while setting up .* 2 times"):
        with setup_guard(tmp_path, "2-model", "model"):
            pass
    with setup_guard(tmp_path, "3-other", "other"):  # another stage's loads are not this one's
        assert len(list(tmp_path.glob("setup.3-other.*"))) == 1  # a live load's marker names this process
    assert not list(tmp_path.glob("setup.3-other.*"))
