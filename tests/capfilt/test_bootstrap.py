"""The CapFilt loop end to end at tiny scale: examples/capfilt_bootstrap.py trains the round-1 filter on the
seed split, runs the shipped image_text_capfilt recipe (loopback server, Ray), retrains the filter on the
output and measures both. The numbers at this size are noise; this checks the plumbing and the accounting."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "capfilt_bootstrap.py"


def test_bootstrap_tiny_path(tmp_path, coca_ckpt, ray_address):
    spec = importlib.util.spec_from_file_location("capfilt_bootstrap", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    res = example.main(["--out", str(tmp_path), "--samples", "48", "--filter-samples-seen", "64", "--batch-size", "16",
                        "--coca", str(coca_ckpt), "--min-score", "0.0", "--min-recaption-score", "0.0"])
    assert json.loads((tmp_path / "results.json").read_text())["rounds"] == res["rounds"]
    for r in res["rounds"].values():
        assert 0.0 <= r["filter"]["auc"] <= 1.0 and r["filter"]["mismatched"] > 0
        assert r["zeroshot_top1"] is not None
    meta = pq.read_table(str(tmp_path / "capfilt_run" / "meta")).to_pylist()
    assert len(meta) == 48  # every input row accounted for
    decided = [r for r in meta if r["caption_kept"] is not None]
    assert decided and {r["caption_kept"] for r in decided} <= {"original", "recaption", "both"}
    kept = {r["key"]: r for r in meta if r["status"] == "ok"}
    assert all(r["recaption_clip_score"] is not None for r in decided)  # rows: all -> every image has a synthetic caption
    # the shards hold exactly the kept captions (policy both) and nothing else
    seen = 0
    for tar in sorted((tmp_path / "capfilt_run" / "shards").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            r = kept[s["__key__"]]
            assert s["txt"].decode() == (r["text"] or "")
            assert ("recap.txt" in s) == (r["caption_kept"] == "both")
            seen += 1
    assert seen == len(kept) == sum(1 for r in decided if r["status"] == "ok")
    dropped = [r for r in decided if r["status"] == "dropped"]
    assert all(r["reason"] == "caption_select_none_pass" for r in dropped)
    assert res["round1_capfilt"]["mismatched_originals"] > 0
