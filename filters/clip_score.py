"""Decisions on a stored `clip_score`: an absolute threshold, or DataComp's "keep the top k%".

Scoring (the model) and deciding (these) are separate steps so a new threshold never needs the model
again (`curate refilter`). Rows without a score (not scored, or an image the scorer could not decode)
are left untouched by both.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate import schema
from curate.stage import Filter, Job, register


def _scores(column) -> np.ndarray:
    """float64 scores with NaN for null."""
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


@register
class ClipThreshold(Filter):
    """Drop samples whose CLIP image-text similarity is below `min_score`."""

    name: ClassVar[str] = "clip_threshold"
    reads: ClassVar[tuple[str, ...]] = ("clip_score",)
    reasons: ClassVar[dict[str, str]] = {
        "clip_score_low": "image-caption CLIP similarity below the clip_threshold min_score",
    }

    min_score: float = Field(0.28, ge=-1.0, le=1.0)  # LAION-5B's cut for OpenAI ViT-B/32; model-specific
    column: str = "clip_score"  # score column to test, e.g. recaption_clip_score; null scores pass

    def needs(self) -> tuple[str, ...]:
        return (self.column,)

    def check(self, table: pa.Table) -> list[str | None]:
        s = _scores(table.column(self.column))
        return ["clip_score_low" if v < self.min_score else None for v in s.tolist()]  # NaN < x is False


@register
class ClipTopFraction(Job):
    """Keep the `fraction` of scored samples with the highest CLIP score, ranked over the whole dataset.

    A Job because the cutoff is a global quantile: every active row maps to one (uid, part, score)
    record under a single key; `finalize`, in the driver, ranks them by score (descending, ties by
    uid ascending, so the cut is deterministic), keeps round(fraction * n) and drops the rest. The driver
    holds one small record per scored row (uid + score), never images or embeddings.
    Samples kept by an earlier batch of the same run (--retry-failed) count in n but are never dropped.
    """

    name: ClassVar[str] = "clip_top_fraction"
    reads: ClassVar[tuple[str, ...]] = ("clip_score",)
    writes: ClassVar[dict[str, pa.DataType]] = {"clip_rank": pa.int64()}
    reasons: ClassVar[dict[str, str]] = {
        "clip_score_not_top": "CLIP score outside the top `fraction` of the dataset (clip_top_fraction)",
    }
    singletons_matter: ClassVar[bool] = True

    fraction: float = Field(0.3, gt=0.0, le=1.0)  # DataComp's best CLIP-score baseline keeps the top 30%
    column: str = "clip_score"  # score column to rank, e.g. recaption_clip_score; rows without one are left alone

    def needs(self) -> tuple[str, ...]:
        return (self.column,)

    def prepare(self, table: pa.Table) -> pa.Table:
        s = _scores(table.column(self.column))
        ok = ~np.isnan(s)
        idx = pa.array(np.flatnonzero(ok))
        return pa.table({"key": pa.array(np.zeros(int(ok.sum()), np.int64)), "uid": table.column("uid").take(idx),
                         "part": pc.cast(table.column("part").take(idx), pa.int32()),
                         "score": pa.array(s[ok], pa.float64())})

    def reduce_schema(self) -> pa.Schema:
        return pa.schema([("uid", pa.string()), ("part", pa.int32()), ("score", pa.float64())])

    def reduce(self, group: pa.Table) -> pa.Table:
        return group.select(["uid", "part", "score"])

    def keep_count(self, n: int) -> int:
        return min(n, int(math.floor(self.fraction * n + 0.5)))

    def finalize(self, reduced: pa.Table) -> pa.Table:
        n = reduced.num_rows
        if n == 0:
            return self.decision_schema().empty_table()
        order = pc.sort_indices(reduced, sort_keys=[("score", "descending"), ("uid", "ascending")])
        ranked = reduced.take(order)
        keep = self.keep_count(n)
        rank = np.arange(n, dtype=np.int64)
        status = np.where(rank < keep, schema.OK, schema.DROPPED)
        out = pa.table({
            "uid": ranked.column("uid"), "part": ranked.column("part"),
            "status": pa.array(status.tolist(), pa.string()),
            "reason": pa.array([None if s == schema.OK else "clip_score_not_top" for s in status.tolist()], pa.string()),
            "clip_rank": pa.array(rank, pa.int64()),
        }, schema=self.decision_schema())
        return out.filter(pc.not_equal(out.column("part"), -1))
