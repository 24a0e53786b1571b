"""The `download_video` stage: fetch video URLs (or local paths) with bounded concurrency, size, time and
duration limits, probe them with PyAV, and attach WebVTT subtitle cues as the text source.

Video bytes travel in the `video` column like image bytes do (a payload column: never written to
meta/*.parquet). That is bounded: a row holds at most `max_bytes`, and a part at most samples_per_shard
rows, so size the part (pipelines/video_text.yaml uses 32) for max_bytes x rows in memory per worker.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate import schema
from curate.download import errors
from curate.download import urls as urlfmt
from curate.stage import Stage, register
from curate.video import probe as probing
from curate.video._extra import require_video_extra
from curate.video.fetch import FetchError, fetch, read_text
from curate.video.subtitles import CUE_TYPE, SubtitleError, parse_vtt

LIMIT_REASONS = {
    "video_content_type": "the server's Content-Type says this is not a video (text/html, image/*, json)",
    "video_too_large": "more than max_bytes (Content-Length, or counted while streaming: bounds endless streams)",
    "video_too_long": "duration above max_duration_s",
    "video_too_short": "duration below min_duration_s",
    "video_resolution_too_large": "width or height above max_side",
    "subtitles_error": "the subtitle sidecar could not be fetched or is not WebVTT",
}


@register
class DownloadVideo(Stage):
    """Fetch and probe videos (PyAV): codec, size, fps, duration, audio; WebVTT cues from a sidecar column."""

    name: ClassVar[str] = "download_video"
    min_row_timeout_s: ClassVar[float] = 600.0  # the call bound's least per row: a large video file at a slow server
    reads: ClassVar[tuple[str, ...]] = ("url",)
    writes: ClassVar[dict[str, pa.DataType]] = {
        "video": pa.binary(),
        "video_format": pa.string(),  # file extension for the tar member
        "video_codec": pa.string(),
        "width": pa.int32(),
        "height": pa.int32(),
        "fps": pa.float64(),
        "duration": pa.float64(),
        "has_audio": pa.bool_(),
        "video_bytes": pa.int64(),
        "sha256": pa.string(),
        "cues": CUE_TYPE,  # WebVTT cues: [{start, end, text}]
        "cues_skipped": pa.int32(),  # sidecar cues left out: they do not end after they start
    }
    reasons: ClassVar[dict[str, str]] = {**errors.REASONS, **probing.REASONS, **LIMIT_REASONS}

    threads: int = Field(8, ge=1, le=256)  # videos fetched and probed at once per worker
    timeout_s: float = Field(10.0, gt=0)  # stall limit: no byte for this many seconds fails the transfer
    retries: int = Field(1, ge=0, le=10)  # extra tries on transient errors (timeouts, resets, 408/429/5xx)
    max_bytes: int = Field(64 << 20, ge=1024)  # larger videos drop as video_too_large; bounds memory per row
    max_seconds: float = Field(120.0, gt=0, description="wall-clock limit for one transfer")
    max_duration_s: float = Field(600.0, gt=0)  # longer videos (seconds, probed) drop as video_too_long
    min_duration_s: float = Field(0.0, ge=0)  # shorter videos drop as video_too_short; 0 = off
    max_side: int = Field(4096, ge=16)  # videos wider or taller than this (px) drop
    # an input column holding a WebVTT URL/path or the WebVTT text itself; null cells mean "no subtitles"
    subtitles_col: str | None = None  # input column of WebVTT URL, path or text; None: no subtitles

    @model_validator(mode="after")
    def _installed(self):
        require_video_extra(self.name)
        return self

    def _one(self, url: str | None, vtt_ref: str | None) -> dict:
        try:
            data = fetch(url, timeout_s=self.timeout_s, max_bytes=self.max_bytes, max_seconds=self.max_seconds,
                         retries=self.retries)
        except FetchError as err:
            return {"_status": schema.DROPPED if err.dropped else schema.FAILED, "_reason": err.reason,
                    "_error": str(err)}
        p = probing.probe(data)
        if p.reason:
            status = schema.DROPPED if p.reason == "video_no_video_stream" else schema.FAILED
            return {"_status": status, "_reason": p.reason, "_error": p.error}
        out = {"video": data, "video_format": _extension(p.container), "video_codec": p.codec, "width": p.width,
               "height": p.height, "fps": p.fps, "duration": p.duration, "has_audio": p.has_audio,
               "video_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        limit = None
        if max(p.width or 0, p.height or 0) > self.max_side:
            limit = ("video_resolution_too_large", f"{p.width}x{p.height} > max_side {self.max_side}")
        elif p.duration is not None and p.duration > self.max_duration_s:
            limit = ("video_too_long", f"{p.duration:.1f} s > max_duration_s {self.max_duration_s}")
        elif p.duration is not None and p.duration < self.min_duration_s:
            limit = ("video_too_short", f"{p.duration:.2f} s < min_duration_s {self.min_duration_s}")
        if limit:  # keep what the probe learned (for queries), not the bytes
            out.update(video=None, _status=schema.DROPPED, _reason=limit[0], _error=limit[1])
            return out
        if vtt_ref:
            try:
                text = vtt_ref if vtt_ref.lstrip("\ufeff").startswith("WEBVTT") else read_text(vtt_ref, self.timeout_s)
                out["cues"], out["cues_skipped"] = parse_vtt(text)
            except (FetchError, SubtitleError) as err:
                return {**out, "video": None, "_status": schema.FAILED, "_reason": "subtitles_error",
                        "_error": str(err)[:500]}
        return out

    def process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        active = np.flatnonzero(schema.active_mask(table).to_numpy(zero_copy_only=False))
        urls = table.column("url").to_pylist()
        if self.subtitles_col and self.subtitles_col not in table.column_names:
            raise ValueError(f"download_video.subtitles_col: the input has no column {self.subtitles_col!r}")
        vtts = table.column(self.subtitles_col).to_pylist() if self.subtitles_col else [None] * n
        out = {k: [None] * n for k in self.writes}
        status, stage = table.column("status").to_pylist(), table.column("stage").to_pylist()
        reason, error = table.column("reason").to_pylist(), table.column("error").to_pylist()
        with ThreadPoolExecutor(min(self.threads, max(1, len(active)))) as pool:
            results = pool.map(lambda i: (i, self._one(urls[i], vtts[i])), active)
            for i, res in results:
                if "_status" in res:
                    status[i], stage[i], reason[i], error[i] = res["_status"], self.name, res["_reason"], res["_error"]
                for k in self.writes:
                    out[k][i] = res.get(k)
        columns = {"status": status, "stage": stage, "reason": reason, "error": error}
        if any(urlfmt.has_credentials(u) for u in urls if isinstance(u, str)):  # fetched with them; never shown
            columns["url"] = [urlfmt.redact(u) if isinstance(u, str) else u for u in urls]
        table = schema.set_rows(table, pa.array([True] * n), columns)
        for name, typ in self.writes.items():
            table = schema.put_column(table, name, out.pop(name), typ)
        return table


def _extension(container: str | None) -> str:
    names = (container or "").split(",")
    for ext in ("mp4", "webm", "mkv", "mov", "avi", "ogg"):
        if ext in names or (ext == "mkv" and "matroska" in names):
            return ext
    return "mp4" if "mp4" in (container or "") else (names[0] or "bin")
