"""The `keyframe_clip_score` stage: CLIP similarity between a clip's text and its keyframes (mean and min
over frames), with the shared loader in curate.models.clip. It only adds columns; thresholds are filters
(`keyframe_clip_threshold`)."""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from curate.models.clip_settings import ClipWeights
from curate.stage import Annotations, Filter, Stage, register


@register
class KeyframeClipScore(ClipWeights, Stage):
    """Cosine similarity of each clip's text with its keyframes under an open_clip model: mean and min."""

    name: ClassVar[str] = "keyframe_clip_score"
    min_row_timeout_s: ClassVar[float] = 120.0  # the call bound's least per row: decoding the keyframes of a long video
    uses_model: ClassVar[bool] = True
    reads: ClassVar[tuple[str, ...]] = ("keyframes",)
    writes: ClassVar[dict[str, pa.DataType]] = {"keyframe_clip_score": pa.float32(),
                                                "keyframe_clip_score_min": pa.float32()}
    reasons: ClassVar[dict[str, str]] = {}

    batch_size: int = Field(256, ge=1)  # keyframes (and clip texts) per CLIP forward pass
    _clip = PrivateAttr(default=None)

    def setup(self) -> None:
        if self._clip is None:
            self._clip = self.load_clip()

    def annotate(self, active: pa.Table) -> Annotations:
        from curate.images import decode_rgb

        self.setup()
        n = active.num_rows
        texts = active.column("text").to_pylist()
        mean, low = [None] * n, [None] * n
        owners, images = [], []
        for i, frames in enumerate(active.column("keyframes").to_pylist()):
            for jpeg in frames or []:
                try:
                    images.append(decode_rgb(jpeg))
                    owners.append(i)
                except Exception:  # noqa: BLE001 - an undecodable keyframe is left out of the mean
                    continue
        if images:
            rows = sorted(set(owners))
            img = np.concatenate([self._clip.embed_images(images[k:k + self.batch_size])
                                  for k in range(0, len(images), self.batch_size)])
            txt = np.concatenate([self._clip.embed_texts([texts[r] or "" for r in rows[k:k + self.batch_size]])
                                  for k in range(0, len(rows), self.batch_size)])
            where = {r: j for j, r in enumerate(rows)}
            sims = np.einsum("nd,nd->n", img, txt[[where[o] for o in owners]])
            owners_arr = np.array(owners)
            for r in rows:
                s = sims[owners_arr == r]
                mean[r], low[r] = float(s.mean()), float(s.min())
        return Annotations(columns={"keyframe_clip_score": mean, "keyframe_clip_score_min": low})


@register
class KeyframeClipThreshold(Filter):
    """Drop clips whose text does not match their frames: keyframe_clip_score (mean or min) below min_score."""

    name: ClassVar[str] = "keyframe_clip_threshold"
    reads: ClassVar[tuple[str, ...]] = ("keyframe_clip_score",)
    reasons: ClassVar[dict[str, str]] = {
        "keyframe_clip_score_below_threshold": "text-keyframe CLIP similarity below min_score",
    }

    min_score: float = Field(0.2, ge=-1, le=1)  # drop clips whose text-keyframe cosine similarity is below this
    use: Literal["mean", "min"] = "mean"  # mean over keyframes, or min: every keyframe must match (stricter)

    def check(self, table: pa.Table) -> list[str | None]:
        col = "keyframe_clip_score" if self.use == "mean" else "keyframe_clip_score_min"
        vals = table.column(col).to_pylist() if col in table.column_names else [None] * table.num_rows
        return [None if v is None or v >= self.min_score else "keyframe_clip_score_below_threshold" for v in vals]
