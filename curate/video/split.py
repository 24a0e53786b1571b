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
    candidates: list[list]  # [time, jpeg | decoded frame (encoded when first picked) | None (released)]
    fps: float
    end: float  # time just after the last frame
    error: str | None = None  # decoding stopped early with this message
    keyframe_size: int = 224
    quality: int = 90
    _reformatter: object = None

    def jpeg(self, i: int) -> bytes:
        """Candidate i as a JPEG; a still-held decoded frame is encoded now (once) and then let go."""
        payload = self.candidates[i][1]
        if payload is None:
            raise ValueError(f"keyframe candidate at {self.candidates[i][0]:.3f} s was released")
        if not isinstance(payload, bytes):
            payload = self.candidates[i][1] = _jpeg(payload, self.keyframe_size, self.quality, self._reformatter)
        return payload


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
    from PIL import Image

    img = Image.fromarray(rgb.to_ndarray())  # about 2x cheaper than VideoFrame.to_image in PyAV 13-14
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.linspace(0, h - 1, 2 * THUMB).astype(np.intp)
    xs = np.linspace(0, w - 1, 2 * THUMB).astype(np.intp)
    return ys[:, None], xs[None, :]


@functools.lru_cache(maxsize=64)
def _strided(h: int, w: int) -> tuple[slice, slice] | None:
    """A centred evenly strided 2*THUMB x 2*THUMB grid of a plane as basic slices (a view, no gather)."""
    n = 2 * THUMB
    if h < n or w < n:
        return None
    sy, sx = h // n, w // n
    y0, x0 = (h - sy * (n - 1) - 1) // 2, (w - sx * (n - 1) - 1) // 2
    return slice(y0, y0 + sy * (n - 1) + 1, sy), slice(x0, x0 + sx * (n - 1) + 1, sx)


def _thumb(frame) -> np.ndarray:
    """About THUMB x THUMB samples of each colour plane, int16, shaped (3, THUMB, THUMB).

    For planar YUV (nearly every video) the decoder's own planes are strided in place: no colour
    conversion or scaling per frame, which would cost about as much as decoding a small frame itself.
    """
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"):
        out = np.empty((3, THUMB, THUMB), np.int16)
        for k, plane in enumerate(frame.planes[:3]):
            h, w = plane.height, plane.width
            arr = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)
            grid = _strided(h, w)
            a = arr[grid].astype(np.int16) if grid is not None else arr[_grid(h, w)].astype(np.int16)
            # 2x2 block means of a strided grid: average away sensor and compression noise
            s = out[k]
            np.add(a[0::2, 0::2], a[1::2, 0::2], out=s)
            s += a[0::2, 1::2]
            s += a[1::2, 1::2]
        out //= 4
        return out
    rgb = frame.to_ndarray(width=THUMB, height=THUMB, format="rgb24")
    return np.moveaxis(rgb, 2, 0).astype(np.int16)


def picks(sc: Scan, span: tuple[float, float], n_keyframes: int) -> list[int]:
    """Indexes into sc.candidates of the keyframes of a span: the candidates nearest to n evenly spaced
    times inside it (fewer when candidates are scarce), in time order."""
    a, b = span
    inside = [i for i, (t, p) in enumerate(sc.candidates) if a - 1e-6 <= t < b - 1e-6 and p is not None]
    chosen: list[int] = []
    for k in range(n_keyframes if inside else 0):
        target = a + (b - a) * (k + 0.5) / n_keyframes
        best = min(inside, key=lambda i: abs(sc.candidates[i][0] - target))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen)


def _nbytes(frame) -> int:
    return sum(p.buffer_size for p in frame.planes)


def _settle(sc: Scan, plan, n_keyframes: int, pending: list[int]) -> list[int]:
    """Encode the keyframes of the spans that can no longer change and release the other held frames before
    them, so held frames stay few even on a long video. Returns the still-pending candidate indexes."""
    final, upto = plan(sc)
    for span in final:
        for i in picks(sc, span, n_keyframes):
            sc.jpeg(i)
    keep = []
    for i in pending:
        if sc.candidates[i][0] < upto - 1e-6:
            if not isinstance(sc.candidates[i][1], bytes):
                sc.candidates[i][1] = None  # before every final span's end and picked by none of them
        else:
            keep.append(i)
    return keep


