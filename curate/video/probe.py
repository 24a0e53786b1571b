"""Probe video bytes with PyAV (FFmpeg): container, codec, resolution, fps, duration, audio, and whether the
first frame decodes. Every way a file can be bad maps to one reason code; nothing here raises on bad bytes.

Pixels are bounded like images (curate.images): a stream whose declared width x height exceeds max_pixels
is refused before any frame is decoded (`video_too_many_pixels`), and so is a decoded frame that turns out
larger than declared (streams may change resolution); split.scan applies the same bound to every frame.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

REASONS = {
    "video_empty": "the file has zero bytes",
    "video_decode_error": "FFmpeg cannot open the file or decode its first video frame",
    "video_truncated": "an mp4/mov with a valid header that cannot be opened: cut short before its index",
    "video_no_video_stream": "the file has no video stream (audio only, subtitles only)",
    "video_too_many_pixels": "the video stream declares (or decodes to) frames of more than max_pixels pixels",
}
MAX_PIXELS = 50_000_000  # an 8K UHD frame is 33 Mpx; the same bound as curate.images.DEFAULT_MAX_PIXELS


class TooManyPixels(ValueError):
    """A frame size above the pixel bound; `reason` is the row's reason code."""

    reason = "video_too_many_pixels"


def check_pixels(width: int | None, height: int | None, max_pixels: int, what: str = "stream declares") -> None:
    """Raise TooManyPixels when width x height exceeds max_pixels (unknown sizes, 0 or None, pass)."""
    if width and height and width * height > max_pixels:
        raise TooManyPixels(f"{what} {width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}")


@dataclass
class Probe:
    container: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    has_audio: bool = False
    reason: str | None = None  # set when the file is unusable
    error: str | None = None


def open_container(data: bytes):
    import av

    return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> Probe:
    """What is in `data`; `reason` says why it is unusable (and `error` the FFmpeg message)."""
    import av

    if not data:
        return Probe(reason="video_empty", error="0 bytes")
    try:
        with open_container(data) as c:
            if not c.streams.video:
                return Probe(container=c.format.name, has_audio=bool(c.streams.audio), reason="video_no_video_stream",
                             error=f"streams: {', '.join(s.type for s in c.streams) or 'none'}")
            vs = c.streams.video[0]
            cc = vs.codec_context
            rate = vs.average_rate or vs.guessed_rate
            p = Probe(container=c.format.name, codec=cc.name, width=cc.width, height=cc.height,
                      fps=float(rate) if rate else None, duration=_duration(c, vs), has_audio=bool(c.streams.audio))
            check_pixels(cc.width, cc.height, max_pixels)  # before FFmpeg allocates a frame
            for frame in c.decode(vs):  # the first frame proves the codec data is real
                check_pixels(frame.width, frame.height, max_pixels, "first frame is")
                return p
            return Probe(**{**p.__dict__, "reason": "video_decode_error", "error": "no decodable video frame"})
    except TooManyPixels as err:
        return Probe(reason=err.reason, error=str(err))
    except av.error.FFmpegError as err:
        msg = f"{type(err).__name__}: {err}"[:500]
        # an mp4/mov that starts with a valid ftyp box but cannot be opened has lost its tail (and moov index)
        reason = "video_truncated" if data[4:8] == b"ftyp" else "video_decode_error"
        return Probe(reason=reason, error=msg)
    except Exception as err:  # noqa: BLE001 - any other failure inside FFmpeg bindings is still one bad file
        return Probe(reason="video_decode_error", error=f"{type(err).__name__}: {err}"[:500])
