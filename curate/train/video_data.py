"""Video samples for `curate train` / `curate eval`: a clip's `<key>.mp4` becomes one storyboard image.

Why a storyboard (k frames evenly spaced over the clip, tiled in time order into a square grid) rather
than one keyframe or the mean of per-frame embeddings: both of those are blind to the order of frames, so
"moves left" and "moves right" (the same positions, reversed) look identical to them; a storyboard keeps
the order and is still one image, so the existing open_clip model, loss, loop and evaluator train and
score video-text pairs unchanged (`--video-frames K` switches the data path; 0 = images).

Every decode is bounded: at most MAX_DECODED frames are decoded per clip (a longer clip is sampled from
its first MAX_DECODED frames) and frames are scaled to FRAME_SIDE on decode, so one bad or huge video
costs a bounded amount of time and memory and fails alone (the caller counts it as a skip).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

VIDEO_KEYS = ("mp4", "webm", "mkv", "mov", "avi")
MAX_DECODED = 600   # frames decoded per clip at most (60 s at 10 fps, 20 s at 30 fps)
FRAME_SIDE = 64     # each storyboard cell, in pixels, before the model's own preprocessing
MAX_FRAMES = 16     # --video-frames at most: a 4x4 storyboard


class VideoDecodeError(ValueError):
    """A clip with no decodable frame."""


def require_decoder(what: str) -> None:
    """One line before any work when --video-frames is asked for without the video extra (PyAV)."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise ValueError(f"{what} with --video-frames needs PyAV, which is not installed: "
                         "pip install 'curate[video]'") from None


def grid_shape(k: int) -> tuple[int, int]:
    """(rows, cols) of the smallest square-ish grid holding k cells, filled row by row."""
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def sample_frames(data: bytes, k: int, side: int = FRAME_SIDE) -> np.ndarray:
    """k RGB frames (uint8, k x side x side x 3) evenly spaced over the clip, first and last included."""
    try:
        import av
    except ImportError:  # checked up front by require_decoder(); this keeps a direct call one line too
        raise VideoDecodeError("decoding video needs PyAV: pip install 'curate[video]'") from None

    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as c:
            if not c.streams.video:
                raise VideoDecodeError("no video stream")
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(width=side, height=side, format="rgb24"))
                if len(frames) >= MAX_DECODED:
                    break
    except VideoDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - PyAV/FFmpeg raise many kinds; a truncated tail still yields frames
        if not frames:
            raise VideoDecodeError(f"{type(err).__name__}: {err}") from None
    if not frames:
        raise VideoDecodeError("no decodable frame")
    idx = np.linspace(0, len(frames) - 1, k).round().astype(int)
    return np.stack([frames[i] for i in idx])


def storyboard(frames: np.ndarray) -> Image.Image:
    """Tile frames (T x H x W x 3) row by row, in time order, into one square-ish image; spare cells black."""
    t, h, w, _ = frames.shape
    rows, cols = grid_shape(t)
    board = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(t):
        r, c = divmod(i, cols)
        board[r * h:(r + 1) * h, c * w:(c + 1) * w] = frames[i]
    return Image.fromarray(board)


class _BoardCache:
    """Storyboards by (sha1 of the clip's bytes, k), least recently used out beyond `max_bytes`.

    Why: training passes over the same clips many times and decoding is ~15 ms a clip against ~3 ms of
    preprocessing; the board is a deterministic function of the bytes, so each process decodes a clip once.
    """

    def __init__(self, max_bytes: int = 128 << 20):
        from collections import OrderedDict

        self.max_bytes, self.bytes, self.items = max_bytes, 0, OrderedDict()

    def get(self, data: bytes, k: int) -> Image.Image:
        import hashlib

        key = (hashlib.sha1(data).digest(), k)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        board = storyboard(sample_frames(data, k))
        self.items[key] = board
        self.bytes += board.width * board.height * 3
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.width * old.height * 3
        return board


_CACHE = _BoardCache()


def video_image(data: bytes, k: int) -> Image.Image:
    """The storyboard of k frames of one encoded clip: what the model sees for a video sample."""
    if not 1 <= k <= MAX_FRAMES:
        raise ValueError(f"video frames must be between 1 and {MAX_FRAMES}, not {k}")
    return _CACHE.get(data, k)


def video_key(sample: dict) -> str | None:
    """The tar member holding the sample's video, if any."""
    return next((k for k in VIDEO_KEYS if k in sample), None)
