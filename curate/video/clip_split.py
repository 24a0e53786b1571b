"""The `clip_split` stage: each downloaded video becomes one row per clip.

Accounting (see README "How it works"): the video's own row stays, marked dropped by clip_split with
reason `split_into_clips` (its bytes are released), and every clip is appended as a new row with
`parent_uid` = the video's uid, uid `<video uid>-<start ms>-<end ms>`, the video's `row`, and its own
`start`/`end`, bytes, keyframes, motion and text. A video that yields no clip is dropped `no_clips`;
one that cannot be decoded fails `video_decode_error`. So: videos in = videos split + videos
dropped/failed, and every clip is kept, dropped or failed like any other row.
"""
from __future__ import annotations

import functools
import hashlib
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from curate import schema
from curate.stage import Annotations, Stage, error_line, register
from curate.video import split, subtitles
from curate.video._extra import require_video_extra
from curate.video.probe import MAX_PIXELS, TooManyPixels


@register
class ClipSplit(Stage):
    """Cut videos into clips (fixed windows or scene cuts), each its own row with keyframes, motion and text."""

    name: ClassVar[str] = "clip_split"
    min_row_timeout_s: ClassVar[float] = 3600.0  # the call bound's least per row: a long video re-encoded clip by clip takes minutes
    adds_rows: ClassVar[bool] = True
    updates: ClassVar[tuple[str, ...]] = ("video",)  # a split video's bytes are released
    reads: ClassVar[tuple[str, ...]] = ("video", "fps", "duration", "cues")
    writes: ClassVar[dict[str, pa.DataType]] = {
        schema.PARENT_COLUMN: pa.string(),
        "clip_index": pa.int32(),
        "start": pa.float64(),  # seconds in the parent video
        "end": pa.float64(),
        "keyframes": pa.list_(pa.binary()),  # JPEGs, for scoring, dedup and recaptioning (never in meta/)
        "motion": pa.float64(),  # mean fraction of pixels changing per frame
        "cut": pa.string(),  # copy (remuxed, no re-encoding) | reencode
        "text_source": pa.string(),  # subtitles | video
    }
    reasons: ClassVar[dict[str, str]] = {
        "split_into_clips": "the video was cut into clips; they follow as rows with parent_uid = this uid",
        "no_clips": "no span of at least min_clip_s (video too short, or only short scenes)",
        "video_decode_error": "FFmpeg could not decode the video's frames",
        "video_too_many_pixels": "the video's frames have more than max_pixels pixels (checked before decoding)",
    }

    mode: Literal["fixed", "scene"] = "scene"  # scene: cut where frames change (scene_threshold); fixed: clip_s windows
    clip_s: float = Field(4.0, gt=0, description="window length in fixed mode")
    min_clip_s: float = Field(1.0, gt=0)  # shorter spans (seconds) are left out; also paces keyframe sampling
    max_clip_s: float = Field(10.0, gt=0, description="longer scenes are cut into equal pieces")
    scene_threshold: float = Field(0.12, gt=0, le=1, description="mean grey difference (0-1) that marks a cut")
    keyframes_per_clip: int = Field(3, ge=1, le=32)  # evenly spaced JPEGs per clip (scoring, dedup, recaption)
    keyframe_size: int = Field(224, ge=16, le=1024, description="short side of keyframe JPEGs")
    cut: Literal["auto", "copy", "reencode"] = "auto"  # copy = remux; auto: copy when both ends sit on keyframes
    codec: str = Field("auto", description="encoder for re-encoded clips: auto (libx264, else mpeg4) or an FFmpeg name")
    hold_mb: float = Field(48.0, gt=0, description="decoded keyframe candidates held per video before "
                           "they are encoded early (only picked ones become JPEGs)")
    max_pixels: int = Field(MAX_PIXELS, ge=64, description="refuse videos whose frames have more pixels "
                            "(video_too_many_pixels), checked from the stream header before decoding")
    preset: str = Field("veryfast", description="libx264 speed/size trade-off for re-encoded clips: ultrafast "
                        "is about 2-3x faster and makes files about 1.8x larger")
    text_from: Literal["auto", "subtitles", "video"] = "auto"  # subtitles: cue text; video: row text; auto: cues if the sidecar has any, else the row text
    _codec: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_clip_s > self.max_clip_s:
            raise ValueError("min_clip_s must not exceed max_clip_s")
        require_video_extra(self.name)
        return self

    def setup(self) -> None:
        from curate.video.synth import encoder_name

        self._codec = encoder_name() if self.codec == "auto" else self.codec

    def _clips(self, data: bytes, cues, video_text):
        how = dict(mode=self.mode, clip_s=self.clip_s, min_clip_s=self.min_clip_s, max_clip_s=self.max_clip_s,
                   scene_threshold=self.scene_threshold)
        sc = split.scan(data, sample_every_s=self.min_clip_s / (self.keyframes_per_clip + 1),
                        keyframe_size=self.keyframe_size, plan=functools.partial(split.settled, **how),
                        n_keyframes=self.keyframes_per_clip, hold_mb=self.hold_mb, max_pixels=self.max_pixels)
        if len(sc.times) == 0:
            raise ValueError(sc.error or "no decodable video frame")
        spans = split.boundaries(sc, **how)
        copies = [self.cut == "copy" or (self.cut == "auto" and split.can_copy(sc, span)) for span in spans]
        clips = [split.describe(sc, span, self.keyframes_per_clip) for span in spans]
        sc.candidates.clear()  # let go of the decoded frames still held before cutting
        if self._codec is None:
            self.setup()
        # clips cut without re-encoding share one demuxing pass over the file, re-encoded ones one decoding pass
        copied = iter(split.remux_all(data, [s for s, c in zip(spans, copies) if c], sc.fps))
        encoded = iter(split.reencode_all(data, [s for s, c in zip(spans, copies) if not c], sc.fps, self._codec,
                                          preset=self.preset))
        for span, copy, clip in zip(spans, copies, clips):
            clip.cut = "copy" if copy else "reencode"
            clip.data = next(copied) if copy else next(encoded)
            # auto: a sidecar without a usable cue (empty, or every cue skipped) leaves the video's caption
            use_subs = self.text_from == "subtitles" or (self.text_from == "auto" and bool(cues))
            if use_subs:
                cl_cues = subtitles.overlapping(cues, *span)
                clip.text, clip.text_source, clip.cues = subtitles.clip_text(cl_cues), "subtitles", cl_cues
            else:
                clip.text, clip.text_source, clip.cues = video_text, "video", None
        return clips

    def annotate(self, active: pa.Table) -> Annotations:
        import av

        ann = Annotations(new_rows=[])
        videos = active.column("video")
        cues_col, texts = active.column("cues").to_pylist(), active.column("text").to_pylist()
        for i in range(active.num_rows):
            try:
                clips = self._clips(videos[i].as_py(), cues_col[i], texts[i])
            except TooManyPixels as err:  # a frame size above the bound: checked before decoding
                ann.fail(i, err.reason, error_line(err))
                continue
            except (av.error.FFmpegError, ValueError, OSError) as err:  # undecodable frames; anything else is isolated
                ann.fail(i, "video_decode_error", error_line(err))
                continue
            ann.drop(i, "split_into_clips" if clips else "no_clips")
            parent = active.slice(i, 1).to_pylist()[0]
            for k, c in enumerate(clips):
                ann.new_rows.append({
                    **parent, "uid": f"{parent['uid']}-{int(round(c.start * 1000))}-{int(round(c.end * 1000))}",
                    "status": schema.OK, "stage": None, "reason": None, "error": None, "shard": None, "key": None,
                    "text": c.text, "video": c.data, "video_format": "mp4", "duration": round(c.end - c.start, 6),
                    "video_bytes": len(c.data), "sha256": hashlib.sha256(c.data).hexdigest(), "cues": c.cues,
                    schema.PARENT_COLUMN: parent["uid"], "clip_index": k, "start": c.start, "end": c.end,
                    "keyframes": c.keyframes, "motion": c.motion, "cut": c.cut, "text_source": c.text_source})
        # the split videos' bytes are not needed any more (their clips carry their own)
        released = pa.array([i in ann.dropped for i in range(active.num_rows)])
        ann.columns["video"] = pc.if_else(released, pa.nulls(active.num_rows, videos.type), videos)
        return ann
