"""The `clip_dedup` job: near-duplicate clips by perceptual hashes of their keyframes.

Each clip gets one 64-bit code: the bitwise majority of its keyframes' pHashes (curate.dedup.phash's
hashing), so re-encodes, resizes and re-uploads of the same footage agree bit for bit on most bits. The
banding, edges and connected components are `phash_dedup`'s; only the column names differ.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from curate.dedup.graph import ClusterJob
from curate.dedup.phash import PHashDedup, image_hash
from curate.stage import register


def keyframes_hash(frames: list[bytes] | None, kind: str = "phash") -> int | None:
    """Bitwise majority vote over the keyframes' 64-bit perceptual hashes (None without a decodable frame)."""
    hs = [h for h in (image_hash(f, kind) for f in frames or []) if h is not None]
    if not hs:
        return None
    bits = np.unpackbits(np.array(hs, ">u8").view(np.uint8).reshape(len(hs), 8), axis=1)
    major = (bits.sum(axis=0) * 2 >= len(hs)).astype(np.uint8)
    return int(np.packbits(major).view(">u8")[0])


@register
class ClipDedup(PHashDedup):
    """Drop near-duplicate clips (same footage re-uploaded, re-encoded or resized): pHash of keyframes."""

    name: ClassVar[str] = "clip_dedup"
    cluster_col: ClassVar[str] = "clip_cluster"
    cluster_reason: ClassVar[str] = "near_duplicate_clip"
    reads: ClassVar[tuple[str, ...]] = ("keyframes",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string(), "clip_cluster": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        "near_duplicate_clip": "keyframe pHash within max_distance bits of the clip in `dup_of`",
    }

    keep: Literal["first", "earliest", "largest"] = "first"  # first: min uid; earliest: row order; largest: most video w*h
    max_color_diff: None = None  # keyframe hashes carry no colour thumbnail

    def needs(self) -> tuple[str, ...]:
        return ("keyframes", *{"largest": ("width", "height"), "earliest": ("row",)}.get(self.keep, ()))

    def hashes(self, images: list) -> list[tuple[int, bytes] | None]:
        # (hash, colour thumbnail) as the parent expects; clips have no colour check (max_color_diff unset)
        out = []
        for frames in images:
            h = keyframes_hash(frames, self.hash)
            out.append(None if h is None else (h, b""))
        return out

    def prepare(self, table: pa.Table) -> pa.Table:
        # the parent class hashes the `image` column through self.hashes: hand it the keyframe lists
        return super().prepare(table.append_column("image", table.column("keyframes")))

    def complete(self, table: pa.Table) -> pa.Table:
        # clusters and dup_of only: the per-image `phash` column of phash_dedup does not apply to clips
        return ClusterJob.complete(self, table)
