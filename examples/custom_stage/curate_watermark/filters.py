"""NoWatermark: drop samples whose caption is stock-photo watermark or licence boilerplate.

Alt-text scraped next to stock images often is the agency's credit line ("Stock Photo - Alamy",
"Image 12345 by Shutterstock", "(c) Getty Images"), and the image carries the same text burnt in as a
watermark. Such captions teach a CLIP model to read logos, not to describe images, so LAION-style recipes
drop them. This is a text filter: it decides from the caption alone and never loads a model.
"""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from curate import Filter, register

# credit lines of the big stock agencies and licence boilerplate, matched in the lower-cased caption
DEFAULT_MARKERS = ("shutterstock", "getty images", "gettyimages", "alamy", "istock", "dreamstime",
                   "depositphotos", "123rf", "stock photo", "stock image", "royalty free", "royalty-free",
                   "all rights reserved", "watermark")


@register
class NoWatermark(Filter):
    """Drop rows whose caption contains one of `markers` (case-insensitive substring)."""

    name: ClassVar[str] = "no_watermark"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    reasons: ClassVar[dict[str, str]] = {
        "watermark_text": "the caption carries stock-photo watermark or licence text (no_watermark)",
    }

    markers: tuple[str, ...] = Field(DEFAULT_MARKERS, min_length=1, max_length=1000)
    # only the start of a caption is searched: bounded time per row whatever its length
    max_chars: int = Field(2000, ge=1, le=100_000)

    def check(self, table: pa.Table) -> list[str | None]:
        markers = [m.lower() for m in self.markers if m]
        out: list[str | None] = []
        for text in table.column("text").to_pylist():
            head = (text or "")[: self.max_chars].lower()
            out.append("watermark_text" if any(m in head for m in markers) else None)
        return out