def scan(data: bytes, *, sample_every_s: float, keyframe_size: int = 224, quality: int = 90,
         max_frames: int = 200_000, plan=None, n_keyframes: int = 1, hold_mb: float = 48,
         max_pixels: int | None = None) -> Scan:
    """Decode every frame once; keep what splitting, motion and keyframes need.

    Keyframe candidates (one every sample_every_s) are held as decoded frames and only the ones a clip
    picks are converted to JPEG (`Scan.jpeg`). Held frames are bounded: past hold_mb, `plan(partial scan)`
    (-> spans that are final, time before which they all end) settles what it can, and whatever is still
    over the bound is encoded oldest first, so memory stays bounded whatever the video's length.
    A stream declaring (or a frame decoding to) more than max_pixels raises probe.TooManyPixels.
    """
    import av

    from curate.video.probe import MAX_PIXELS, check_pixels, open_container
    from av.video.reformatter import VideoReformatter

    times: list[float] = []
    diffs: list[float] = []
    moved: list[float] = []
    keys: list[float] = []
    cands: list[list] = []
    pending: list[int] = []  # candidates still held as decoded frames
    held = 0
    prev = None
    next_sample = 0.0
    error = None
    budget = hold_mb * 2**20
    sc = Scan(times=np.empty(0), diffs=np.empty(0), moved=np.empty(0), keyframes=keys, candidates=cands, fps=0.0,
              end=0.0, keyframe_size=keyframe_size, quality=quality, _reformatter=VideoReformatter())
    with open_container(data) as c:
        vs = c.streams.video[0]
        limit = max_pixels or MAX_PIXELS
        check_pixels(vs.codec_context.width, vs.codec_context.height, limit)
        vs.thread_type = "AUTO"
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            for packet in c.demux(vs):
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(float(packet.pts * packet.time_base))
                for frame in packet.decode():
                    check_pixels(frame.width, frame.height, limit, "a frame is")
                    t = frame.time if frame.time is not None else (times[-1] + 1 / (fps or 25) if times else 0.0)
                    # colour thumbs: a shape of the background's brightness but another hue still moves
                    thumb = _thumb(frame)
                    area = thumb.shape[1] * thumb.shape[2]
                    if prev is not None and prev.shape == thumb.shape:
                        delta = np.abs(thumb - prev)
                        # mean of the busiest plane; fraction of samples where any plane moved
                        diffs.append(float(delta.reshape(len(delta), -1).sum(axis=1).max()) / (area * 255.0))
                        moved.append(np.count_nonzero(delta.max(axis=0) > MOVED) / area)
                    else:
                        diffs.append(0.0)
                        moved.append(0.0)
                    prev = thumb
                    times.append(t)
                    if t + 1e-6 >= next_sample:
                        cands.append([t, frame])
                        pending.append(len(cands) - 1)
                        held += _nbytes(frame)
                        next_sample = t + sample_every_s
                        if held > budget:
                            if plan is not None:
                                sc.times, sc.diffs, sc.fps, sc.end = np.asarray(times), np.asarray(diffs), fps, t
                                pending = _settle(sc, plan, n_keyframes, pending)
                                held = sum(_nbytes(cands[i][1]) for i in pending)
                            while pending and held > budget / 2:  # still too many: encode the oldest now
                                i = pending.pop(0)
                                held -= _nbytes(cands[i][1])
                                sc.jpeg(i)
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
    sc.times, sc.diffs, sc.moved = t, np.asarray(diffs, np.float64)[order], np.asarray(moved, np.float64)[order]
    sc.keyframes.sort()
    sc.fps, sc.end, sc.error = fps, float(t[-1] + step) if len(t) else 0.0, error
    return sc


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


