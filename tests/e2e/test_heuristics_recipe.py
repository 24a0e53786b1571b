"""The shipped `image_text_heuristics` recipe on the demo corpus: every row accounted for, the heuristic
filters keep the clean demo samples, and balancing caps the head of the demo vocabulary."""
from __future__ import annotations

from collections import Counter

import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate import schema
from curate.demo.run import truth_table
from curate.recipe import load_recipe
from curate.runner import Runner


def test_heuristics_recipe_on_demo(ray_address, demo_corpus, demo_urls, tmp_path):
    out = tmp_path / "out"
    rec = load_recipe("image_text_heuristics", ["output.samples_per_shard=64", "metaclip_balance.t=12"],
                      input_path=str(demo_urls), output_path=str(out))
    manifest = Runner(rec, ray_address=ray_address).start()
    rows = pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()
    assert len(rows) == 300 == manifest["counts"]["rows"]
    assert all(r["reason"] in schema.REASONS for r in rows if r["status"] != schema.OK)
    # the planted noise the base recipe catches is still caught, by the same stage
    for t in truth_table(out, demo_corpus):
        if t["noise"] in ("boilerplate_caption", "tiny_image", "extreme_aspect", "http_404", "corrupt_bytes"):
            assert t["as_expected"] == t["rows"], t
    # demo captions are never links / repeated tokens; almost no demo picture reads as blank (a shape whose
    # colour matches its plain background can)
    stages = Counter(r["stage"] for r in rows if r["status"] == schema.DROPPED)
    assert stages["image_quality"] <= 3 and stages["text_quality"] == 0
    kept = [r for r in rows if r["status"] == schema.OK]
    assert kept and all(r["balance_entries"] and r["language"] for r in kept)
    # balancing sub-sampled the head (the biggest entry lost rows); tail entries (<= t) kept all of theirs
    counts = pq.read_table(out / "balance_counts.parquet").to_pylist()
    assert counts[0]["matched"] > 12 and counts[0]["balanced"] < counts[0]["matched"]
    assert all(c["balanced"] == c["matched"] for c in counts if c["matched"] <= 12)
    assert stages["metaclip_balance"] > 0
    assert "Balancing" in (out / "report.html").read_text()
