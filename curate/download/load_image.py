"""The `load_image` stage: the image of input rows that carry it (WebDataset tars, a folder of images,
Parquet with image bytes), in place of `download`.

It writes the same columns as `download` (image, image_format, width, height, orig_width, orig_height,
sha256), so every later stage works unchanged. The bytes are read here, in the workers, from where the
reader indexed them (file + byte offset + length), a row at a time and bounded by `max_bytes`; the driver
never holds them. By default the bytes are kept exactly as they came (decoded once to check them and to
measure them); `resize_mode` other than `no` resizes and re-encodes them like `download` does.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections import defaultdict
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from curate import images, schema
from curate.download.image import IMAGE_REASONS, Download, is_truncated, sniff_format
from curate.io import inputfs
from curate.io.wds_input import REASONS as INPUT_REASONS
from curate.stage import Stage, register

REASONS = {**IMAGE_REASONS, **INPUT_REASONS,
           "input_image_too_large": "the input image is larger than load_image.max_bytes"}


def _read_by_reference(reads: dict[str, list[tuple]]) -> dict:
    """{tag: bytes, or (reason, message)} for each (tag, offset, length, label) of each input file, read in
    offset order (a .tar.gz is decompressed: it only seeks forward cheaply)."""
    out: dict = {}
    for path, wanted in reads.items():
        try:
            with inputfs.open_read(path) as f:
                for tag, off, length, label in sorted(wanted, key=lambda r: r[1]):
                    f.seek(off)
                    data = f.read(length)
                    out[tag] = data if len(data) == length else (
                        "input_read_error", f"{path}: {label}{len(data)} of {length} bytes at offset {off}")
        except (OSError, EOFError, zlib.error) as err:  # EOFError, zlib.error: a damaged .tar.gz
            for tag, *_ in wanted:
                out.setdefault(tag, ("input_read_error", f"{path}: {type(err).__name__}: {err}"[:500]))
    return out


def _measure(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of image bytes as readers see them (upright, first frame), after a full, bounded decode
    through curate.images (declared size checked before any pixel is decoded)."""
    px = images.decode(data, max_pixels)
    return px.shape[1], px.shape[0]


