"""`semantic_dedup`: SemDeDup-style embedding near-duplicates (Abbas et al. 2023) as a fit -> map -> shuffle
-> reduce -> finalize Job.

fit: spherical k-means (numpy, fixed seed) on a bounded sample of L2-normalised embeddings (`fit_rows`),
with k = min(`clusters`, sample rows / 20).
map: each row's key is its nearest centroid. reduce: inside one k-means cluster, pairs with cosine
similarity >= `threshold` become edges (chunked matrix products: O(cluster size^2), as in SemDeDup).
finalize: connected components over the edges (curate/dedup/graph.py), one representative per
component (`first` uid or highest `score_col`), the rest dropped as `semantic_duplicate`.
Rows without an embedding (null or wrong length) are left alone. The embedding column holds a list of
floats per row (CLIP image embeddings from a scoring stage; any fixed-length vector works).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from curate.dedup.graph import EDGE_SCHEMA, ClusterJob, edges_table
from curate.stage import register


def embeddings_of(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(row indices with a usable vector, float32 L2-normalised matrix)."""
    vals = column.to_pylist()
    dims = [len(v) for v in vals if v is not None and len(v)]
    if not dims:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    dim = max(set(dims), key=dims.count)
    idx = np.array([i for i, v in enumerate(vals) if v is not None and len(v) == dim], np.int64)
    x = np.array([vals[i] for i in idx], np.float32).reshape(len(idx), dim)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    ok = (norm[:, 0] > 0) & np.isfinite(x).all(axis=1)
    return idx[ok], x[ok] / norm[ok]


def spherical_kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> np.ndarray:
    """k unit-norm centroids (k-means++-style seeding by cosine distance, then Lloyd iterations)."""
    from scipy import sparse  # (kept out of module import: step modules are all imported at recipe load)

    rng = np.random.default_rng(seed)
    n = len(x)
    k = max(1, min(k, n))
    cent = [x[rng.integers(n)]]
    d = 1 - x @ cent[0]
    for _ in range(1, k):
        p = np.clip(d, 0, None)
        i = int(rng.choice(n, p=p / p.sum())) if p.sum() > 0 else int(rng.integers(n))
        cent.append(x[i])
        d = np.minimum(d, 1 - x @ x[i])
    c = np.array(cent, np.float32)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        # cluster sums as a sparse one-hot product: np.add.at took 6 s per iteration on 100k x 512
        onehot = sparse.csr_matrix((np.ones(n, np.float32), (assign, np.arange(n))), shape=(len(c), n))
        new = np.asarray(onehot @ x, np.float32)
        norm = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norm[:, 0] == 0
        new[~empty] /= norm[~empty]
        new[empty] = c[empty]
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c


@register
class SemanticDedup(ClusterJob):
    """Drop semantic near-duplicates: cosine similarity of embeddings within k-means clusters (SemDeDup)."""

    name: ClassVar[str] = "semantic_dedup"
    cluster_col: ClassVar[str] = "semantic_cluster"
    cluster_reason: ClassVar[str] = "semantic_duplicate"
    reads: ClassVar[tuple[str, ...]] = ("clip_image_embedding",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string(), "semantic_cluster": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        "semantic_duplicate": "embedding cosine similarity to the kept sample in `dup_of` is above the threshold",
    }
    fit_rows: ClassVar[int] = 100_000

    column: str = "clip_image_embedding"  # list-of-floats column: what clip_score with embeddings: true writes
    threshold: float = Field(0.95, gt=0, le=1)  # cosine similarity at which rows of one cluster are duplicates
    clusters: int = Field(100, ge=1)  # k-means k (at most sample rows / 20): more is faster, may split duplicates
    seed: int = 0  # seed of the k-means initialisation
    keep: Literal["first", "score"] = "first"  # first: smallest uid stays; score: highest score_col stays
    score_col: str | None = None  # column that ranks keepers for keep: score (nulls last)

    _centroids: np.ndarray | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self):
        if self.keep == "score" and not self.score_col:
            raise ValueError("keep: score needs score_col")
        return self

    def needs(self) -> tuple[str, ...]:
        return (self.column, self.score_col) if self.keep == "score" else (self.column,)

    def fit(self, sample: pa.Table) -> "SemanticDedup":
        fitted = self.model_copy()
        _, x = embeddings_of(sample.column(self.column)) if sample.num_rows else (None, np.zeros((0, 0)))
        # at least ~20 sample rows per k-means cluster: tiny clusters split near-duplicates apart
        k = max(1, min(self.clusters, len(x) // 20))
        fitted._centroids = spherical_kmeans(x, k, seed=self.seed) if len(x) else None
        return fitted

    @staticmethod
    def _record_schema() -> pa.Schema:
        return pa.schema([("key", pa.int64()), ("uid", pa.string()), ("part", pa.int32()),
                          ("rank", pa.float64()), ("emb", pa.binary())])

    def prepare(self, table: pa.Table) -> pa.Table:
        if self._centroids is None:
            if table.num_rows and self.fit_rows:  # not fitted (called outside a runner): fit on this table
                return self.fit(table).prepare(table)
            return self._record_schema().empty_table()
        idx, x = embeddings_of(table.column(self.column))
        if len(idx) == 0 or x.shape[1] != self._centroids.shape[1]:
            return self._record_schema().empty_table()
        key = np.argmax(x @ self._centroids.T, axis=1).astype(np.int64)
        sub = table.take(pa.array(idx))
        if self.keep == "score":
            sc = pc.cast(sub.column(self.score_col), pa.float64()).to_numpy(zero_copy_only=False)
            rank = np.where(np.isnan(sc), np.inf, -sc)
        else:
            rank = np.zeros(len(idx))
        return pa.table({
            "key": pa.array(key, pa.int64()), "uid": sub.column("uid"), "part": sub.column("part").cast(pa.int32()),
            "rank": pa.array(rank, pa.float64()), "emb": pa.array([r.tobytes() for r in x], pa.binary()),
        }, schema=self._record_schema())

    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        n = group.num_rows
        if n < 2:
            return EDGE_SCHEMA.empty_table()
        e = group.column("emb").to_pylist()
        x = np.frombuffer(b"".join(e), np.float32).reshape(n, -1)
        pairs: list[tuple[int, int]] = []
        step = 2048
        for lo in range(0, n, step):
            sim = x[lo:lo + step] @ x.T
            i, j = np.nonzero(sim >= self.threshold - 1e-6)
            keep = (i + lo) < j
            pairs += list(zip((i[keep] + lo).tolist(), j[keep].tolist()))
        return edges_table(group.column("uid").to_pylist(), group.column("part").to_pylist(),
                           group.column("rank").to_pylist(), pairs)

