"""`reduce`: keep a target fraction or count of the dataset that stays representative (TL;DR-style
reduction, Wang et al. 2023), as a fit -> map -> shuffle -> reduce -> finalize Job.

fit: spherical k-means (curate.dedup.semantic.spherical_kmeans, fixed seed) on a bounded sample of unit
embeddings (`fit_rows`); k = min(`clusters`, sample rows / 10).
map: each row's key is its nearest centroid; its rank inside the cluster is its cosine distance to the
centroid (`rank_by: centre`), a seeded hash of its uid (`random`), or a column (`rank_by: <column>`, higher
is better unless `descending: false`; null/NaN last). Rows without a usable vector form cluster -1, ranked
the same way (by the hash under `centre`).
reduce: one cluster's records sorted by (rank, uid) -> each row's position in its cluster.
finalize (driver): cluster sizes -> the budget (`fraction` of the rows seen, rounded half up, or `count`)
split over clusters by `allocation` (curate/reduce/allocate.py, exact) -> a row is kept when its position is
below its cluster's quota, else dropped as `reduce_not_selected`. Every row gets `reduce_cluster` and
`reduce_rank` (its position, 0 = best). Driver memory: one small record (uid, part, cluster, position) per
row, not the vectors.
Rows of earlier batches of the same run (--retry-failed; part -1) are neither counted nor changed.
"""
from __future__ import annotations

import hashlib
import logging
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from curate import schema
from curate.dedup.semantic import spherical_kmeans
from curate.reduce.allocate import allocate, budget_of
from curate.reduce.vectors import unit_vectors
from curate.stage import Job, register

log = logging.getLogger("curate")

NO_VECTOR = -1  # the cluster of rows without a usable embedding
RECORD_SCHEMA = pa.schema([("key", pa.int64()), ("uid", pa.string()), ("part", pa.int32()), ("rank", pa.float64())])
RANKED_SCHEMA = pa.schema([("uid", pa.string()), ("part", pa.int32()), ("reduce_cluster", pa.int32()),
                           ("reduce_rank", pa.int32())])


def uid_draws(uids: list[str], seed: int) -> np.ndarray:
    """A seeded uniform draw in [0, 1) per uid: the same on every execution path and partitioning."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}\x00{u}".encode(), digest_size=8).digest(), "big")
                     / 2.0**64 for u in uids], np.float64)


def select(clusters: np.ndarray, positions: np.ndarray, budget: int, allocation: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept mask, quota per cluster) for rows given their cluster (-1 allowed) and position in it."""
    clusters = np.asarray(clusters, np.int64)
    if len(clusters) == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    shift = clusters - clusters.min()  # -1 (no vector) becomes a cluster index like the others
    sizes = np.bincount(shift)
    quota = allocate(sizes, budget, allocation)
    return np.asarray(positions) < quota[shift], quota


