"""`image_size`: drop images that are too small or too elongated to be useful training pairs."""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from curate.stage import Filter, register


@register
class ImageSize(Filter):
    """Checks the size of the image as downloaded (before resizing), falling back to stored size."""

    name: ClassVar[str] = "image_size"
    reads: ClassVar[tuple[str, ...]] = ("width", "height")
    reasons: ClassVar[dict[str, str]] = {
        "image_too_small": "shorter side below min_side pixels",
        "image_too_large": "longer side above max_side pixels",
        "image_aspect_ratio": "longer side / shorter side above max_aspect",
    }

    min_side: int = Field(32, ge=0)  # drop if the shorter side (px, as downloaded) is below this; 0 = off
    max_side: int | None = Field(None, ge=1)  # drop if the longer side (px) is above this; None = no limit
    max_aspect: float = Field(4.0, ge=1.0)  # drop if longer side / shorter side is above this (banners, strips)

    def check(self, table: pa.Table) -> list[str | None]:
        cols = table.column_names
        ws = table.column("orig_width" if "orig_width" in cols else "width").to_pylist()
        hs = table.column("orig_height" if "orig_height" in cols else "height").to_pylist()
        if "orig_width" in cols:  # rows downloaded without re-encoding only know the stored size
            ws = [o if o is not None else w for o, w in zip(ws, table.column("width").to_pylist())]
            hs = [o if o is not None else h for o, h in zip(hs, table.column("height").to_pylist())]
        out: list[str | None] = []
        for w, h in zip(ws, hs):
            if w is None or h is None:
                out.append(None)  # size unknown: nothing to decide on
            elif min(w, h) < self.min_side:
                out.append("image_too_small")
            elif self.max_side is not None and max(w, h) > self.max_side:
                out.append("image_too_large")
            elif max(w, h) / max(1, min(w, h)) > self.max_aspect:
                out.append("image_aspect_ratio")
            else:
                out.append(None)
        return out
