"""Cut one video into clips in one decoding pass: frame differences (scene cuts, motion), candidate
keyframes (small JPEGs), packet keyframe times; then each clip is remuxed without re-encoding when both
its ends sit on keyframes, and re-encoded (H.264 via PyAV, MPEG-4 part 2 if this FFmpeg has no H.264
encoder) otherwise.

Memory per video: the previous 32x32 colour thumbnail, a few floats per decoded frame, the candidate JPEGs, the clips'
bytes; frames are never all held at once.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

THUMB = 32
MOVED = 12  # levels (of 255) in any channel: above compression noise, below any visible change


@dataclass
class Scan:
    times: np.ndarray  # presentation time of each decoded frame, seconds
    diffs: np.ndarray  # mean |thumb_i - thumb_{i-1}| / 255 of the busiest colour plane (diffs[0] = 0): scene cuts
    moved: np.ndarray  # fraction of thumb pixels with a channel that changed by > MOVED since the last frame
    keyframes: list[float]  # times of packets flagged as keyframes
    candidates: list[tuple[float, bytes]]  # (time, jpeg) sampled frames
    fps: float
    end: float  # time just after the last frame
    error: str | None = None  # decoding stopped early with this message


@dataclass
class Clip:
    start: float
    end: float
    keyframes: list[bytes] = field(default_factory=list)
    motion: float = 0.0
    data: bytes | None = None
    cut: str = "copy"


def _jpeg(frame, size: int, quality: int, reformatter=None) -> bytes:
    w, h = frame.width, frame.height
    scale = min(1.0, size / max(1, min(w, h)))
    kw = dict(width=max(2, int(round(w * scale))), height=max(2, int(round(h * scale))), format="rgb24",
              interpolation="FAST_BILINEAR")
    # a reused reformatter keeps its scaling context: half the cost of a fresh one per frame
    rgb = reformatter.reformat(frame, **kw) if reformatter is not None else frame.reformat(**kw)
    img = rgb.to_image()
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.linspace(0, h - 1, 2 * THUMB).astype(np.intp)
    xs = np.linspace(0, w - 1, 2 * THUMB).astype(np.intp)
    return ys[:, None], xs[None, :]


def _thumb(frame) -> np.ndarray:
    """About THUMB x THUMB samples of each colour plane, int16, shaped (3, THUMB, THUMB).

    For planar YUV (nearly every video) the decoder's own planes are strided in place: no colour
    conversion or scaling per frame, which would cost about as much as decoding a small frame itself.
    """
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"):
        out = []
        for plane in frame.planes[:3]:
            h, w = plane.height, plane.width
            arr = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)
            ys, xs = _grid(h, w)
            # 2x2 block sums of a strided grid: averages away sensor and compression noise
            out.append(arr[ys, xs].reshape(THUMB, 2, THUMB, 2).sum(axis=(1, 3), dtype=np.int16))
        return np.stack(out) // 4
    rgb = frame.to_ndarray(width=THUMB, height=THUMB, format="rgb24")
    return np.moveaxis(rgb, 2, 0).astype(np.int16)


def scan(data: bytes, *, sample_every_s: float, keyframe_size: int = 224, quality: int = 90,
         max_frames: int = 200_000) -> Scan:
    """Decode every frame once; keep what splitting, motion and keyframes need."""
    import av

    from curate.video.probe import open_container

    times: list[float] = []
    diffs: list[float] = []
    moved: list[float] = []
    keys: list[float] = []
    cands: list[tuple[float, bytes]] = []
    prev = None
    next_sample = 0.0
    error = None
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    with open_container(data) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            for packet in c.demux(vs):
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(float(packet.pts * packet.time_base))
                for frame in packet.decode():
                    t = frame.time if frame.time is not None else (times[-1] + 1 / (fps or 25) if times else 0.0)
                    # colour thumbs: a shape of the background's brightness but another hue still moves
                    thumb = _thumb(frame)
                    delta = np.abs(thumb - prev) if prev is not None and prev.shape == thumb.shape \
                        else np.zeros_like(thumb)
                    diffs.append(float(delta.reshape(len(delta), -1).mean(axis=1).max() / 255.0))  # busiest plane
                    moved.append(float((delta.max(axis=0) > MOVED).mean()))
                    prev = thumb
                    times.append(t)
                    if t + 1e-6 >= next_sample:
                        cands.append((t, _jpeg(frame, keyframe_size, quality, reformatter)))
                        next_sample = t + sample_every_s
                    if len(times) >= max_frames:
                        break
                if len(times) >= max_frames:
                    break
        except av.error.FFmpegError as err:  # a damaged tail: keep the frames decoded so far
            error = f"{type(err).__name__}: {err}"[:300]
    order = np.argsort(times, kind="stable")
    t = np.asarray(times, np.float64)[order]
    if len(t) >= 2:
        step = float(np.median(np.diff(t))) or (1 / fps if fps else 0.04)
    else:
        step = 1 / fps if fps else 0.04
    if not fps and len(t) >= 2:
        fps = 1 / step
    return Scan(times=t, diffs=np.asarray(diffs, np.float64)[order], moved=np.asarray(moved, np.float64)[order],
                keyframes=sorted(keys), candidates=cands,
                fps=fps, end=float(t[-1] + step) if len(t) else 0.0, error=error)


def boundaries(sc: Scan, *, mode: str, clip_s: float, min_clip_s: float, max_clip_s: float,
               scene_threshold: float) -> list[tuple[float, float]]:
    """Clip spans: fixed windows of clip_s, or scenes (cut where the frame difference jumps) split into
    pieces of at most max_clip_s; spans shorter than min_clip_s are left out."""
    if len(sc.times) == 0:
        return []
    if mode == "scene":
        cuts = [float(sc.times[i]) for i in np.flatnonzero(sc.diffs > scene_threshold) if i > 0]
        edges = [float(sc.times[0]), *cuts, sc.end]
        spans = []
        for a, b in zip(edges[:-1], edges[1:]):
            n = max(1, int(np.ceil((b - a) / max_clip_s - 1e-9)))
            spans += [(a + (b - a) * k / n, a + (b - a) * (k + 1) / n) for k in range(n)]
    else:
        t0, spans = float(sc.times[0]), []
        a = t0
        while a < sc.end - 1e-9:
            spans.append((a, min(a + clip_s, sc.end)))
            a += clip_s
    return [(round(a, 6), round(b, 6)) for a, b in spans if b - a >= min_clip_s - 1e-6]


def describe(sc: Scan, span: tuple[float, float], n_keyframes: int) -> Clip:
    """Keyframes (candidates nearest to evenly spaced times) and motion (mean fraction of pixels that change
    from one frame to the next) of a span."""
    a, b = span
    clip = Clip(a, b)
    inside = [(t, j) for t, j in sc.candidates if a - 1e-6 <= t < b - 1e-6]
    if inside:
        picks = []
        for k in range(n_keyframes):
            target = a + (b - a) * (k + 0.5) / n_keyframes
            best = min(range(len(inside)), key=lambda i: abs(inside[i][0] - target))
            if best not in picks:
                picks.append(best)
        clip.keyframes = [inside[i][1] for i in sorted(picks)]
    sel = (sc.times > a + 1e-6) & (sc.times < b - 1e-6)  # differences inside the clip, not across its start
    clip.motion = float(sc.moved[sel].mean()) if sel.any() else 0.0
    return clip


def _on_keyframe(t: float, keys: list[float], tol: float) -> bool:
    i = int(np.searchsorted(keys, t - tol))
    return i < len(keys) and abs(keys[i] - t) <= tol


def can_copy(sc: Scan, span: tuple[float, float]) -> bool:
    tol = 0.5 / (sc.fps or 25)
    a, b = span
    return _on_keyframe(a, sc.keyframes, tol) and (b >= sc.end - tol or _on_keyframe(b, sc.keyframes, tol))


def remux(data: bytes, span: tuple[float, float], fps: float) -> bytes:
    """The packets of [start, end) copied into a new mp4, timestamps shifted to start at zero."""
    from curate.video.probe import open_container
    import av

    a, b = span
    tol = 0.5 / (fps or 25)
    buf = io.BytesIO()
    with open_container(data) as src, av.open(buf, "w", format="mp4") as dst:
        ins = src.streams.video[0]
        outs = dst.add_stream_from_template(ins)
        tb = ins.time_base
        src.seek(int(a / tb), stream=ins, backward=True, any_frame=False)
        offset = None
        for pkt in src.demux(ins):
            if pkt.dts is None or pkt.pts is None:
                continue
            t = float(pkt.pts * tb)
            if t < a - tol:
                continue
            if float(pkt.dts * tb) >= b - tol and t >= b - tol:
                break
            if t >= b - tol:
                continue
            if offset is None:
                offset = pkt.dts
            pkt.pts -= offset
            pkt.dts -= offset
            pkt.stream = outs
            dst.mux(pkt)
    return buf.getvalue()


def remux_all(data: bytes, spans: list[tuple[float, float]], fps: float) -> list[bytes]:
    """`remux` for many sorted, non-overlapping spans in one demuxing pass (one open, no seeks)."""
    from curate.video.probe import open_container
    import av

    tol = 0.5 / (fps or 25)
    bufs = [io.BytesIO() for _ in spans]
    outs: list = [None] * len(spans)
    offsets: list = [None] * len(spans)
    k = 0
    try:
        with open_container(data) as src:
            ins = src.streams.video[0]
            tb = ins.time_base
            for pkt in src.demux(ins):
                if pkt.dts is None or pkt.pts is None:
                    continue
                t = float(pkt.pts * tb)
                while k < len(spans) and t >= spans[k][1] - tol:
                    k += 1
                if k == len(spans):
                    break
                if t < spans[k][0] - tol:
                    continue
                if outs[k] is None:
                    outs[k] = av.open(bufs[k], "w", format="mp4")
                    outs[k].add_stream_from_template(ins)
                    offsets[k] = pkt.dts
                pkt.pts -= offsets[k]
                pkt.dts -= offsets[k]
                pkt.stream = outs[k].streams.video[0]
                outs[k].mux(pkt)
    finally:
        for o in outs:
            if o is not None:
                o.close()
    return [b.getvalue() for b in bufs]


def reencode(data: bytes, span: tuple[float, float], fps: float, codec: str, crf: int = 23) -> bytes:
    """Decode the frames of [start, end) and encode them as a new mp4 (even dimensions, yuv420p)."""
    from curate.video.probe import open_container
    import av

    a, b = span
    tol = 0.5 / (fps or 25)
    rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
    buf = io.BytesIO()
    with open_container(data) as src, av.open(buf, "w", format="mp4") as dst:
        ins = src.streams.video[0]
        ins.thread_type = "AUTO"
        src.seek(int(a / ins.time_base), stream=ins, backward=True, any_frame=False)
        outs = None
        i = 0
        for frame in src.decode(ins):
            t = frame.time
            if t is None or t < a - tol:
                continue
            if t >= b - tol:
                break
            if outs is None:
                outs = dst.add_stream(codec, rate=rate)
                outs.width, outs.height = frame.width - frame.width % 2, frame.height - frame.height % 2
                outs.pix_fmt = "yuv420p"
                if codec in ("libx264", "h264"):
                    outs.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
            f = frame.reformat(width=outs.width, height=outs.height, format="yuv420p")
            f.pts, f.time_base = i, 1 / rate
            i += 1
            for pkt in outs.encode(f):
                dst.mux(pkt)
        if outs is not None:
            for pkt in outs.encode():
                dst.mux(pkt)
    return buf.getvalue()