def settled(sc: Scan, **how) -> tuple[list[tuple[float, float]], float]:
    """For a scan still under way (sc.end = the newest frame): the spans `boundaries(sc, **how)` gives that
    no later frame can change, and the time before which they all end. Scenes are final up to the last cut;
    fixed windows up to the last window start."""
    spans = boundaries(sc, **how)
    if how["mode"] == "scene":
        cuts = np.flatnonzero(sc.diffs[1:] > how["scene_threshold"]) + 1
        upto = float(sc.times[cuts[-1]]) if len(cuts) else float(sc.times[0]) if len(sc.times) else 0.0
    else:
        k = int((sc.end - float(sc.times[0])) // how["clip_s"]) if len(sc.times) else 0
        upto = float(sc.times[0]) + k * how["clip_s"] if len(sc.times) else 0.0
    return [s for s in spans if s[1] <= upto + 1e-6], upto


def describe(sc: Scan, span: tuple[float, float], n_keyframes: int) -> Clip:
    """Keyframes (candidates nearest to evenly spaced times) and motion (mean fraction of pixels that change
    from one frame to the next) of a span."""
    a, b = span
    clip = Clip(a, b)
    clip.keyframes = [sc.jpeg(i) for i in picks(sc, span, n_keyframes)]
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


class _Encoder:
    """One clip being encoded: an mp4 in memory, even dimensions, yuv420p, frames numbered from zero."""

    def __init__(self, codec: str, rate: Fraction, frame, crf: int, preset: str):
        import av

        self.buf = io.BytesIO()
        self.dst = av.open(self.buf, "w", format="mp4")
        self.rate, self.i = rate, 0
        self.outs = self.dst.add_stream(codec, rate=rate)
        self.outs.width, self.outs.height = frame.width - frame.width % 2, frame.height - frame.height % 2
        self.outs.pix_fmt = "yuv420p"
        if codec in ("libx264", "h264"):
            self.outs.codec_context.options = {"crf": str(crf), "preset": preset}

    def add(self, frame) -> None:
        f = frame.reformat(width=self.outs.width, height=self.outs.height, format="yuv420p")
        f.pts, f.time_base = self.i, 1 / self.rate
        self.i += 1
        for pkt in self.outs.encode(f):
            self.dst.mux(pkt)

    def finish(self) -> bytes:
        for pkt in self.outs.encode():
            self.dst.mux(pkt)
        self.dst.close()
        return self.buf.getvalue()


def reencode_all(data: bytes, spans: list[tuple[float, float]], fps: float, codec: str, crf: int = 23,
                 preset: str = "veryfast") -> list[bytes]:
    """Decode the frames of each of many sorted, non-overlapping spans and encode each as a new mp4. One open;
    one seek per run of adjacent spans, so a frame is decoded once however many clips cut the video."""
    from curate.video.probe import open_container

    tol = 0.5 / (fps or 25)
    rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
    out = [b""] * len(spans)
    runs: list[list[int]] = []
    for i, (a, _) in enumerate(spans):
        if runs and abs(spans[runs[-1][-1]][1] - a) <= tol:
            runs[-1].append(i)
        else:
            runs.append([i])
    with open_container(data) as src:
        ins = src.streams.video[0]
        ins.thread_type = "AUTO"
        for run in runs:
            src.seek(int(spans[run[0]][0] / ins.time_base), stream=ins, backward=True, any_frame=False)
            k, enc = 0, None
            try:
                for frame in src.decode(ins):
                    t = frame.time
                    if t is None:
                        continue
                    while k < len(run) and t >= spans[run[k]][1] - tol:
                        if enc is not None:
                            out[run[k]], enc = enc.finish(), None
                        k += 1
                    if k == len(run):
                        break
                    if t < spans[run[k]][0] - tol:
                        continue
                    if enc is None:
                        enc = _Encoder(codec, rate, frame, crf, preset)
                    enc.add(frame)
                if enc is not None:
                    out[run[k]], enc = enc.finish(), None
            finally:
                if enc is not None:
                    enc.dst.close()
    return out


def reencode(data: bytes, span: tuple[float, float], fps: float, codec: str, crf: int = 23,
             preset: str = "veryfast") -> bytes:
    """Decode the frames of [start, end) and encode them as a new mp4 (even dimensions, yuv420p)."""
    return reencode_all(data, [span], fps, codec, crf, preset)[0]
