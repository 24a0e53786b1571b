"""examples/capfilt_experiment.py end to end at tiny scale: the scored and CapFilt runs of the shipped recipe
(loopback server, Ray), the filter-only refilter, and a one-seed experiment with the three arms. The numbers
at this size are noise; this checks the plumbing, the cut and the accounting."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_capfilt_experiment_tiny_path(tmp_path, coca_ckpt, ray_address, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("capfilt_experiment", EXAMPLES / "capfilt_experiment.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    res = example.main(["--out", str(tmp_path), "--corpus", str(tmp_path / "corpus"), "--samples", "60",
                        "--eval-n", "64", "--valid-n", "32", "--filter-samples-seen", "64", "--coca", str(coca_ckpt),
                        "--samples-seen", "32", "--batch-size", "16", "--seeds", "1"])
    summary = res["capfilt"]
    metas = {n: pq.read_table(str(tmp_path / n / "meta")).to_pylist() for n in ("scored", "capfilt", "filter_only")}
    assert all(len(m) == 60 for m in metas.values())  # every input row accounted for in every run
    scores = sorted(r["clip_score"] for r in metas["scored"] if r["clip_score"] is not None)
    # the cut is the 70th percentile of the original captions' scores: about 30% of them at or above it
    above = sum(s >= summary["cut"] for s in scores)
    assert abs(above - 0.3 * len(scores)) <= 1.5
    # scored keeps both captions of every scored row; filter_only is scored cut at T on the original caption
    assert summary["caption_mix"]["scored"] == {"both": len(scores)}
    kept_fo = {r["uid"] for r in metas["filter_only"] if r["status"] == "ok"}
    assert kept_fo == {r["uid"] for r in metas["scored"] if r["status"] == "ok" and r["clip_score"] >= summary["cut"]}
    # capfilt keeps a sample when either caption passes the same bar, and only the passing captions
    for r in metas["capfilt"]:
        if r["clip_score"] is None:
            continue
        want = {(True, True): "both", (True, False): "original", (False, True): "recaption"}.get(
            (r["clip_score"] >= summary["cut"], (r["recaption_clip_score"] or -2) >= summary["cut"]))
        assert r["caption_kept"] == want and (r["status"] == "ok") == (want is not None)
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("capfilt", "filter_only"), ("capfilt", "recaption_only")}
    saved = json.loads((tmp_path / "experiment" / "results.json").read_text())
    assert saved["capfilt"]["cut"] == summary["cut"]
