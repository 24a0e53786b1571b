"""semantic_dedup (SemDeDup): k-means fit round, cosine threshold inside clusters, policies, bad vectors."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate import schema
from curate.dedup.semantic import SemanticDedup, spherical_kmeans
from curate.stage import apply_decisions, run_job_local


def _table(vectors, score=None):
    n = len(vectors)
    cols = {"uid": [f"u{i:05d}" for i in range(n)], "part": pa.array([i % 3 for i in range(n)], pa.int32()),
            "clip_image_embedding": pa.array(vectors, pa.list_(pa.float32())), "status": ["ok"] * n}
    extra = {"clip_image_embedding": pa.list_(pa.float32()), **SemanticDedup.writes}
    if score is not None:
        cols["clip_score"] = pa.array(score, pa.float64())
        extra["clip_score"] = pa.float64()
    return schema.conform(pa.table(cols), schema.run_schema(extra))


def test_near_copies_found_distinct_kept():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 64)).astype(np.float32)
    vecs, fam = [], []
    for f, v in enumerate(base):
        vecs.append(v.tolist())
        fam.append(f)
        for _ in range(f % 3):  # 0, 1 or 2 noisy copies (cosine about 0.99 to the base)
            vecs.append((v + rng.normal(scale=0.1, size=64)).tolist())
            fam.append(f)
    job = SemanticDedup(clusters=16, threshold=0.95)
    out = apply_decisions(_table(vecs), job, run_job_local(job, _table(vecs)))
    cl = np.array(out.column("semantic_cluster").to_pylist())
    fam = np.array(fam)
    same_f = fam[:, None] == fam[None, :]
    same_c = cl[:, None] == cl[None, :]
    iu = np.triu_indices(len(fam), 1)
    recall = (same_c & same_f)[iu].sum() / same_f[iu].sum()
    fp = (same_c & ~same_f)[iu].sum()
    assert recall >= 0.95 and fp == 0, (recall, fp)
    assert out.column("status").to_pylist().count("ok") == 300


def test_fixed_projection_of_images_and_policies():
    # embeddings from a fixed random projection of 8x8 thumbnails: a brightness-jittered copy stays close
    rng = np.random.default_rng(1)
    proj = rng.normal(size=(64, 32)).astype(np.float32)
    imgs = rng.random((50, 64)).astype(np.float32)
    copies = np.clip(imgs[:10] * 0.97 + 0.01, 0, 1)
    x = np.concatenate([imgs, copies]) - 0.5
    vecs = (x @ proj).tolist()
    score = [0.1] * 50 + [0.9] * 10
    job = SemanticDedup(clusters=4, threshold=0.98, keep="score", score_col="clip_score")
    t = _table(vecs, score)
    out = {r["uid"]: r for r in apply_decisions(t, job, run_job_local(job, t)).to_pylist()}
    for i in range(10):  # the higher-scored copy is kept, the original points at it
        assert out[f"u{i:05d}"]["dup_of"] == f"u{50 + i:05d}" and out[f"u{50 + i:05d}"]["status"] == "ok"
    assert all(out[f"u{i:05d}"]["status"] == "ok" for i in range(10, 50))


def test_missing_and_bad_vectors_and_tiny_inputs():
    vecs = [None, [], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.001, 0.0], [float("nan"), 1.0, 0.0]]
    job = SemanticDedup(clusters=8)
    out = apply_decisions(_table(vecs), job, run_job_local(job, _table(vecs)))
    assert out.column("status").to_pylist() == ["ok", "ok", "ok", "ok", "dropped", "ok"]
    one = _table([[1.0, 2.0]])
    assert apply_decisions(one, job, run_job_local(job, one)).column("status").to_pylist() == ["ok"]
    c = spherical_kmeans(np.eye(3, dtype=np.float32), 10)
    assert c.shape == (3, 3)
