"""`curate demo` with the filter CLIP: trains it on the seed split (short here), caches it, runs
image_text_clip, and reports precision/recall against the planted mismatched captions."""
from __future__ import annotations

import json
import re

import pyarrow.parquet as pq

from curate.validate import validate


def test_demo_trains_caches_and_applies_the_filter(ray_address, tmp_path, monkeypatch, cli_inprocess):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo-out"
    # the smallest demo the CLI allows, and a one-step filter: this checks the plumbing, not the filter's quality
    # (the demo's numbers are in README "Numbers")
    args = ("demo", "--samples", "200", "--output", str(out), "--filter-samples-seen", "64")
    res = cli_inprocess(*args)
    assert res.returncode == 0, res.stderr
    assert "training the filter CLIP" in res.stderr
    m = re.search(r"precision (\d\.\d\d), recall (\d\.\d\d)", res.stdout)
    assert m, res.stdout
    corpus = next((tmp_path / "cache" / "demo").iterdir())
    ckpt = corpus / "filter" / "filter_clip.pt"
    assert ckpt.is_file() and json.loads(ckpt.with_suffix(".json").read_text())["settings"]["samples_seen"] == 64
    assert validate(out)[0] == []
    meta = pq.read_table(str(out / "meta")).to_pylist()
    scored = [r for r in meta if r["clip_score"] is not None]
    dropped = [r for r in scored if r["reason"] == "clip_score_not_top"]
    assert scored and len(dropped) == len(scored) - int(0.9 * len(scored) + 0.5)
    html = (out / "report.html").read_text()
    assert "CLIP filter vs planted mismatched captions" in html and "clip_score" in html
    # the second demo reuses the cached filter
    res = cli_inprocess(*args)
    assert res.returncode == 0 and "training the filter CLIP" not in res.stderr