@register
class LoadImage(Stage):
    """Read each row's image from the input it came with (tar member, image file or Parquet bytes)."""

    name: ClassVar[str] = "load_image"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[dict[str, pa.DataType]] = {**Download.writes, "extra_members": schema.EXTRA_MEMBERS_TYPE}
    reasons: ClassVar[dict[str, str]] = REASONS

    max_bytes: int = Field(64 << 20, ge=1)  # larger input images fail as input_image_too_large, unread
    max_pixels: int = Field(  # refuse images whose header declares more pixels (image_too_many_pixels)
        images.DEFAULT_MAX_PIXELS, ge=64, le=images.PIL_HARD_LIMIT)
    resize_mode: Literal[  # no: keep the input bytes as they are; else resize and re-encode as download does
        "no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "no"
    image_size: int = Field(256, ge=8, le=8192)  # px: short side (keep_ratio, center_crop), long side (others)
    resize_only_if_bigger: bool = False  # never upscale: smaller images keep their size (and are not cropped)
    encode_format: Literal["jpg", "png", "webp"] = "jpg"  # format resized images are re-encoded to
    encode_quality: int = Field(95, ge=0, le=100)  # jpg/webp quality 0-100; png: compression level min(value, 9)
    reject_truncated: bool = True  # fail JPEG/PNG bytes without an end marker (image_truncated) before decoding

    def _bytes(self, table: pa.Table, rows: list[int]) -> tuple[dict, dict]:
        """(image bytes, other members [{ext, data}]) of `rows`, each a (reason, message) where it cannot be
        had: images from input_image_bytes, else by reference, together with the sample's other members (a
        label, a mask: `input_extra_members`) in one pass over each input file in offset order, so a
        .tar.gz is decompressed once per part, not once per kind of member."""
        images_out: dict[int, bytes | tuple[str, str]] = {}
        names = table.column_names
        embedded = table.column("input_image_bytes") if "input_image_bytes" in names else None
        refs = {c: table.column(c) for c in ("input_file", "input_offset", "input_length", "input_extra_members")
                if c in names}
        reads: dict[str, list[tuple]] = defaultdict(list)  # file -> (tag, offset, length, label)
        extra_exts: dict[int, list[str]] = {}
        for i in rows:
            data = embedded[i].as_py() if embedded is not None else None
            if data is not None:
                images_out[i] = data if len(data) <= self.max_bytes else (
                    "input_image_too_large", f"{len(data)} bytes (max_bytes={self.max_bytes})")
                continue
            path = refs["input_file"][i].as_py() if "input_length" in refs else None
            length = refs["input_length"][i].as_py() if path is not None else None
            if length is None:
                images_out[i] = ("input_missing_image", "the input row carries no image")
                continue
            if length > self.max_bytes:
                images_out[i] = ("input_image_too_large", f"{length} bytes (max_bytes={self.max_bytes})")
                continue
            reads[path].append((("image", i), refs["input_offset"][i].as_py(), length, ""))
            extra = refs["input_extra_members"][i].as_py() if "input_extra_members" in refs else None
            for j, (ext, off, n) in enumerate(json.loads(extra) if extra else ()):
                reads[path].append((("extra", i, j), off, n, f"member .{ext}: "))
                extra_exts.setdefault(i, []).append(ext)
        got = _read_by_reference(reads)
        images_out.update({tag[1]: data for tag, data in got.items() if tag[0] == "image"})
        extras: dict[int, list[dict] | tuple[str, str]] = {}
        for i, exts in extra_exts.items():
            parts = [got[("extra", i, j)] for j in range(len(exts))]
            bad = next((p for p in parts if isinstance(p, tuple)), None)
            extras[i] = bad or [{"ext": ext, "data": data} for ext, data in zip(exts, parts)]
        return images_out, extras

    def _image(self, data: bytes, download: Download | None, resize, budget) -> dict | tuple[str, str]:
        if download is not None:  # resize and re-encode exactly as `download` does
            return download.decode_resize(data, resize, budget)
        if self.reject_truncated and is_truncated(data):
            return "image_truncated", f"{len(data)} bytes, no end marker"
        try:
            w, h = _measure(data, self.max_pixels)
        except images.ImageError as err:
            return err.reason, str(err)[:500]
        return {"bytes": data, "format": sniff_format(data), "width": w, "height": h,
                "orig_width": w, "orig_height": h, "sha256": hashlib.sha256(data).hexdigest()}

    def process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        active = [i for i, ok in enumerate(schema.active_mask(table).to_pylist()) if ok]
        download = resize = None
        if self.resize_mode != "no":
            download = Download(image_size=self.image_size, resize_mode=self.resize_mode,
                                resize_only_if_bigger=self.resize_only_if_bigger, encode_format=self.encode_format,
                                encode_quality=self.encode_quality, max_pixels=self.max_pixels,
                                reject_truncated=self.reject_truncated)
            resize = download._resizer()
        budget = images.PixelBudget(self.max_pixels)
        out = {k: [None] * n for k in self.writes}
        fail_reason: list = [None] * n
        fail_error: list = [None] * n
        images_in, extras = self._bytes(table, active)
        for i, data in images_in.items():
            result = data if isinstance(data, tuple) else self._image(data, download, resize, budget)
            if isinstance(result, tuple):
                fail_reason[i], fail_error[i] = result
                continue
            out["image"][i], out["image_format"][i] = result["bytes"], result["format"]
            out["width"][i], out["height"][i] = result["width"], result["height"]
            out["orig_width"][i], out["orig_height"][i] = result["orig_width"], result["orig_height"]
            out["sha256"][i] = result["sha256"]
        for i, extra in extras.items():
            if fail_reason[i] is not None:  # the row failed on its image: it carries no payload
                continue
            if isinstance(extra, tuple):
                fail_reason[i], fail_error[i] = extra
                out["image"][i] = None  # a failed row carries no payload
            else:
                out["extra_members"][i] = extra
        for name, typ in self.writes.items():
            table = schema.put_column(table, name, out.pop(name), typ)
        failed = pa.array([r is not None for r in fail_reason])
        if any(r is not None for r in fail_reason):
            table = schema.mark(table, failed, schema.FAILED, self.name, fail_reason, error=fail_error)
        return table
