"""Image bytes for the pixel tests and bench/pixels.py: images that need care to get right, and bombs.

Built here with numpy/PIL (and zlib/struct where PIL cannot write the format: 16-bit RGB PNG), each with the
pixels a correct decoder must produce, computed from the source arrays with numpy, not by a decoder.
"""
from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import struct
import zlib

import numpy as np
from PIL import Image

WHITE = 255.0


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, colour_type: int, bit_depth: int, idat: bytes, extra: bytes = b"") -> bytes:
    """A PNG from a ready zlib stream of filtered rows (filter byte 0 + row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_from_array(a: np.ndarray, colour_type: int) -> bytes:
    """PNG of a uint8/uint16 array (H, W[, C]) written directly (PIL cannot write 16-bit RGB(A))."""
    bits = 16 if a.dtype == np.uint16 else 8
    a = a.astype(">u2") if bits == 16 else a
    rows = a.reshape(a.shape[0], -1)
    raw = b"".join(b"\x00" + r.tobytes() for r in rows)
    return png(a.shape[1], a.shape[0], colour_type, bits, zlib.compress(raw, 6))


def zeros_zlib(total: int, chunk: int) -> bytes:
    """A zlib stream of `total` zero bytes (a multiple of `chunk`) without compressing them all.

    Each chunk is deflated and ended by Z_FULL_FLUSH (which resets the window), so every chunk deflates to
    the same bytes and the stream is that segment repeated; the Adler-32 of n zero bytes is n << 16 | 1."""
    assert total % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(b"\0" * chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    return b"\x78\xda" + seg * (total // chunk) + tail + struct.pack(">I", ((total % 65521) << 16) | 1)


def zero_png(width: int, height: int, colour_type: int, channels: int) -> bytes:
    """A valid all-zero 8-bit PNG of any size in a small file (what the 249 KB 8000x8000 RGBA bomb is)."""
    row = width * channels + 1
    rows_per_chunk = max(1, min(height, (1 << 20) // row))
    while height % rows_per_chunk:
        rows_per_chunk -= 1
    return png(width, height, colour_type, 8, zeros_zlib(row * height, row * rows_per_chunk))


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _over_white(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Expected colour of c (0..1) with alpha a (0..1) on white, in 0..255 levels."""
    return c * 255.0 * a + WHITE * (1 - a)


def blocks(colours: list, size: int = 16, cols: int = 4) -> np.ndarray:
    """Flat size x size patches (JPEG-friendly: 8x8 blocks stay flat), cols per row."""
    n = len(colours)
    rows = -(-n // cols)
    first = np.asarray(colours[0])
    out = np.zeros((rows * size, cols * size) + first.shape, first.dtype)
    for k, c in enumerate(colours):
        y, x = divmod(k, cols)
        out[y * size:(y + 1) * size, x * size:(x + 1) * size] = c
    return out


RNG = np.random.default_rng(13)


def correct_cases() -> dict[str, tuple[bytes, np.ndarray, float]]:
    """name -> (bytes, expected uint8-level pixels (H, W) grey or (H, W, 3) RGB as float, max abs tolerance)."""
    cases = {}
    # 16-bit grey: a ramp through mid-grey (32896 = 128 * 257), which 8-bit clipping turns white
    g16 = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)
    g16[0, :8] = 32896
    cases["grey16_png"] = (png_from_array(g16, 0), g16 / 65535.0 * 255.0, 0.51)
    rgb16 = RNG.integers(0, 65536, (24, 32, 3)).astype(np.uint16)
    rgb16[0, 0] = (32896, 65535, 0)
    cases["rgb16_png"] = (png_from_array(rgb16, 2), rgb16 / 65535.0 * 255.0, 1.01)
    rgba16 = RNG.integers(0, 65536, (24, 32, 4)).astype(np.uint16)
    cases["rgba16_png"] = (png_from_array(rgba16, 6),
                           _over_white(rgba16[..., :3] / 65535.0, rgba16[..., 3:] / 65535.0), 2.01)
    la16 = RNG.integers(0, 65536, (20, 20, 2)).astype(np.uint16)
    cases["la16_png"] = (png_from_array(la16, 4), _over_white(la16[..., :1] / 65535.0, la16[..., 1:] / 65535.0)[..., 0],
                         2.01)
    # 8-bit alpha
    rgba = RNG.integers(0, 256, (24, 32, 4)).astype(np.uint8)
    cases["rgba_png"] = (_save(Image.fromarray(rgba, "RGBA"), "PNG"),
                         _over_white(rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0), 0.51)
    la = RNG.integers(0, 256, (20, 24, 2)).astype(np.uint8)
    cases["la_png"] = (_save(Image.fromarray(la, "LA"), "PNG"),
                       _over_white(la[..., :1] / 255.0, la[..., 1:] / 255.0)[..., 0], 0.51)
    # palette with a transparent index (tRNS): that index shows white
    pal = RNG.integers(0, 256, (16, 3)).astype(np.uint8)
    idx = RNG.integers(0, 16, (20, 28)).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(pal.flatten().tolist())
    want = pal[idx].astype(float)
    want[idx == 5] = WHITE
    cases["palette_trns_png"] = (_save(p, "PNG", transparency=5), want, 0)
    cases["palette_gif"] = (_save(p, "GIF"), pal[idx].astype(float), 0)
    rgb = RNG.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    rgb[3:6, 4:9] = (10, 20, 30)  # the colour tRNS marks transparent (none of the random pixels is exactly it)
    want = rgb.astype(float)
    want[(rgb == (10, 20, 30)).all(axis=2)] = WHITE
    cases["rgb_trns_png"] = (_save(Image.fromarray(rgb), "PNG", transparency=(10, 20, 30)), want, 0)
    bw = RNG.integers(0, 2, (16, 24)).astype(bool)
    cases["bilevel_png"] = (_save(Image.fromarray(bw), "PNG"), bw * 255.0, 0)
    # CMYK JPEG (PIL writes Adobe-inverted CMYK); expected: (255 - c)(255 - k) / 255 per channel
    cmyk = blocks([RNG.integers(0, 256, 4).astype(np.uint8) for _ in range(8)])
    rgb = (255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:]) / 255.0
    cases["cmyk_jpeg"] = (_save(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100), rgb, 3.01)
    # EXIF orientation 6 (rotate 90 clockwise to display): store the upright image turned counter-clockwise
    upright = blocks([RNG.integers(0, 256, 3).astype(np.uint8) for _ in range(6)], cols=3)  # 48 wide, 32 tall
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    cases["exif_rotated_jpeg"] = (_save(stored, "JPEG", quality=100, subsampling=0, exif=exif), upright.astype(float), 3.01)
    prog = blocks([RNG.integers(0, 256, 3).astype(np.uint8) for _ in range(8)])
    cases["progressive_jpeg"] = (_save(Image.fromarray(prog), "JPEG", quality=100, subsampling=0, progressive=True),
                                 prog.astype(float), 3.01)
    grey = blocks([RNG.integers(0, 256, ()).astype(np.uint8) for _ in range(8)])
    cases["grey_jpeg"] = (_save(Image.fromarray(grey), "JPEG", quality=100), grey.astype(float), 2.01)
    # animated: the first frame
    frames = [blocks([RNG.integers(0, 256, 3).astype(np.uint8) for _ in range(4)], cols=2) for _ in range(3)]
    ims = [Image.fromarray(f) for f in frames]
    cases["animated_webp"] = (_save(ims[0], "WEBP", save_all=True, append_images=ims[1:], lossless=True, duration=100),
                              frames[0].astype(float), 0)
    cases["apng"] = (_save(ims[0], "PNG", save_all=True, append_images=ims[1:], duration=100), frames[0].astype(float), 0)
    gif_frames = [Image.fromarray(f).quantize(16) for f in frames]
    first = gif_frames[0].convert("RGB")
    cases["animated_gif"] = (_save(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=100),
                             np.asarray(first).astype(float), 0)
    # 16-bit grey TIFF (I;16): scaled like the PNG
    t16 = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    cases["grey16_tiff"] = (_save(Image.fromarray(t16), "TIFF"), t16 / 65535.0 * 255.0, 0.51)
    return cases


