"""`mllm_threshold`: keep rows whose `mllm_score` (from `mllm_score`) reaches a minimum."""
from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from curate.stage import Filter, register


@register
class MllmThreshold(Filter):
    """Drops rows below `min_score`; rows without a score (on_error: keep) follow `missing`."""

    name: ClassVar[str] = "mllm_threshold"
    reads: ClassVar[tuple[str, ...]] = ("mllm_score",)
    reasons: ClassVar[dict[str, str]] = {
        "mllm_score_below_threshold": "mllm_score below min_score",
        "mllm_score_missing": "no mllm_score (the model could not be asked) and missing: drop",
    }

    min_score: float = Field(0.5, ge=0.0, le=1.0)  # drop rows whose mllm_score (0..1) is below this
    missing: Literal["keep", "drop"] = "drop"  # rows with a null mllm_score (mllm_score on_error: keep): drop or keep

    def check(self, table: pa.Table) -> list[str | None]:
        out: list[str | None] = []
        for s in table.column("mllm_score").to_pylist():
            if s is None:
                out.append("mllm_score_missing" if self.missing == "drop" else None)
            else:
                out.append("mllm_score_below_threshold" if s < self.min_score else None)
        return out
