"""bench/crash_isolation.py at --quick scale: a task stage on 32 rows with no crashing row and with one (a
real segfault), every row accounted for, the deaths read from the run's crash markers agreeing with the
stage's own log, the markers' cost per stage call measured, and --record rendering the numbers. The runs
connect to the session's Ray (the ray_address fixture) instead of starting one each, to stay cheap.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_quick_run_and_record(ray_address, tmp_path, monkeypatch):
    from bench import _common, crash_isolation

    r = crash_isolation.main(["--quick", "--work", str(tmp_path / "work")])
    clean, crashed = r["runs"]
    assert (clean["crashers"], clean["deaths"], clean["kept"], clean["failed"]) == (0, 0, 32, {})
    assert crashed["crashers"] == 1 and crashed["crasher_rows"] == [16]
    # one crashing row in 32 rows: about log2(32) + 1 deaths, each left a range marker
    assert 4 <= crashed["deaths"] <= 7 and crashed["deaths"] == crashed["segfaults"]
    assert crashed["kept"] == 31 and crashed["failed"] == {"bench_crash_task/stage_crashed": 1}
    assert not clean["accounting_problem"] and not crashed["accounting_problem"]
    assert crashed["work_ratio"] > 1 and crashed["extra_work_s_per_death"] > 0
    m = r["markers"]
    assert m["markers_ms"] > 0 and m["direct_ms"] > 0 and abs(m["ratio"] - m["markers_ms"] / m["direct_ms"]) < 0.01
    saved = json.loads((tmp_path / "work" / "results.json").read_text())
    assert saved["runs"] == r["runs"]

    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(_common, "RESULTS", results)
    crash_isolation.record(saved, "results.json")
    text = results.read_text()
    assert "## crash-isolation" in text and f"**+{m['overhead_ms']:.3f} ms**" in text
    assert f"| task | 1 | {crashed['wall_s']:.1f} |" in text
