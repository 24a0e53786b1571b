"""The `download` stage for image-text rows: curate.download.fetch fetches, img2dataset's Resizer resizes.

The fetcher (curate.download.fetch) bounds each request's total time, bytes and redirects and keeps
img2dataset's User-Agent and X-Robots-Tag opt-out. Decoding goes through curate.images (header checked
against max_pixels before any pixel is decoded, colour converted to 8 bits correctly or refused with a
reason), then `Resize` applies img2dataset's Resizer steps (same albumentations transforms, interpolations,
white border, OpenCV encoder) to those pixels. Instead of writing img2dataset shards we return the bytes and
a reason code per row, so every URL becomes a metadata row and later stages can score and filter before
anything is sharded. URLs are fetched as browsers would (curate.download.urls.normalize); the `url` column
keeps the URL as given, with credentials (userinfo, token query values) redacted.
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate import images, progress, schema
from curate.download import errors, urls as urlfmt
from curate.stage import Stage, register

IMAGE_REASONS = images.REASONS


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


class Resize:
    """img2dataset's Resizer from its resize step on, applied to pixels curate.images decoded.

    Same transforms and settings as `Resizer.__call__` (SmallestMaxSize + CenterCrop, LongestMaxSize +
    white PadIfNeeded, area down / lanczos up, `resize_only_if_bigger`), same OpenCV encoder and params, so
    an 8-bit RGB image gives the same bytes as img2dataset (tests/hostile/test_pixels.py checks every mode).
    Pixels come in as RGB or grey; channels are swapped to OpenCV's BGR on the small image, just before encoding.
    """

    def __init__(self, resizer):
        import albumentations as A
        import cv2

        from curate.download._i2d import ResizeMode

        self.r, self.cv2 = resizer, cv2
        size = resizer.image_size
        if resizer.resize_mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
            self.short_side = True
            self.fit = {i: A.SmallestMaxSize(max_size=size, interpolation=i, p=1.0)
                        for i in (resizer.downscale_interpolation, resizer.upscale_interpolation)}
            self.after = A.CenterCrop(height=size, width=size) if resizer.resize_mode == ResizeMode.center_crop else None
        elif resizer.resize_mode in (ResizeMode.border, ResizeMode.keep_ratio_largest):
            self.short_side = False
            self.fit = {i: A.LongestMaxSize(max_size=size, interpolation=i, p=1.0)
                        for i in (resizer.downscale_interpolation, resizer.upscale_interpolation)}
            self.after = A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT,
                                       value=[255, 255, 255], p=1.0) if resizer.resize_mode == ResizeMode.border else None
        else:  # ResizeMode.no
            self.fit = None

    def __call__(self, px: np.ndarray) -> tuple[bytes, int, int]:
        """(encoded bytes, width, height) of uint8 RGB (H, W, 3) or grey (H, W) pixels."""
        r = self.r
        if self.fit is not None:
            h, w = px.shape[:2]
            side = min(w, h) if self.short_side else max(w, h)
            downscale = side > r.image_size
            if not r.resize_only_if_bigger or downscale:
                interp = r.downscale_interpolation if downscale else r.upscale_interpolation
                px = self.fit[interp](image=px)["image"]
                if self.after is not None:
                    px = self.after(image=px)["image"]
        h, w = px.shape[:2]
        if px.ndim == 3:
            px = self.cv2.cvtColor(np.ascontiguousarray(px), self.cv2.COLOR_RGB2BGR)
        ok, buf = self.cv2.imencode(f".{r.encode_format}", px, params=r.encode_params)
        if not ok:
            raise ValueError(f"OpenCV could not encode {w}x{h} as {r.encode_format}")
        return buf.tobytes(), w, h


class RowChunks:
    """A stage's output columns for `n` rows, turned into Arrow one chunk of `size` rows at a time, as soon as
    every pending row of the chunk is done (fetches are submitted in row order, so chunks finish in turn).

    Holding every image of a part as Python bytes and then copying them into Arrow kept the part's images in
    memory twice at the end of the stage; freeing the Python list afterwards does not shrink the process,
    because glibc keeps the freed small blocks in its heaps. Per chunk, the Python bytes of one chunk are
    freed while the next chunk's arrive and reuse the same heap memory, so the part is held about once.
    """

    def __init__(self, n: int, types: dict[str, pa.DataType], pending, size: int = 1024):
        self.n, self.types, self.size = n, types, size
        self.values = {k: [None] * n for k in types}
        self.left = [0] * max(1, -(-n // size))
        for i in pending:
            self.left[i // size] += 1
        self.chunks: dict[int, dict[str, pa.Array]] = {}
        for c, left in enumerate(self.left):
            if left == 0:
                self._build(c)

    def put(self, i: int, **values) -> None:
        for k, v in values.items():
            self.values[k][i] = v

    def done(self, i: int) -> None:
        """Row i is final (fetched, or failed): build its chunk if it was the chunk's last pending row."""
        c = i // self.size
        self.left[c] -= 1
        if self.left[c] == 0:
            self._build(c)

    def _build(self, c: int) -> None:
        lo, hi = c * self.size, min(self.n, (c + 1) * self.size)
        built = {}
        for k, typ in self.types.items():
            built[k] = pa.array(self.values[k][lo:hi], typ)
            self.values[k][lo:hi] = [None] * (hi - lo)
        self.chunks[c] = built

    def column(self, name: str) -> pa.ChunkedArray:
        missing = [c for c in range(len(self.left)) if c not in self.chunks]
        if missing:
            raise RuntimeError(f"bug: rows of chunks {missing[:3]} were never marked done")
        return pa.chunked_array([self.chunks[c].pop(name) for c in range(len(self.left))], self.types[name])


