"""The near-dup job through the real runner: the in-driver path and the Ray shuffle path give identical clusters."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curate.recipe import build_recipe
from curate.runner import Runner

from ._corpus import planted_corpus


def _run(tmp_path, name, local_max, texts, max_edges=2_000_000, prepass="on", **job):
    src = tmp_path / "in.parquet"
    if not src.exists():
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(texts))], "caption": texts}), src)
    recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                           "output": {"path": str(tmp_path / name), "samples_per_shard": 150},
                           "ray": {"job_local_max_rows": local_max, "job_components_max_edges": max_edges,
                                   "job_key_prepass": prepass},
                           "stages": [{"minhash_dedup": job}]})
    manifest = Runner(recipe).start()
    t = pq.read_table(str(tmp_path / name / "meta"))
    return {r["uid"]: (r["status"], r["reason"], r["dup_of"], r["minhash_cluster"]) for r in t.to_pylist()}, manifest["jobs"]


def test_local_and_ray_paths_agree(tmp_path, ray_address, monkeypatch):
    texts = planted_corpus(80, seed=3) + ["", "   "]
    with monkeypatch.context() as m:  # no Ray address: the whole run in this process (ray.in_process_max_rows)
        m.delenv("RAY_ADDRESS")
        local, local_job = _run(tmp_path, "local", 10**6, texts)
    assert local_job["job0:minhash_dedup"].get("in_process") is True
    on_ray, ray_job = _run(tmp_path, "ray", 0, texts, max_edges=0)
    one_task, one_task_job = _run(tmp_path, "ray-one-task", 0, texts, prepass="auto")  # one node: no pre-pass
    assert local_job["job0:minhash_dedup"]["path"] == "driver"
    # components found as shuffle rounds on Ray, or in one worker task: the clusters are identical
    assert ray_job["job0:minhash_dedup"]["path"] == "ray" and ray_job["job0:minhash_dedup"]["rounds"] >= 2
    assert one_task_job["job0:minhash_dedup"]["path"] == "ray" and one_task_job["job0:minhash_dedup"]["rounds"] == 0
    assert local == one_task and "shared_keys" not in one_task_job["job0:minhash_dedup"]
    # the key pre-pass shipped full records only for band keys seen twice or more
    bands = 9  # lsh_params(0.8, 128)
    assert 0 < ray_job["job0:minhash_dedup"]["shared_keys"] < bands * len(texts) // 2
    assert local == on_ray
    assert len(local) == len(texts)
    reasons = [v[1] for v in local.values()]
    assert reasons.count("near_dup_empty_text") == 2
    assert reasons.count("near_duplicate") > 50
    kept = {u for u, v in local.items() if v[0] == "ok"}
    assert all(v[2] in kept for v in local.values() if v[1] == "near_duplicate")


def test_exact_then_near_dup_across_input_sources(tmp_path, ray_address):
    """Two jobs in a row over an input folder of two files: exact text dups and near dups across files."""
    src = tmp_path / "in"
    src.mkdir()
    a = ["a dog runs on the beach at sunset with a ball", "a cat sleeps on a red sofa in the afternoon sun",
         "three birds sit on a wire above the old street"]
    b = ["a dog runs on the beach at sunset with a ball",          # exact text dup of a[0], other file
         "A cat sleeps on a red sofa in the afternoon sun!",       # near dup of a[1]: exact text dedup keeps the '!'
         "three birds sit on a wire above the old street today"]   # near dup of a[2]
    pq.write_table(pa.table({"url": [f"http://a/{i}" for i in range(3)], "caption": a}), src / "a.parquet")
    pq.write_table(pa.table({"url": [f"http://b/{i}" for i in range(3)], "caption": b}), src / "b.parquet")
    recipe = build_recipe({"name": "t", "input": {"path": str(src)}, "output": {"path": str(tmp_path / "out")},
                           "stages": [{"exact_dedup": {"by": "text"}}, {"minhash_dedup": {"threshold": 0.7}}]})
    Runner(recipe).start()
    by_url = {r["url"]: r for r in pq.read_table(str(tmp_path / "out" / "meta")).to_pylist()}
    assert {by_url["http://a/0"]["reason"], by_url["http://b/0"]["reason"]} == {None, "duplicate_text"}
    assert {by_url["http://a/1"]["reason"], by_url["http://b/1"]["reason"]} == {None, "near_duplicate"}
    assert {by_url["http://a/2"]["reason"], by_url["http://b/2"]["reason"]} == {None, "near_duplicate"}
    kept = [r for r in by_url.values() if r["status"] == "ok"]
    assert len(kept) == 3 and all(r["minhash_cluster"] for r in kept)


def test_ray_path_with_no_shared_keys(tmp_path, ray_address):
    """All-distinct texts: the pre-pass finds no key seen twice, the main shuffle carries nothing, every row kept."""
    texts = [f"unique caption number {i} about {w}" for i, w in enumerate(["cats", "dogs", "boats", "trees"] * 5)]
    on_ray, job = _run(tmp_path, "ray", 0, texts)
    assert job["job0:minhash_dedup"]["shared_keys"] == 0 and job["job0:minhash_dedup"]["decisions"] == 0
    assert [v[0] for v in on_ray.values()] == ["ok"] * len(texts)


def test_in_process_run_matches_the_reference_job(tmp_path, monkeypatch):
    """No Ray address: a run of two jobs (three segments) in this process; its near-dup decisions are those
    of the map/group/reduce reference (run_job_local) on the same rows."""
    from curate import schema
    from curate.dedup.minhash import MinHashDedup
    from curate.stage import run_job_local

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    texts = planted_corpus(25, seed=5) + ["", "!!"] + planted_corpus(25, seed=5)[:10]  # exact copies too
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(texts))], "caption": texts}), src)
    recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                           "output": {"path": str(tmp_path / "out"), "samples_per_shard": 40},
                           "stages": [{"exact_dedup": {"by": "text"}}, {"minhash_dedup": {}}]})
    m = Runner(recipe).start()
    assert m["jobs"]["job0:exact_dedup"]["in_process"] and m["jobs"]["job1:minhash_dedup"]["in_process"]
    meta = pq.read_table(str(tmp_path / "out" / "meta"))
    assert meta.num_rows == len(texts)
    rows = meta.to_pylist()
    assert sum(r["reason"] == "duplicate_text" for r in rows) >= 10
    # the reference over the rows exact_dedup left active, with the parts the run gave them
    left = [r for r in rows if r["reason"] != "duplicate_text"]
    t = schema.conform(pa.table({"uid": [r["uid"] for r in left], "part": pa.array([r["part"] for r in left], pa.int32()),
                                 "text": [r["text"] for r in left], "status": ["ok"] * len(left)}),
                       schema.run_schema(MinHashDedup.writes))
    ref = {r["uid"]: (r["status"], r["reason"], r["dup_of"]) for r in run_job_local(MinHashDedup(), t).to_pylist()}
    got = {r["uid"]: (r["status"], r["reason"], r["dup_of"]) for r in left if r["uid"] in ref}
    assert got == ref and sum(v[1] == "near_duplicate" for v in got.values()) > 20
    assert sum(r["reason"] == "near_dup_empty_text" for r in rows) == 2
