"""The `download` stage for image-text rows: curate.download.fetch fetches, img2dataset's Resizer resizes.

The fetcher (curate.download.fetch) bounds each request's total time, bytes and redirects and keeps
img2dataset's User-Agent and X-Robots-Tag opt-out; img2dataset's `Resizer` decodes, resizes and re-encodes
with OpenCV. Instead of writing img2dataset shards we return the bytes and a reason code per row, so every
URL becomes a metadata row and later stages can score and filter before anything is sharded. URLs are
fetched as browsers would (curate.download.urls.normalize); the `url` column keeps the URL as given, with
credentials (userinfo, token query values) redacted.
"""
from __future__ import annotations

import hashlib
import io
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate import schema
from curate.download import errors, urls as urlfmt
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
    reasons: ClassVar[dict[str, str]] = {**errors.REASONS, **IMAGE_REASONS}

    image_size: int = Field(256, ge=8, le=8192)
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "center_crop"
    resize_only_if_bigger: bool = False
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=0, le=100)
    timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="total per attempt, body included")
    retries: int = Field(0, ge=0, le=10)
    max_bytes: int = Field(32 << 20, ge=1024, description="largest response body (decoded), in bytes")
    max_redirects: int = Field(5, ge=0, le=30)
    threads: int = Field(32, ge=1, le=1024)
    user_agent_token: str | None = None
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    reject_truncated: bool = True

    def _resizer(self):
        from curate.download.i2d import Resizer, ResizeMode

        return Resizer(
            image_size=self.image_size,
            resize_mode=ResizeMode[self.resize_mode],
            resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality if self.encode_format != "png" else min(self.encode_quality, 9),
        )

    def limits(self, **extra):
        from curate.download.fetch import Limits

        return Limits(**extra, timeout_s=self.timeout_s, max_bytes=self.max_bytes, retries=self.retries,
                      max_redirects=self.max_redirects,
                      user_agent_token=self.user_agent_token.strip().lower() if self.user_agent_token else None,
                      disallowed_header_directives=frozenset(d.strip().lower() for d in self.disallowed_header_directives))

    def fetch_all(self, items: list[tuple[object, str]], limits=None):
        """Yield (key, result) per (key, url), in completion order: result is a dict of image fields
        (bytes, format, width, height, orig_width, orig_height, sha256) or (reason code, message)."""
        from curate.download.fetch import FetchError, fetch_many

        if not items:
            return
        resizer = self._resizer()
        # Like img2dataset: at most 2x threads downloaded-but-not-yet-resized images in memory.
        for key, data in fetch_many(items, limits or self.limits(), concurrency=self.threads, buffer=self.threads * 2):
            if isinstance(data, FetchError):
                yield key, (data.reason, str(data))
                continue
            if self.reject_truncated and is_truncated(data):
                yield key, ("image_truncated", f"{len(data)} bytes, no end marker")
                continue
            img, w, h, ow, oh, rerr = resizer(io.BytesIO(data))
            if rerr is not None:
                yield key, ("image_decode_error", rerr[:500])
                continue
            yield key, {"bytes": img, "format": sniff_format(img), "width": w, "height": h,
                        "orig_width": ow, "orig_height": oh, "sha256": hashlib.sha256(data).hexdigest()}

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
            try:
                urlfmt.normalize(url)
            except urlfmt.InvalidURL as err:
                fail(i, "download_invalid_url", urlfmt.redact(f"{err}: {url!r}")[:500])
            else:
                todo.append((int(i), url))

        for i, result in self.fetch_all(todo):
            if isinstance(result, tuple):
                fail(i, *result)
                continue
            out["image"][i] = result["bytes"]
            out["image_format"][i] = result["format"]
            out["width"][i], out["height"][i] = result["width"], result["height"]
            # with disable_all_reencoding the resizer reports no sizes; keep what we know
            out["orig_width"][i], out["orig_height"][i] = result["orig_width"], result["orig_height"]
            out["sha256"][i] = result["sha256"]

        columns = {"status": status, "stage": stage, "reason": reason, "error": error}
        if any(urlfmt.has_credentials(u) for u in urls if isinstance(u, str)):
            columns["url"] = [urlfmt.redact(u) if isinstance(u, str) else u for u in urls]
        table = schema.set_rows(table, pa.array([True] * n), columns)
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
