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
    "video_decode_error": "FFmpeg cannot open the file as a video container (also: an image or a tar archive "
                          "that FFmpeg would read as still frames) or decode its first video frame",
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


# demuxers FFmpeg picks by content sniffing for still images: a JPEG/PNG (`*_pipe`, image2) or JPEGs found
# anywhere in the bytes (raw `mjpeg`, `mpjpeg`). None is a video container: a WebDataset tar of JPEGs named
# fake.mp4 probed as a 25 fps 64x64 mjpeg "video" and ended as dropped/clip_split/no_clips
_STILL_IMAGE_DEMUXERS = ("image2", "mjpeg", "mpjpeg")


def not_a_video(data: bytes, container: str | None = None) -> str | None:
    """Why `data` is no video container though FFmpeg may open it (a tar archive; an image read as frames
    by `container`, FFmpeg's demuxer name), None when it may be one."""
    if len(data) >= 262 and data[257:262] == b"ustar":
        return "a tar archive, not a video container"
    if container and (container in _STILL_IMAGE_DEMUXERS or container.endswith("_pipe")):
        return f"FFmpeg reads it as still images ({container}), not a video container"
    return None


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
    why = not_a_video(data)
    if why:
        return Probe(reason="video_decode_error", error=why)
    try:
        with open_container(data) as c:
            why = not_a_video(data, c.format.name)
            if why:
                return Probe(container=c.format.name, reason="video_decode_error", error=why)
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