@register
class Reduce(Job):
    """Keep a representative `fraction` (or `count`) of the rows: a budget split over embedding clusters."""

    name: ClassVar[str] = "reduce"
    reads: ClassVar[tuple[str, ...]] = ("clip_image_embedding",)
    writes: ClassVar[dict[str, pa.DataType]] = {"reduce_cluster": pa.int32(), "reduce_rank": pa.int32()}
    reasons: ClassVar[dict[str, str]] = {
        "reduce_not_selected": "outside its cluster's share of the reduction budget (`reduce_cluster` says which "
                               "cluster, `reduce_rank` its place in it)",
    }
    singletons_matter: ClassVar[bool] = True  # a one-row cluster still takes part in the budget
    fit_rows: ClassVar[int] = 100_000

    fraction: float | None = Field(None, gt=0, le=1)  # keep round(fraction x rows seen); or set count
    count: int | None = Field(None, ge=0)  # keep exactly this many rows (all when fewer)
    column: str = "clip_image_embedding"  # embedding column (clip_score with embeddings: true)
    text_column: str | None = None  # e.g. clip_text_embedding: cluster on image and text together
    text_weight: float = Field(0.5, ge=0, le=1)  # w: joined cosine = (1 - w) image + w text
    clusters: int = Field(100, ge=1)  # k-means k (at most fit-sample rows / 10)
    allocation: Literal["proportional", "sqrt", "balanced"] = "proportional"  # cluster weights: n, sqrt n or 1
    rank_by: str = "centre"  # centre | random | <column>
    descending: bool = True  # rank_by <column>: higher is better
    seed: int = 0  # k-means seeding and the random draw

    _centroids: np.ndarray | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self):
        if (self.fraction is None) == (self.count is None):
            raise ValueError("set exactly one of fraction (0 < f <= 1) or count")
        if not self.rank_by:
            raise ValueError("rank_by: centre, random or a column name")
        return self

    def _by_column(self) -> bool:
        return self.rank_by not in ("centre", "center", "random")

    def needs(self) -> tuple[str, ...]:
        cols = [self.column] + ([self.text_column] if self.text_column else [])
        return tuple(dict.fromkeys(cols + ([self.rank_by] if self._by_column() else [])))

    def _vectors(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        return unit_vectors(table, self.column, self.text_column, self.text_weight)

    def fit(self, sample: pa.Table) -> "Reduce":
        fitted = self.model_copy()
        _, x = self._vectors(sample) if sample.num_rows else (None, np.zeros((0, 0), np.float32))
        k = max(1, min(self.clusters, len(x) // 10))  # at least ~10 sample rows per cluster
        fitted._centroids = spherical_kmeans(x, k, seed=self.seed) if len(x) else None
        return fitted

    def prepare(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        if n == 0:
            return RECORD_SCHEMA.empty_table()
        if self._centroids is None and self.fit_rows:
            fitted = self.fit(table)  # not fitted (called outside a runner): fit on this table
            if fitted._centroids is not None:
                return fitted.prepare(table)
        key = np.full(n, NO_VECTOR, np.int64)
        dist = np.full(n, np.nan)
        if self._centroids is not None:
            idx, x = self._vectors(table)
            if len(idx) and x.shape[1] == self._centroids.shape[1]:
                sim = x @ self._centroids.T
                best = np.argmax(sim, axis=1)
                key[idx] = best
                dist[idx] = 1.0 - sim[np.arange(len(idx)), best]
        uids = table.column("uid").to_pylist()
        if self._by_column():
            v = pc.cast(table.column(self.rank_by), pa.float64()).to_numpy(zero_copy_only=False)  # null: NaN
            rank = np.where(np.isnan(v), np.inf, -v if self.descending else v)  # missing values come last
        elif self.rank_by == "random":
            rank = uid_draws(uids, self.seed)
        else:  # centre; rows without a vector have no centre: a seeded draw orders them
            rank = dist
            none = key == NO_VECTOR
            if none.any():
                rank = rank.copy()
                rank[none] = uid_draws([u for u, z in zip(uids, none) if z], self.seed)
        return pa.table({"key": pa.array(key, pa.int64()), "uid": table.column("uid"),
                         "part": table.column("part").cast(pa.int32()), "rank": pa.array(rank, pa.float64())},
                        schema=RECORD_SCHEMA)

    def reduce_schema(self) -> pa.Schema:
        return RANKED_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        """One cluster: each row's place in it, best first (earlier batches' rows are left out)."""
        group = group.filter(pc.not_equal(group.column("part"), -1))
        if group.num_rows == 0:
            return RANKED_SCHEMA.empty_table()
        group = group.sort_by([("rank", "ascending"), ("uid", "ascending")])
        n = group.num_rows
        return pa.table({"uid": group.column("uid"), "part": group.column("part"),
                         "reduce_cluster": pa.array(np.full(n, group.column("key")[0].as_py()), pa.int32()),
                         "reduce_rank": pa.array(np.arange(n), pa.int32())}, schema=RANKED_SCHEMA)

    def budget(self, total: int) -> int:
        return budget_of(total, self.fraction, self.count)

    def finalize(self, reduced: pa.Table) -> pa.Table:
        n = reduced.num_rows
        if n == 0:
            return self.decision_schema().empty_table()
        cl = reduced.column("reduce_cluster").to_numpy(zero_copy_only=False)
        pos = reduced.column("reduce_rank").to_numpy(zero_copy_only=False)
        budget = self.budget(n)
        keep, quota = select(cl, pos, budget, self.allocation)
        log.info("reduce: keeping %d of %d rows over %d clusters (%s allocation)", int(keep.sum()), n,
                 int((quota > 0).sum()), self.allocation)
        keep_arr = pa.array(keep)
        return pa.table({
            "uid": reduced.column("uid"), "part": reduced.column("part"),
            "status": pc.if_else(keep_arr, schema.OK, schema.DROPPED),
            "reason": pc.if_else(keep_arr, pa.scalar(None, pa.string()), "reduce_not_selected"),
            "reduce_cluster": reduced.column("reduce_cluster"), "reduce_rank": reduced.column("reduce_rank"),
        }).cast(self.decision_schema())
