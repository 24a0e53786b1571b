"""Write small synthetic videos with PyAV: a shape moving over a background, scene by scene.

Used by the demo corpus, the tests and the benchmark, so all three cut and score the same kind of video.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1), "still": (0, 0)}
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40),
           "white": (240, 240, 240), "purple": (150, 60, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210)}
BACKGROUNDS = {"black": (10, 10, 10), "grey": (110, 110, 110), "navy": (20, 25, 70), "beige": (215, 200, 160)}
SHAPES = ("square", "circle")


LANES = (0.25, 0.5, 0.75)  # where the shape travels across the frame, as a fraction of the other axis
SIZES = {"small": 0.12, "large": 0.2}  # radius as a fraction of the frame side


@dataclass
class Scene:
    shape: str
    colour: str
    direction: str
    background: str
    seconds: float
    lane: float = 0.5
    size: str = "small"

    def caption(self) -> str:
        art = "an" if self.size[0] in "aeiou" else "a"
        what = f"{art} {self.size} {self.colour} {self.shape}"
        if self.direction == "still":
            return f"{what} stays still on a {self.background} background"
        if self.direction in ("left", "right"):
            where = {0.25: "along the top", 0.5: "through the middle", 0.75: "along the bottom"}[self.lane]
        else:
            where = {0.25: "on the left", 0.5: "in the middle", 0.75: "on the right"}[self.lane]
        return f"{what} moves {self.direction} {where} on a {self.background} background"


def encoder_name() -> str:
    """H.264 (libx264) when this FFmpeg build has it, else MPEG-4 part 2."""
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - UnknownCodecError and friends: try the next
            continue
    raise RuntimeError("this FFmpeg build has no H.264 or MPEG-4 encoder")


def frame_of(scene: Scene, i: int, n: int, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    r = max(3, int(round(size * SIZES[scene.size])))
    dx, dy = DIRECTIONS[scene.direction]
    span = size - 2 * r - 2
    f = i / max(1, n - 1)
    lane = r + 1 + span * (scene.lane - 0.25) * 2 if scene.lane != 0.5 else size / 2
    cx = r + 1 + span * (f if dx > 0 else 1 - f) if dx else (lane if dy else size / 2)
    cy = r + 1 + span * (f if dy > 0 else 1 - f) if dy else (lane if dx else size / 2)
    yy, xx = np.mgrid[0:size, 0:size]
    if scene.shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    else:
        mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    img[mask] = COLOURS[scene.colour]
    if rng is not None:  # a little sensor noise, so "static" is not bit-identical frames
        img = np.clip(img.astype(np.int16) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
    return img


def encode(frames, fps: int, *, codec: str | None = None, gop: int | None = None, fmt: str = "mp4",
           width: int | None = None, height: int | None = None, audio: bool = False) -> bytes:
    """Encode RGB uint8 frames (an iterable of HxWx3 arrays) into a video file's bytes."""
    import av

    buf = io.BytesIO()
    codec = codec or encoder_name()
    with av.open(buf, "w", format=fmt) as out:
        vs = None
        for arr in frames:
            if vs is None:
                vs = out.add_stream(codec, rate=fps)
                vs.width, vs.height = width or arr.shape[1], height or arr.shape[0]
                vs.pix_fmt = "yuv420p"
                vs.codec_context.gop_size = gop or fps
                if codec in ("libx264", "h264"):  # keyframes only where asked, no B-frames: clean GOP cuts
                    vs.codec_context.options = {"sc_threshold": "0", "bf": "0", "preset": "veryfast"}
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        if vs is not None:
            for pkt in vs.encode():
                out.mux(pkt)
        if audio:
            add_tone(out, seconds=1.0)
    return buf.getvalue()


def add_tone(out, seconds: float, rate: int = 16000) -> None:
    import av

    a = out.add_stream("aac", rate=rate)
    a.layout = "mono"
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    step = 1024
    for i in range(0, len(samples), step):
        fr = av.AudioFrame.from_ndarray(samples[None, i:i + step], format="fltp", layout="mono")
        fr.sample_rate = rate
        fr.pts = i
        fr.time_base = Fraction(1, rate)
        for pkt in a.encode(fr):
            out.mux(pkt)
    for pkt in a.encode():
        out.mux(pkt)


def audio_only(seconds: float = 1.0) -> bytes:
    """An .m4a-style mp4 with one AAC stream and no video."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        add_tone(out, seconds)
    return buf.getvalue()


def scenes_video(scenes: list[Scene], fps: int = 10, size: int = 64, seed: int = 0, gop: int | None = None) -> bytes:
    """A video of consecutive scenes; with the default GOP (1 s) every whole-second scene cut is a keyframe."""
    rng = np.random.default_rng(seed)

    def frames():
        for sc in scenes:
            n = int(round(sc.seconds * fps))
            for i in range(n):
                yield frame_of(sc, i, n, size, rng)

    return encode(frames(), fps, gop=gop or fps)


def rescale(data: bytes, size: int, fps: int) -> bytes:
    """The same video scaled to size x size and re-encoded (a re-upload's near-duplicate)."""
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(width=size, height=size, format="rgb24") for f in c.decode(video=0)]
    return encode(frames, fps, gop=fps)
