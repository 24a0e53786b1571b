"""The one way curate turns image bytes from strangers into pixels: bounded, and colour-correct or refused.

Why one module: OpenCV's `imdecode` (img2dataset's Resizer) and bare `PIL.Image.open(...).convert("RGB")`
both decode whatever the header declares (a 249 KB PNG declaring 8000x8000 RGBA took a worker to 4.9 GB)
and both turn some legal images into wrong pixels (16-bit grey through `convert("L")` clips mid-grey to
white; OpenCV ignores EXIF orientation). Every decode in curate/ and filters/ goes through here, so each
rule below holds everywhere:

* Bounded. The header is read first (PIL's lazy open parses it without decoding pixels; animated WebP's
  canvas is read from its VP8X chunk before PIL, whose WebP decoder allocates the canvas at open) and an
  image declaring more than `max_pixels` is refused: `image_too_many_pixels`. PIL's own
  DecompressionBombError (declared > 2 x Image.MAX_IMAGE_PIXELS) maps to the same reason. Only web image
  formats are parsed (`FORMATS`): no EPS/PDF (Ghostscript), no exotic plugins. PNG text/ICC chunks are
  bounded by PIL (ImageFile / PngImagePlugin MAX_TEXT_CHUNK) and fail as `image_decode_error`.
* Correct. The first frame (animated GIF/WebP/APNG: frame 0, i.e. APNG's default image), EXIF orientation
  applied as browsers do, then to 8 bits per channel:
    - 16-bit grey (I;16*, and I from a 16-bit PNG): round(v * 255 / 65535). 16-bit RGB(A)/LA PNGs are read
      by PIL at their high byte (at most 1 level from rounding).
    - alpha (RGBA, LA, palette or grey/RGB with tRNS, premultiplied RGBa/La): composited over white,
      c * a + 255 * (1 - a), rounded: what img2dataset's Resizer does, and what a white page shows.
    - palette -> RGB; CMYK (incl. Adobe-inverted JPEGs) -> RGB with PIL's (255 - c)(255 - k)/255 (embedded
      ICC profiles are not applied); YCbCr -> RGB; 1-bit -> 0/255 grey.
    - grey stays one channel (L) in `decode`; `decode_rgb` repeats it to RGB.
    - I (32-bit integer, not from PNG), F (float) and anything else with no defined 8-bit mapping:
      refused as `image_unsupported_mode`, never guessed.
"""
from __future__ import annotations

import functools
import io
import re
import threading
from contextlib import contextmanager