def refused_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, reason): images with no defined 8-bit mapping, refused rather than guessed."""
    i32 = (np.arange(64, dtype=np.int32).reshape(8, 8) * 100000)
    f32 = np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)
    return {"int32_tiff": (_save(Image.fromarray(i32), "TIFF"), "image_unsupported_mode"),
            "float_tiff": (_save(Image.fromarray(f32), "TIFF"), "image_unsupported_mode")}


def bomb_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, reason): small files that declare (or decompress to) far more than any sane image."""
    small_gif = _save(Image.new("P", (1, 1)), "GIF")
    gif = small_gif[:6] + struct.pack("<HH", 65535, 65535) + small_gif[10:]
    webp = bytearray(_save(Image.new("RGB", (4, 4), (1, 2, 3)), "WEBP", save_all=True,
                           append_images=[Image.new("RGB", (4, 4), (3, 2, 1))], lossless=True))
    assert webp[12:16] == b"VP8X"
    webp[24:30] = (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")  # a 16384 x 16384 canvas
    small_jpeg = _save(Image.new("RGB", (8, 8), (9, 9, 9)), "JPEG")
    sof = small_jpeg.index(b"\xff\xc0")
    jpeg = small_jpeg[:sof + 5] + struct.pack(">HH", 65000, 65000) + small_jpeg[sof + 9:]
    plain = _save(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG")
    ztxt = png_chunk(b"zTXt", b"k\x00\x00" + zeros_zlib(100 << 20, 1 << 20))
    return {
        "png_rgba_8000": (zero_png(8000, 8000, 6, 4), "image_too_many_pixels"),
        "png_grey_32000": (zero_png(32000, 32000, 0, 1), "image_too_many_pixels"),
        "gif_canvas_65535": (gif, "image_too_many_pixels"),
        "webp_canvas_16384": (bytes(webp), "image_too_many_pixels"),
        "jpeg_65000": (jpeg, "image_too_many_pixels"),
        "png_ztxt_100mb": (plain[:33] + ztxt + plain[33:], "image_decode_error"),
    }


class Files(BaseHTTPRequestHandler):
    """Loopback HTTP handler for the test and bench/pixels.py: GET /NAME answers `files[NAME]` (404 if absent)."""

    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path.lstrip("/"))
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    """Serves `Files`; a deep listen backlog (socketserver's default is 5) so parallel downloads are not
    slowed by dropped SYNs that the kernel retries a second later."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address=("127.0.0.1", 0)):
        super().__init__(address, Files)
