"""The `download` stage for image-text rows, built on img2dataset's downloader and resizer.

img2dataset's `download_image_with_retry` fetches (urllib, retries, X-Robots-Tag opt-out) and its
`Resizer` decodes, resizes and re-encodes with OpenCV. We keep its thread-pool-per-process shape, but
instead of writing its own shards we return the bytes and a reason code per row, so every URL becomes a
metadata row and later stages can score and filter before anything is sharded.
"""
from __future__ import annotations

import hashlib
import io
from multiprocessing.pool import ThreadPool
from threading import Semaphore
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate import schema
from curate.download import errors
from curate.stage import Stage, register

IMAGE_REASONS = {
    "image_decode_error": "the bytes are not a decodable image",
    "image_truncated": "the image file ends early (JPEG without EOI marker, PNG without IEND)",
}


def sniff_format(data: bytes) -> str:
    """File extension for image bytes by magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "bin"


def is_truncated(data: bytes) -> bool:
    """Cheap structural check: OpenCV silently grey-fills truncated JPEGs, so look for the end markers."""
    fmt = sniff_format(data)
    if fmt == "jpg":
        return b"\xff\xd9" not in data[-1024:]
    if fmt == "png":
        return b"IEND" not in data[-64:]
    return False


@register
class Download(Stage):
    """Fetch each row's url with img2dataset's downloader, resize with its Resizer, record bytes, sizes, sha256."""

    name: ClassVar[str] = "download"
    reads: ClassVar[tuple[str, ...]] = ("url",)
    writes: ClassVar[dict[str, pa.DataType]] = {
        "image": pa.binary(),
        "image_format": pa.string(),
        "width": pa.int32(),
        "height": pa.int32(),
        "orig_width": pa.int32(),
        "orig_height": pa.int32(),
        "sha256": pa.string(),  # of the bytes as downloaded, before resizing
    }
    reasons: ClassVar[dict[str, str]] = {
        **errors.REASONS, **IMAGE_REASONS,
        "download_hash_mismatch": "the downloaded bytes do not match the input's hash (download.verify_hash)"}

    image_size: int = Field(256, ge=8, le=8192)
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "center_crop"
    resize_only_if_bigger: bool = False
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=0, le=100)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(0, ge=0, le=10)
    threads: int = Field(32, ge=1, le=1024)
    user_agent_token: str | None = None
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    reject_truncated: bool = True
    # like img2dataset's verify_hash: check the downloaded bytes against an input column of hex digests
    # (an input `sha256` column is kept as input_sha256, since this stage writes its own sha256)
    verify_hash: Literal["sha256"] | None = None
    hash_col: str = "input_sha256"

    def _resizer(self):
        from curate.download.i2d import Resizer, ResizeMode

        return Resizer(
            image_size=self.image_size,
            resize_mode=ResizeMode[self.resize_mode],
            resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality if self.encode_format != "png" else min(self.encode_quality, 9),
        )

    def _fetch(self, item):
        from curate.download.i2d import download_image_with_retry

        directives = {d.strip().lower() for d in self.disallowed_header_directives} or None
        token = self.user_agent_token.strip().lower() if self.user_agent_token else None
        return download_image_with_retry(item, self.timeout_s, self.retries, token, directives)

    def fetch_all(self, items: list[tuple[object, str]]):
        """Yield (key, result) per (key, url), in completion order: result is a dict of image fields
        (bytes, format, width, height, orig_width, orig_height, sha256) or (reason code, message)."""
        resizer = self._resizer()
        # Like img2dataset: at most 2x threads downloaded-but-not-yet-resized images in memory.
        gate = Semaphore(self.threads * 2)

        def gen():
            for item in items:
                gate.acquire()
                yield item

        with ThreadPool(min(self.threads, max(1, len(items)))) as pool:
            for key, stream, err in pool.imap_unordered(self._fetch, gen()):
                try:
                    if err is not None or stream is None:
                        yield key, (errors.classify(err or ""), (err or "no data")[:500])
                        continue
                    data = stream.getvalue()
                    if self.reject_truncated and is_truncated(data):
                        yield key, ("image_truncated", f"{len(data)} bytes, no end marker")
                        continue
                    img, w, h, ow, oh, rerr = resizer(io.BytesIO(data))
                    if rerr is not None:
                        yield key, ("image_decode_error", rerr[:500])
                        continue
                    yield key, {"bytes": img, "format": sniff_format(img), "width": w, "height": h,
                                "orig_width": ow, "orig_height": oh, "sha256": hashlib.sha256(data).hexdigest()}
                finally:
                    gate.release()

    def _expected_hashes(self, table: pa.Table) -> list | None:
        if self.verify_hash is None:
            return None
        if self.hash_col not in table.column_names:
            raise ValueError(f"download.verify_hash: the input has no column {self.hash_col!r} (set download.hash_col)")
        return table.column(self.hash_col).cast(pa.string()).to_pylist()

    def process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        active = schema.active_mask(table).to_numpy(zero_copy_only=False)
        urls = table.column("url").to_pylist()
        out = {k: [None] * n for k in self.writes}
        status = table.column("status").to_pylist()
        stage = table.column("stage").to_pylist()
        reason = table.column("reason").to_pylist()
        error = table.column("error").to_pylist()

        def fail(i, code, message):
            status[i], stage[i], reason[i], error[i] = schema.FAILED, self.name, code, message

        todo = []
        for i in np.flatnonzero(active):
            url = urls[i]
            if not url or not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
                fail(i, "download_invalid_url", f"not an http(s) URL: {url!r}"[:500])
            else:
                todo.append((int(i), url))

        expected = self._expected_hashes(table)
        for i, result in self.fetch_all(todo):
            if isinstance(result, tuple):
                fail(i, *result)
                continue
            if expected is not None and expected[i] and expected[i].strip().lower() != result["sha256"]:
                fail(i, "download_hash_mismatch", f"sha256 {result['sha256']}, input says {expected[i]}"[:500])
                continue
            out["image"][i] = result["bytes"]
            out["image_format"][i] = result["format"]
            out["width"][i], out["height"][i] = result["width"], result["height"]
            # with disable_all_reencoding the resizer reports no sizes; keep what we know
            out["orig_width"][i], out["orig_height"][i] = result["orig_width"], result["orig_height"]
            out["sha256"][i] = result["sha256"]

        table = schema.set_rows(
            table,
            pa.array([True] * n),
            {"status": status, "stage": stage, "reason": reason, "error": error},
        )
        for name, typ in self.writes.items():
            # build the image column in chunks: one pa.array over all bytes doubles its buffer while the
            # Python list is still alive (+660 MB on a 10k-image part, measured)
            values = out.pop(name)
            arr = [pa.array(values[i:i + 1024], typ) for i in range(0, max(n, 1), 1024)]
            del values
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, arr)
            else:
                table = table.append_column(pa.field(name, typ), arr)
        return table
