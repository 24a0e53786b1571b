"""`phash_dedup`: perceptual image near-duplicates (pHash or dHash from `imagehash`) as the same Job shape as
`minhash_dedup`.

Hamming-distance banding: a 64-bit hash is cut into `max_distance + 1` bands; two hashes within
`max_distance` bits agree exactly on at least one band (pigeonhole), so grouping records by
(band, band bits) finds every such pair. `reduce` checks the real Hamming distance inside a bucket and
emits edges; `finalize` takes connected components (curate/dedup/graph.py) and keeps one sample per
cluster (`first`: smallest uid; `earliest`: first in the input list (`row`); `largest`: most original
pixels). Undecodable images are left alone.
Every row the job saw gets `phash`: its 64-bit hash as 16 hex digits (pHash or dHash, per `hash`), so
`curate query` can look at distances, e.g. `bit_count(xor(('0x'||a.phash)::UBIGINT, ...))` in DuckDB.
Cost inside a bucket is quadratic in its size; with b-bit bands a random corpus puts about n / 2**b
rows in a bucket, so keep max_distance small (default 8: 9 bands of 7-8 bits; real crops need about that) for large corpora.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate import schema
from curate.dedup.graph import EDGE_SCHEMA, ClusterJob, edges_table
from curate.stage import register

_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def image_hash(data: bytes, kind: str = "phash") -> int | None:
    """64-bit perceptual hash of encoded image bytes, or None if they do not decode."""
    out = image_hash_and_colour(data, kind)
    return None if out is None else out[0]


def image_hash_and_colour(data: bytes, kind: str = "phash") -> tuple[int, bytes] | None:
    """(64-bit perceptual hash, 4x4 RGB thumbnail as 48 bytes) of encoded image bytes, or None if they do not decode.

    The hashes work on grey levels: two simple images of the same layout in other colours (a small blue
    square and a small green diamond on grey) can be a few bits apart. The thumbnail lets `max_color_diff`
    tell them apart; re-encoded, resized or slightly cropped copies keep it within a few levels."""
    import imagehash
    from PIL import Image

    from curate import images

    try:
        im = images.decode_rgb(data)
        h = imagehash.phash(im) if kind == "phash" else imagehash.dhash(im)
        thumb = im.resize((4, 4), Image.BOX).tobytes()
    except Exception:  # noqa: BLE001  (undecodable bytes: no hash, no decision)
        return None
    bits = h.hash.flatten()
    return int(np.packbits(bits).view(">u8")[0]), thumb


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (broadcasting)."""
    x = np.bitwise_xor(a, b)
    return _POP8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int64).reshape(x.shape)


def band_slices(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
    n = max_distance + 1
    edges = np.linspace(0, bits, n + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(n)]


def original_pixels(table: pa.Table) -> np.ndarray:
    """Pixels per row of the image before any resize: orig_width x orig_height, else the stored width x height
    (0 when neither is known).

    Why not width x height alone: `download` resizes every image to the same size, so stored sizes tie and
    `keep: largest` would keep an arbitrary copy instead of the one with the most original pixels. Rows
    without an original size (an input that only states the stored one) fall back to it, row by row."""
    def column(name: str) -> np.ndarray:
        if name not in table.column_names:
            return np.full(table.num_rows, np.nan)
        return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)

    orig, stored = column("orig_width") * column("orig_height"), column("width") * column("height")
    return np.nan_to_num(np.where(np.isnan(orig), stored, orig), nan=0.0)


