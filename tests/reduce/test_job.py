"""The reduce job on in-memory tables (real k-means, real Arrow columns): exact kept counts, allocation modes
on a mixture with unequal clusters, ranking inside clusters, rows without vectors, config errors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from curate import schema
from curate.reduce.allocate import allocate, budget_of
from curate.reduce.job import Reduce
from curate.reduce.vectors import unit_vectors
from curate.stage import apply_decisions, fit_sample, run_job_local

SIZES = [1200, 400, 150, 60, 30]  # unequal mixture components


def mixture(sizes=SIZES, dim=32, noise=0.25, seed=0):
    """Well-separated unit-vector clusters: (vectors, true component per row)."""
    rng = np.random.default_rng(seed)
    means = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(sizes)]  # orthonormal centres
    x = np.concatenate([m + rng.normal(scale=noise / np.sqrt(dim), size=(n, dim)) for m, n in zip(means, sizes)])
    comp = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), comp[perm]


def table(vectors, score=None, text=None):
    n = len(vectors)
    cols = {"uid": [f"u{i:05d}" for i in range(n)], "part": pa.array([i % 3 for i in range(n)], pa.int32()),
            "clip_image_embedding": pa.array([None if v is None else list(v) for v in vectors], pa.list_(pa.float32())),
            "status": ["ok"] * n}
    extra = {"clip_image_embedding": pa.list_(pa.float32()), **Reduce.writes}
    if score is not None:
        cols["clip_score"], extra["clip_score"] = pa.array(score, pa.float64()), pa.float64()
    if text is not None:
        cols["clip_text_embedding"] = pa.array([list(v) for v in text], pa.list_(pa.float32()))
        extra["clip_text_embedding"] = pa.list_(pa.float32())
    return schema.conform(pa.table(cols), schema.run_schema(extra))


def run(job, t):
    return apply_decisions(t, job, run_job_local(job, t))


@pytest.mark.parametrize("allocation", ["proportional", "sqrt", "balanced"])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.999])
def test_kept_count_is_exact(allocation, fraction):
    x, _ = mixture(seed=1)
    out = run(Reduce(fraction=fraction, clusters=7, allocation=allocation), table(x))
    status = out.column("status").to_pylist()
    assert status.count("ok") == budget_of(len(x), fraction)
    assert set(out.column("reason").to_pylist()) <= {None, "reduce_not_selected"}
    assert None not in out.column("reduce_cluster").to_pylist()  # every row says its cluster


@pytest.mark.parametrize("count", [0, 1, 37, 1839, 1840, 5000])
def test_count_budget(count):
    x, _ = mixture(seed=2)
    out = run(Reduce(count=count, clusters=5, allocation="balanced"), table(x))
    assert out.column("status").to_pylist().count("ok") == min(count, len(x))


@pytest.mark.parametrize("allocation", ["proportional", "sqrt", "balanced"])
def test_reduced_set_covers_every_cluster_in_the_modes_proportions(allocation):
    x, comp = mixture()
    budget = budget_of(len(x), 0.2)
    out = run(Reduce(fraction=0.2, clusters=5, allocation=allocation), table(x))
    kept = np.array(out.column("status").to_pylist()) == "ok"
    per = Counter(comp[kept].tolist())
    assert set(per) == set(range(len(SIZES)))  # every component is in the reduced set
    want = allocate(np.array(SIZES), budget, allocation)
    assert [per[c] for c in range(len(SIZES))] == want.tolist()
    # and the clusters found are the components (one cluster id per component)
    cl = np.array(out.column("reduce_cluster").to_pylist())
    assert all(len(set(cl[comp == c])) == 1 for c in range(len(SIZES)))
    if allocation == "balanced":
        assert want.tolist() == [93, 93, 92, 60, 30]  # the two small components keep all they have (368 in all)


def test_centre_keeps_the_closest_and_column_keeps_the_best():
    x, _ = mixture(seed=3)
    t = table(x, score=np.random.default_rng(0).random(len(x)))
    job = Reduce(fraction=0.3, clusters=5)
    out = run(job, t).to_pylist()
    cent = job.fit(fit_sample(job, [t]))._centroids
    _, unit = unit_vectors(t, "clip_image_embedding")
    for c in {r["reduce_cluster"] for r in out}:
        rows = [i for i, r in enumerate(out) if r["reduce_cluster"] == c]
        d = 1 - unit[rows] @ cent[c]
        kept = np.array([out[i]["status"] == "ok" for i in rows])
        assert kept.any() and d[kept].max() <= d[~kept].min() + 1e-6
        assert sorted(out[i]["reduce_rank"] for i in rows) == list(range(len(rows)))
    best = run(Reduce(fraction=0.3, clusters=5, rank_by="clip_score"), t).to_pylist()
    worst = run(Reduce(fraction=0.3, clusters=5, rank_by="clip_score", descending=False), t).to_pylist()
    for c in {r["reduce_cluster"] for r in best}:
        k = [r["clip_score"] for r in best if r["reduce_cluster"] == c and r["status"] == "ok"]
        d = [r["clip_score"] for r in best if r["reduce_cluster"] == c and r["status"] != "ok"]
        assert min(k) >= max(d)
        k = [r["clip_score"] for r in worst if r["reduce_cluster"] == c and r["status"] == "ok"]
        d = [r["clip_score"] for r in worst if r["reduce_cluster"] == c and r["status"] != "ok"]
        assert max(k) <= min(d)


def test_rows_without_a_vector_are_a_cluster_of_their_own_and_inactive_rows_untouched():
    x, _ = mixture(sizes=[200, 100], seed=4)
    vecs = list(x) + [None, [], [0.0] * 32, [float("nan")] * 32, [1.0, 2.0]]  # 5 rows with no usable vector
    t = table(vecs)
    t = schema.mark(t, pa.array([i < 10 for i in range(len(vecs))]), schema.DROPPED, "earlier", "earlier_reason")
    out = run(Reduce(fraction=0.5, clusters=2, rank_by="random"), t).to_pylist()
    assert all(r["status"] == "dropped" and r["reason"] == "earlier_reason" and r["reduce_cluster"] is None
               for r in out[:10])
    active = out[10:]
    assert sum(r["status"] == "ok" for r in active) == budget_of(len(active), 0.5)
    assert [r["reduce_cluster"] for r in active[-5:]] == [-1] * 5
    assert sum(r["status"] == "ok" for r in active[-5:]) in (2, 3)  # its proportional share (5 of 295)


def test_text_embeddings_join_the_clustering():
    # images all alike, texts in two groups: with the text vector the two groups become clusters
    rng = np.random.default_rng(5)
    img = np.ones((300, 16), np.float32) + rng.normal(scale=0.01, size=(300, 16))
    txt = np.zeros((300, 16), np.float32)
    txt[:100, 0], txt[100:, 1] = 1, 1
    txt += rng.normal(scale=0.01, size=txt.shape)
    out = run(Reduce(count=60, clusters=2, allocation="balanced", text_column="clip_text_embedding",
                     text_weight=0.7), table(img, text=txt))
    kept = np.array(out.column("status").to_pylist()) == "ok"
    assert kept[:100].sum() == 30 and kept[100:].sum() == 30


def test_config_errors():
    with pytest.raises(ValidationError, match="exactly one of fraction"):
        Reduce()
    with pytest.raises(ValidationError, match="exactly one of fraction"):
        Reduce(fraction=0.5, count=10)
    with pytest.raises(ValidationError):
        Reduce(fraction=0)
    with pytest.raises(ValidationError):
        Reduce(fraction=0.5, allocation="zipf")
    assert Reduce(fraction=0.5, rank_by="clip_score").needs() == ("clip_image_embedding", "clip_score")


def test_vectors_read_from_sliced_nullable_and_fixed_size_columns():
    from curate.reduce.vectors import raw_vectors

    vals = [[1.0, 2.0], None, [3.0, 4.0], [5.0], [], [6.0, None], [7.0, 8.0]]
    arr = pa.array(vals, pa.list_(pa.float64()))
    idx, x = raw_vectors(pa.chunked_array([arr.slice(0, 3), arr.slice(3)]))
    assert idx.tolist() == [0, 2, 5, 6] and np.allclose(x[[0, 1, 3]], [[1, 2], [3, 4], [7, 8]])
    assert np.isnan(x[2, 1])  # a null element becomes NaN (unit_rows then leaves the row out)
    idx, x = raw_vectors(arr.slice(2, 4))  # a slice whose offsets do not start at 0
    assert idx.tolist() == [0, 3] and x[0].tolist() == [3.0, 4.0]
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
    idx, x = raw_vectors(fixed)
    assert idx.tolist() == [0, 1] and x.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_recipe_errors_are_one_line():
    from curate.recipe import RecipeError, build_recipe

    def build(cfg):
        build_recipe({"name": "t", "input": {"path": "in.parquet"}, "output": {"path": "out"},
                      "stages": [{"download": {}}, {"reduce": cfg}]})

    with pytest.raises(RecipeError, match=r"needs column 'clip_image_embedding'.*add 'clip_score' before it"):
        build({"fraction": 0.5})
    with pytest.raises(RecipeError, match="exactly one of fraction") as err:
        build({"fraction": 0.5, "count": 3})
    assert "\n" not in str(err.value)
