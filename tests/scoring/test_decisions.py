"""clip_threshold and clip_top_fraction on constructed scores: exact cut, deterministic ties, unscored rows untouched."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.filters.clip_score import ClipThreshold, ClipTopFraction
from curate.stage import apply_decisions, run_job_local, run_local


def scored(scores, status=None) -> pa.Table:
    n = len(scores)
    status = status or ["ok"] * n
    return pa.table({"uid": [f"u{i:03d}" for i in range(n)], "part": pa.array([i % 2 for i in range(n)], pa.int32()),
                     "status": status, "stage": pa.array([None if s == "ok" else "download" for s in status], pa.string()),
                     "reason": pa.array([None if s == "ok" else "download_http_404" for s in status], pa.string()),
                     "error": pa.nulls(n, pa.string()), "clip_score": pa.array(scores, pa.float32()),
                     "dup_of": pa.nulls(n, pa.string()), "clip_rank": pa.nulls(n, pa.int64())})


def test_threshold_drops_below_and_keeps_unscored():
    t = scored([0.1, 0.3, 0.29999, None, float("nan"), 0.9], status=["ok"] * 6)
    out = run_local([ClipThreshold(min_score=0.3)], t)
    assert out.column("status").to_pylist() == ["dropped", "ok", "dropped", "ok", "ok", "ok"]
    assert out.column("reason").to_pylist()[0] == "clip_score_low"
    assert out.column("stage").to_pylist()[0] == "clip_threshold"


def test_threshold_leaves_failed_rows_alone():
    t = scored([0.0, 0.0], status=["failed", "ok"])
    out = run_local([ClipThreshold(min_score=0.5)], t)
    assert out.column("status").to_pylist() == ["failed", "dropped"]
    assert out.column("reason").to_pylist() == ["download_http_404", "clip_score_low"]


@pytest.mark.parametrize("fraction, keep", [(0.3, 30), (0.5, 50), (1.0, 100), (0.005, 1), (0.001, 0)])
def test_top_fraction_keeps_exactly_the_top(fraction, keep):
    rng = np.random.default_rng(0)
    s = rng.permutation(100) / 100.0  # distinct scores 0.00..0.99
    t = scored(s.tolist())
    job = ClipTopFraction(fraction=fraction)
    out = apply_decisions(t, job, run_job_local(job, t))
    kept = np.array(out.column("status").to_pylist()) == "ok"
    assert kept.sum() == keep
    if 0 < keep < 100:
        assert s[kept].min() > s[~kept].max()
    reasons = set(out.column("reason").to_pylist()) - {None}
    assert reasons <= {"clip_score_not_top"}
    ranks = out.column("clip_rank").to_pylist()
    assert sorted(ranks) == list(range(100))
    assert ranks[int(np.argmax(s))] == 0


def test_top_fraction_ties_are_broken_by_uid():
    t = scored([0.5] * 10)
    job = ClipTopFraction(fraction=0.3)
    out = apply_decisions(t, job, run_job_local(job, t))
    assert [u for u, s in zip(out.column("uid").to_pylist(), out.column("status").to_pylist()) if s == "ok"] \
        == ["u000", "u001", "u002"]
    again = t.take(pa.array(np.random.default_rng(1).permutation(10)))  # input order does not matter
    out2 = apply_decisions(again, job, run_job_local(job, again))
    assert sorted(u for u, s in zip(out2.column("uid").to_pylist(), out2.column("status").to_pylist()) if s == "ok") \
        == ["u000", "u001", "u002"]


def test_top_fraction_counts_only_scored_active_rows():
    # 4 failed rows and 2 unscored rows are neither counted nor changed
    t = scored([0.9, 0.8, 0.7, 0.6, None, None, 0.1, 0.2, 0.3, 0.4],
               status=["ok"] * 6 + ["failed"] * 4)
    job = ClipTopFraction(fraction=0.5)
    out = apply_decisions(t, job, run_job_local(job, t))
    assert out.column("status").to_pylist() == ["ok", "ok", "dropped", "dropped", "ok", "ok"] + ["failed"] * 4
    assert out.column("reason").to_pylist()[6:] == ["download_http_404"] * 4