import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000
# PIL refuses images declaring more than 2 x Image.MAX_IMAGE_PIXELS (DecompressionBombError) at open
PIL_HARD_LIMIT = 2 * (1024 * 1024 * 1024 // 4 // 3)

# web image formats (PIL format names; JPEG covers MPO); anything else is `image_decode_error`, other
# plugins are never tried. Those this Pillow lacks (AVIF before 11.2) are left out.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "JPEG2000", "PPM")

REASONS = {
    "image_decode_error": "the bytes are not a decodable image (or not a web image format)",
    "image_too_many_pixels": "the header declares more than max_pixels pixels: refused before decoding",
    "image_unsupported_mode": "a pixel mode with no defined 8-bit mapping (32-bit integer, float, LAB, ...)",
    "image_truncated": "the image file ends early (JPEG without EOI marker, PNG without IEND)",
}

BAND_PIXELS = 1 << 22  # pixels converted at a time (see _eight_bit)
_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


class ImageError(ValueError):
    """An image refused for a declared reason (one of REASONS); str() is the detail for the `error` column."""

    def __init__(self, reason: str, message: str):
        super().__init__(_ADDRESS.sub(">", message))  # PIL names `<_io.BytesIO object at 0x7f..>`: not reproducible
        self.reason = reason


@functools.cache
def _formats() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(f for f in FORMATS if f in Image.ID)


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """Canvas size from an extended WebP's VP8X chunk (24-bit minus-one fields), or None."""
    if data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


def _check(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError("image_too_many_pixels", f"{w}x{h} = {w * h:,} pixels > max_pixels {max_pixels:,}")


def open_checked(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS):
    """PIL image of `data`, header parsed and pixels NOT decoded, declaring at most max_pixels."""
    from PIL import Image

    if not data:
        raise ImageError("image_decode_error", "0 bytes")
    canvas = _webp_canvas(data)
    if canvas:
        _check(*canvas, max_pixels)
    try:
        im = Image.open(io.BytesIO(data), formats=_formats())
    except Image.DecompressionBombError as err:
        raise ImageError("image_too_many_pixels", str(err)[:300]) from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types on bad bytes; all mean "not an image"
        raise ImageError("image_decode_error", f"{type(err).__name__}: {err}"[:500]) from None
    _check(*im.size, max_pixels)
    return im


def _over_white(px: np.ndarray) -> np.ndarray:
    """Composite colour+alpha (last channel) over white, rounded: c * a + 255 * (1 - a)."""
    a = px[..., -1:].astype(np.float32) / 255.0
    out = px[..., :-1].astype(np.float32) * a + 255.0 * (1.0 - a)
    out = np.rint(out, out=out).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _band_to_8bit(im, fmt: str | None) -> np.ndarray:
    """Pixels of a loaded PIL image (or a band of one) as uint8, (H, W) grey or (H, W, 3) RGB."""
    mode = im.mode
    if mode in _GREY16 or (mode == "I" and fmt == "PNG"):
        v = np.asarray(im).astype(np.uint32)
        return ((v * 255 + 32767) // 65535).astype(np.uint8)
    if mode in ("L", "RGB"):
        if "transparency" in im.info:  # one colour marked transparent (PNG tRNS): it shows the page
            return _over_white(np.asarray(im.convert("RGBA")))
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return _over_white(np.asarray(im if mode == "LA" else im.convert("LA")))
    if mode in ("P", "PA"):
        if mode == "P" and "transparency" not in im.info:
            return np.asarray(im.convert("RGB"))
        return _over_white(np.asarray(im.convert("RGBA")))
    if mode in ("RGBA", "RGBa"):
        return _over_white(np.asarray(im if mode == "RGBA" else im.convert("RGBA")))
    if mode in ("RGBX", "CMYK", "YCbCr"):
        return np.asarray(im.convert("RGB"))
    raise ImageError("image_unsupported_mode", f"pixel mode {mode} ({fmt}) has no defined 8-bit mapping")


def _eight_bit(im) -> np.ndarray:
    """`_band_to_8bit` of the whole image, in bands of about BAND_PIXELS rows x width when it is large.

    Whole-image conversion holds several full-size temporaries (PIL's tobytes joins chunks: 2x; alpha
    compositing in float32: 4x per channel), ~1 GB for a 49 Mpx RGBA; in bands only the uint8 result is
    full size."""
    w, h = im.size
    step = max(1, BAND_PIXELS // max(1, w))
    if h <= step:
        return _band_to_8bit(im, im.format)
    out = None
    for y in range(0, h, step):
        band = _band_to_8bit(im.crop((0, y, w, min(h, y + step))), im.format)
        if out is None:
            out = np.empty((h,) + band.shape[1:], np.uint8)
        out[y:y + band.shape[0]] = band
    return out


def _upright(px: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8) to (H, W[, C]) pixels, as browsers display them."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
              8: lambda a: np.rot90(a, 1)}.get(orientation)
    return np.ascontiguousarray(turned(px)) if turned else px


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no orientation, as in browsers
        return 1


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> np.ndarray:
    """uint8 pixels of the first frame, upright: (H, W) for grey sources, (H, W, 3) RGB otherwise.

    draft: for JPEG, let libjpeg decode at the smallest DCT scale still >= draft x draft (cheap thumbnails)."""
    return load(open_checked(data, max_pixels), max_pixels, draft)


def load(im, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> np.ndarray:
    """`decode` for an image from `open_checked` (so a caller can budget its declared size first); closes it."""
    from PIL import Image

    try:
        declared = im.size
        if draft and im.format == "JPEG":
            im.draft(im.mode if im.mode in ("L", "CMYK") else "RGB", (draft, draft))
        try:
            im.load()
        except Image.DecompressionBombError as err:
            raise ImageError("image_too_many_pixels", str(err)[:300]) from None
        except Exception as err:  # noqa: BLE001 - truncated, corrupt, unsupported codec data: one bad image
            reason = "image_truncated" if "truncated" in str(err) else "image_decode_error"
            raise ImageError(reason, f"{type(err).__name__}: {err}"[:500]) from None
        if im.size[0] * im.size[1] > declared[0] * declared[1]:  # never expected: a plugin grew the image
            _check(*im.size, max_pixels)
        orientation = _orientation(im)
        px = _eight_bit(im)
    finally:
        im.close()  # PIL's copy goes before anything else is allocated
    return _upright(px, orientation)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None):
    """The image as a loaded PIL RGB image (for models, hashes, thumbnails): `decode`, grey repeated to RGB."""
    from PIL import Image

    px = decode(data, max_pixels, draft)
    return Image.fromarray(px).convert("RGB") if px.ndim == 2 else Image.fromarray(px)


class PixelBudget:
    """At most `limit` declared pixels being decoded at once in this process.

    A download worker runs dozens of threads; each may hold a decoded image. Bounding pixels in flight (not
    threads) lets hundreds of thumbnails decode together while images near max_pixels go one at a time."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._free = self.limit
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        n = max(1, min(int(pixels), self.limit))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n
        try:
            yield
        finally:
            with self._cond:
                self._free += n
                self._cond.notify_all()
