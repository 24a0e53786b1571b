"""The `clip_motion` filter: drop static clips (slideshows, frozen frames, title cards) by the motion score
that `clip_split` measured while decoding, and optionally clips with too much (flashing, cuts it missed)."""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from curate.stage import Filter, register


@register
class ClipMotion(Filter):
    """Keep clips whose motion (mean fraction of pixels changing per frame) lies in [min_motion, max_motion]."""

    name: ClassVar[str] = "clip_motion"
    reads: ClassVar[tuple[str, ...]] = ("motion",)
    reasons: ClassVar[dict[str, str]] = {
        "clip_static": "motion below min_motion: (nearly) nothing moves",
        "clip_too_much_motion": "motion above max_motion: flashing, noise or cuts inside the clip",
    }

    min_motion: float = Field(0.005, ge=0, le=1)  # below this mean fraction of changing pixels a clip drops as static
    max_motion: float = Field(1.0, ge=0, le=1)  # above this a clip drops (flashes, missed cuts); 1.0 = no limit

    def check(self, table: pa.Table) -> list[str | None]:
        out: list[str | None] = []
        for m in table.column("motion").to_pylist():
            if m is None:
                out.append(None)  # not a clip row: nothing to judge
            elif m < self.min_motion:
                out.append("clip_static")
            elif m > self.max_motion:
                out.append("clip_too_much_motion")
            else:
                out.append(None)
        return out