@register
class PHashDedup(ClusterJob):
    """Drop perceptual near-duplicate images (re-encoded, resized, slightly cropped copies)."""

    name: ClassVar[str] = "phash_dedup"
    cluster_col: ClassVar[str] = "image_cluster"
    cluster_reason: ClassVar[str] = "near_duplicate_image"
    reads: ClassVar[tuple[str, ...]] = ("image",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string(), "image_cluster": pa.string(),
                                                "phash": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        "near_duplicate_image": "perceptual near-duplicate (pHash/dHash Hamming distance) of the sample in `dup_of`",
    }

    hash: Literal["phash", "dhash"] = "phash"  # phash (DCT) or dhash (gradients): the 64-bit hash compared
    max_distance: int = Field(8, ge=0, le=31)  # max differing bits of 64; higher finds more, with bigger buckets (cost)
    keep: Literal["first", "earliest", "largest"] = "first"  # first: min uid; earliest: row order; largest: most original pixels (orig_width*orig_height, else width*height)
    # also require every channel of every cell of a 4x4 RGB thumbnail to differ by at most this (0-255);
    # None: hash distance only
    max_color_diff: int | None = Field(None, ge=0, le=255)  # max 4x4 RGB thumbnail channel diff (0-255); None = off

    def needs(self) -> tuple[str, ...]:
        """keep: largest ranks by the original size (orig_*: download and load_image write both), so it
        needs those too; stored width/height are the fallback for rows without an original size."""
        return {"largest": ("image", "width", "height", "orig_width", "orig_height"),
                "earliest": ("image", "row")}.get(self.keep, ("image",))

    @staticmethod
    def _record_schema() -> pa.Schema:
        return pa.schema([("key", pa.int64()), ("uid", pa.string()), ("part", pa.int32()),
                          ("rank", pa.float64()), ("h", pa.uint64()), ("c", pa.binary())])

    def hashes(self, images: list) -> list[tuple[int, bytes] | None]:
        return [image_hash_and_colour(b, self.hash) if b else None for b in images]

    def prepare(self, table: pa.Table) -> pa.Table:
        hs = self.hashes(table.column("image").to_pylist())
        idx = [i for i, h in enumerate(hs) if h is not None]
        if not idx:
            return self._record_schema().empty_table()
        sub = table.take(pa.array(idx))
        h = np.array([hs[i][0] for i in idx], np.uint64)
        colour = pa.array([hs[i][1] if self.max_color_diff is not None else b"" for i in idx], pa.binary())
        if self.keep == "largest":
            rank = -original_pixels(sub)
        elif self.keep == "earliest":
            rank = pc.cast(sub.column("row"), pa.float64()).to_numpy(zero_copy_only=False)
        else:
            rank = np.zeros(len(idx))
        keys = []
        for b, (lo, hi) in enumerate(band_slices(self.max_distance)):
            width = hi - lo
            bits = (h >> np.uint64(64 - hi)) & np.uint64((1 << width) - 1)
            keys.append(((np.uint64(b) << np.uint64(56)) | bits).view(np.int64))
        nb = len(keys)
        rep = np.tile(np.arange(len(idx)), nb)
        take = pa.array(rep)
        return pa.table({
            "key": pa.array(np.concatenate(keys), pa.int64()),
            "uid": sub.column("uid").take(take), "part": sub.column("part").take(take).cast(pa.int32()),
            "rank": pa.array(rank[rep], pa.float64()), "h": pa.array(h[rep], pa.uint64()), "c": colour.take(take),
        }, schema=self._record_schema())

    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        n = group.num_rows
        if n < 2:
            return EDGE_SCHEMA.empty_table()
        h = group.column("h").to_numpy()
        if self.max_color_diff is not None:
            c = np.frombuffer(b"".join(group.column("c").to_pylist()), np.uint8).reshape(n, -1).astype(np.int16)
        pairs: list[tuple[int, int]] = []
        step = 1024  # bound the (step x n) distance matrix
        for lo in range(0, n, step):
            close = hamming(h[lo:lo + step, None], h[None, :]) <= self.max_distance
            if self.max_color_diff is not None:
                close &= np.abs(c[lo:lo + step, None, :] - c[None, :, :]).max(axis=2) <= self.max_color_diff
            i, j = np.nonzero(close)
            keep = (i + lo) < j
            pairs += list(zip((i[keep] + lo).tolist(), j[keep].tolist()))
        return edges_table(group.column("uid").to_pylist(), group.column("part").to_pylist(),
                           group.column("rank").to_pylist(), pairs)

    def complete(self, table: pa.Table) -> pa.Table:
        table = super().complete(table)
        # the rows this job saw: still active, or dropped by it just now
        seen = pc.or_(schema.active_mask(table), pc.fill_null(pc.equal(table.column("stage"), self.name), False))
        idx = np.flatnonzero(seen.to_numpy(zero_copy_only=False))
        if len(idx) == 0:
            return table
        hs = self.hashes(table.column("image").take(pa.array(idx)).to_pylist())
        col = [None] * table.num_rows
        for i, h in zip(idx, hs):
            col[i] = None if h is None else f"{h[0]:016x}"
        return table.set_column(table.column_names.index("phash"), "phash", pa.array(col, pa.string()))