class ImageFetch(Stage):
    """The settings and fetch/decode/resize machinery `download` and `doc_download` share (not a stage).

    Why a base of its own: settings only one of them applies (download's verify_hash) live on that stage,
    so the other cannot be given a setting it would ignore."""

    image_size: int = Field(256, ge=8, le=8192)  # px: short side (keep_ratio, center_crop), long side (others)
    resize_mode: Literal[  # center_crop / border: square (crop / white pad); keep_ratio*: aspect kept; no: size kept
        "no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "center_crop"
    resize_only_if_bigger: bool = False  # never upscale: smaller images keep their size (and are not cropped)
    encode_format: Literal["jpg", "png", "webp"] = "jpg"  # format the stored image is re-encoded to
    encode_quality: int = Field(95, ge=0, le=100)  # jpg/webp quality 0-100; png: compression level min(value, 9)
    timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="total per attempt, body included")
    retries: int = Field(0, ge=0, le=10)  # extra tries on transient errors (timeouts, resets, 408/429/5xx)
    max_bytes: int = Field(32 << 20, ge=1024, description="largest response body (decoded), in bytes")
    max_redirects: int = Field(5, ge=0, le=30)  # redirects followed (to http(s) only); more fail
    threads: int = Field(32, ge=1, le=1024)  # concurrent fetches per worker; up to 2x as many images wait to be decoded
    user_agent_token: str | None = None  # added to the User-Agent; X-Robots-Tag rules naming it then apply
    disallowed_header_directives: list[str] = [  # X-Robots-Tag directives that refuse an image; [] = ignore
        "noai", "noimageai", "noindex", "noimageindex"]
    reject_truncated: bool = Field(True, description="check JPEG/PNG end markers before decoding (cheap); "
                                   "the decoder refuses truncated data as image_truncated either way")
    max_pixels: int = Field(images.DEFAULT_MAX_PIXELS, ge=64, le=images.PIL_HARD_LIMIT,
                            description="refuse images whose header declares more pixels (image_too_many_pixels), "
                            "before decoding; also the pixels decoded at once per worker")

    def _resizer(self) -> Resize:
        from curate.download._i2d import Resizer, ResizeMode

        return Resize(Resizer(
            image_size=self.image_size,
            resize_mode=ResizeMode[self.resize_mode],
            resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality if self.encode_format != "png" else min(self.encode_quality, 9),
        ))

    def decode_resize(self, data: bytes, resize: Resize, budget: images.PixelBudget) -> dict | tuple[str, str]:
        """Image fields for downloaded bytes, or (reason code, message). Declared size is checked before any
        pixel is decoded; the decode then waits for its pixels in this worker's budget."""
        if self.reject_truncated and is_truncated(data):
            return "image_truncated", f"{len(data)} bytes, no end marker"
        try:
            im = images.open_checked(data, self.max_pixels)
            with budget.hold(im.size[0] * im.size[1]):
                px = images.load(im, self.max_pixels)
                oh, ow = px.shape[:2]
                img, w, h = resize(px)
                del px
        except images.ImageError as err:
            return err.reason, str(err)[:500]
        except Exception as err:  # noqa: BLE001 - a resize/encode failure is this image's, not the part's
            return "image_decode_error", f"{type(err).__name__}: {err}"[:500]
        return {"bytes": img, "format": sniff_format(img), "width": w, "height": h, "orig_width": ow,
                "orig_height": oh, "sha256": hashlib.sha256(data).hexdigest()}

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
        resize = self._resizer()
        budget = images.PixelBudget(self.max_pixels)
        # Like img2dataset: at most 2x threads downloaded-but-not-yet-resized images in memory.
        for key, data in fetch_many(items, limits or self.limits(), concurrency=self.threads, buffer=self.threads * 2):
            if isinstance(data, FetchError):
                yield key, (data.reason, str(data))
                continue
            yield key, self.decode_resize(data, resize, budget)


@register
class Download(ImageFetch):
    """Fetch each row's url with img2dataset's downloader, decode (curate.images), resize, record bytes, sizes, sha256."""

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

    # like img2dataset's verify_hash: check the downloaded bytes against an input column of hex digests
    # (an input `sha256` column is kept as input_sha256, since this stage writes its own sha256)
    verify_hash: Literal["sha256"] | None = None  # sha256: fail rows whose bytes differ from hash_col
    hash_col: str = "input_sha256"  # input column of expected hex digests for verify_hash

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

        expected = self._expected_hashes(table)
        cols = RowChunks(n, self.writes, (i for i, _ in todo))
        for i, result in self.fetch_all(todo):
            progress.tick()  # live rows/s while the part is in flight (a no-op unless a progress view listens)
            if isinstance(result, tuple):
                fail(i, *result)
            elif expected is not None and expected[i] and expected[i].strip().lower() != result["sha256"]:
                fail(i, "download_hash_mismatch", f"sha256 {result['sha256']}, input says {expected[i]}"[:500])
            else:
                # with disable_all_reencoding the resizer reports no sizes; orig_* keep what we know
                cols.put(i, image=result["bytes"], image_format=result["format"], width=result["width"],
                         height=result["height"], orig_width=result["orig_width"], orig_height=result["orig_height"],
                         sha256=result["sha256"])
            cols.done(i)

        columns = {"status": status, "stage": stage, "reason": reason, "error": error}
        if any(urlfmt.has_credentials(u) for u in urls if isinstance(u, str)):
            columns["url"] = [urlfmt.redact(u) if isinstance(u, str) else u for u in urls]
        table = schema.set_rows(table, pa.array([True] * n), columns)
        for name, typ in self.writes.items():
            arr = cols.column(name)
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, arr)
            else:
                table = table.append_column(pa.field(name, typ), arr)
        return table
