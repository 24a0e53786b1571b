"""The near-dup job through the real runner: the in-driver path and the Ray shuffle path give identical clusters."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.recipe import build_recipe
from curate.runner import Runner

from ._corpus import planted_corpus


def _run(tmp_path, name, local_max, texts, **job):
    src = tmp_path / "in.parquet"
    if not src.exists():
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(texts))], "caption": texts}), src)
    recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                           "output": {"path": str(tmp_path / name), "samples_per_shard": 150},
                           "ray": {"job_local_max_rows": local_max},
                           "stages": [{"minhash_dedup": job}]})
    Runner(recipe).start()
    t = pq.read_table(str(tmp_path / name / "meta"))
    return {r["uid"]: (r["status"], r["reason"], r["dup_of"], r["minhash_cluster"]) for r in t.to_pylist()}


def test_local_and_ray_paths_agree(tmp_path, ray_address):
    texts = planted_corpus(80, seed=3) + ["", "   "]
    local = _run(tmp_path, "local", 10**6, texts)
    on_ray = _run(tmp_path, "ray", 0, texts)
    assert local == on_ray
    assert len(local) == len(texts)
    reasons = [v[1] for v in local.values()]
    assert reasons.count("near_dup_empty_text") == 2
    assert reasons.count("near_duplicate") > 50
    kept = {u for u, v in local.values() and local.items() if v[0] == "ok"}
    assert all(v[2] in kept for v in local.values() if v[1] == "near_duplicate")
