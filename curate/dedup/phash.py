"""`phash_dedup`: perceptual image near-duplicates (pHash or dHash from `imagehash`) as the same Job shape as
`minhash_dedup`.

Hamming-distance banding: a 64-bit hash is cut into `max_distance + 1` bands; two hashes within
`max_distance` bits agree exactly on at least one band (pigeonhole), so grouping records by
(band, band bits) finds every such pair. `reduce` checks the real Hamming distance inside a bucket and
emits edges; `finalize` takes connected components (curate/dedup/graph.py) and keeps one sample per
cluster (`first`: smallest uid; `largest`: most original pixels). Undecodable images are left alone.
Cost inside a bucket is quadratic in its size; with b-bit bands a random corpus puts about n / 2**b
rows in a bucket, so keep max_distance small (default 8: 9 bands of 7-8 bits; real crops need about that) for large corpora.
"""
from __future__ import annotations

import io
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate import schema
from curate.dedup.graph import EDGE_SCHEMA, ClusterJob, edges_table
from curate.stage import Job, register

_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def image_hash(data: bytes, kind: str = "phash") -> int | None:
    """64-bit perceptual hash of encoded image bytes, or None if they do not decode."""
    import imagehash
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            h = imagehash.phash(im) if kind == "phash" else imagehash.dhash(im)
    except Exception:  # noqa: BLE001  (undecodable bytes: no hash, no decision)
        return None
    bits = h.hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (broadcasting)."""
    x = np.bitwise_xor(a, b)
    return _POP8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int64).reshape(x.shape)


def band_slices(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
    n = max_distance + 1
    edges = np.linspace(0, bits, n + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(n)]


@register
class PHashDedup(ClusterJob):
    """Drop perceptual near-duplicate images (re-encoded, resized, slightly cropped copies)."""

    name: ClassVar[str] = "phash_dedup"
    cluster_col: ClassVar[str] = "image_cluster"
    cluster_reason: ClassVar[str] = "near_duplicate_image"
    reads: ClassVar[tuple[str, ...]] = ("image",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string(), "image_cluster": pa.string()}
    reasons: ClassVar[dict[str, str]] = {
        "near_duplicate_image": "perceptual near-duplicate (pHash/dHash Hamming distance) of the sample in `dup_of`",
    }

    hash: Literal["phash", "dhash"] = "phash"
    max_distance: int = Field(8, ge=0, le=31)
    keep: Literal["first", "largest"] = "first"

    def needs(self) -> tuple[str, ...]:
        return ("image", "width", "height") if self.keep == "largest" else ("image",)

    @staticmethod
    def _record_schema() -> pa.Schema:
        return pa.schema([("key", pa.int64()), ("uid", pa.string()), ("part", pa.int32()),
                          ("rank", pa.float64()), ("h", pa.uint64())])

    def hashes(self, images: list) -> list[int | None]:
        return [image_hash(b, self.hash) if b else None for b in images]

    def prepare(self, table: pa.Table) -> pa.Table:
        hs = self.hashes(table.column("image").to_pylist())
        idx = [i for i, h in enumerate(hs) if h is not None]
        if not idx:
            return self._record_schema().empty_table()
        sub = table.take(pa.array(idx))
        h = np.array([hs[i] for i in idx], np.uint64)
        if self.keep == "largest":
            w = pc.cast(sub.column("width"), pa.float64()).to_numpy(zero_copy_only=False)
            ht = pc.cast(sub.column("height"), pa.float64()).to_numpy(zero_copy_only=False)
            rank = -np.nan_to_num(w * ht, nan=0.0)
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
            "rank": pa.array(rank[rep], pa.float64()), "h": pa.array(h[rep], pa.uint64()),
        }, schema=self._record_schema())

    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def reduce(self, group: pa.Table) -> pa.Table:
        n = group.num_rows
        if n < 2:
            return EDGE_SCHEMA.empty_table()
        h = group.column("h").to_numpy()
        pairs: list[tuple[int, int]] = []
        step = 1024  # bound the (step x n) distance matrix
        for lo in range(0, n, step):
            d = hamming(h[lo:lo + step, None], h[None, :])
            i, j = np.nonzero(d <= self.max_distance)
            keep = (i + lo) < j
            pairs += list(zip((i[keep] + lo).tolist(), j[keep].tolist()))
        return edges_table(group.column("uid").to_pylist(), group.column("part").to_pylist(),
                           group.column("rank").to_pylist(), pairs)

