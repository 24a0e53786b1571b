"""`image_quality`: drop blank and near-uniform images (placeholders, solid fills, spacer GIFs).

Why a thumbnail: a blank image is blank at any scale, so the check decodes JPEGs at 1/8 scale with
PIL's draft mode (the DCT skips most of the work) into a small RGB thumbnail and looks at its pixel
spread (standard deviation) and colour histogram entropy. Both are cheap and catch what
`image_size` cannot: a full-size white or single-colour picture.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate.stage import Filter, register


def thumbnail_stats(data: bytes, side: int = 64) -> tuple[float, float]:
    """(largest per-channel pixel standard deviation 0..255, colour histogram entropy in bits 0..9) of a
    small RGB thumbnail. Colour, not grey: a red shape on a green field of equal brightness is not blank."""
    from curate import images

    im = images.decode_rgb(data, draft=side)  # JPEG: decode at a reduced scale; other formats ignore it
    if max(im.size) > side:
        im.thumbnail((side, side))
    px = np.asarray(im, dtype=np.uint8).reshape(-1, 3)
    if px.size == 0:
        return 0.0, 0.0
    std = float(px.std(axis=0).max())
    q = px >> 5  # 8 levels per channel -> 512 colour bins
    hist = np.bincount((q[:, 0].astype(np.int32) << 6) | (q[:, 1] << 3) | q[:, 2], minlength=512)
    p = hist[hist > 0] / len(px)
    return std, float(-(p * np.log2(p)).sum())


@register
class ImageQuality(Filter):
    """Drop images whose thumbnail is (nearly) one flat colour, or that cannot be decoded at all."""

    name: ClassVar[str] = "image_quality"
    reads: ClassVar[tuple[str, ...]] = ("image",)
    reasons: ClassVar[dict[str, str]] = {
        "image_uniform": "largest per-channel pixel standard deviation of the thumbnail below min_std (blank or solid image)",
        "image_low_entropy": "colour histogram entropy (512 bins) of the thumbnail below min_entropy bits (one colour covers almost all of it)",
        "image_undecodable": "the image bytes could not be decoded for the quality check",
    }

    min_std: float = Field(2.0, ge=0.0, description="0..255; 0 disables the check")
    # bits; 0 (default) disables the check: clip art on a flat background can score as low as ~0.15
    min_entropy: float = Field(0.0, ge=0.0, le=9.0)  # colour-histogram entropy floor, bits (0-9); 0 = off
    thumb_side: int = Field(64, ge=8, le=1024)  # thumbnail's longest side (px); larger sees finer detail, costs more

    def check(self, table: pa.Table) -> list[str | None]:
        out: list[str | None] = []
        for data in table.column("image").to_pylist():
            if not data:
                out.append(None)  # no bytes (e.g. a metadata-only run): nothing to judge
                continue
            try:
                std, entropy = thumbnail_stats(data, self.thumb_side)
            except Exception:  # noqa: BLE001 - PIL raises many types on bad bytes
                out.append("image_undecodable")
                continue
            if std < self.min_std:
                out.append("image_uniform")
            elif entropy < self.min_entropy:
                out.append("image_low_entropy")
            else:
                out.append(None)
        return out
