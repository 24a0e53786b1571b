"""Per-image and per-document decisions for interleaved documents (thresholds only: no model here).

`doc_image_filter` marks images inside a document (size, aspect, CLIP score against the neighbouring text)
and drops their bytes; `doc_filter` keeps or drops whole documents by text length, kept-image count and
images per 1,000 characters of text.
"""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from curate import schema
from curate.stage import Annotations, Filter, Stage, register


@register
class DocImageFilter(Stage):
    """Mark a document's images dropped for size, aspect or low CLIP score; the document stays."""

    name: ClassVar[str] = "doc_image_filter"
    reads: ClassVar[tuple[str, ...]] = ("doc_images", "doc_image_bytes")
    updates: ClassVar[tuple[str, ...]] = ("doc_images", "doc_image_bytes")  # per-image status, dropped bytes

    min_side: int = Field(0, ge=0)  # drop images whose shorter (original) side is below this (px); 0 = off
    max_aspect: float | None = Field(None, ge=1.0)  # drop images whose long / short side ratio exceeds this; None = off
    min_clip_score: float | None = None  # needs doc_clip earlier in the recipe

    def needs(self) -> tuple[str, ...]:
        return self.reads + (("image_clip_score",) if self.min_clip_score is not None else ())

    def verdict(self, rec: dict, score: float | None) -> str | None:
        w, h = rec["orig_width"] or rec["width"], rec["orig_height"] or rec["height"]
        if w is not None and h is not None:
            if min(w, h) < self.min_side:
                return "image_too_small"
            if self.max_aspect is not None and max(w, h) > self.max_aspect * max(1, min(w, h)):
                return "image_aspect_ratio"
        if self.min_clip_score is not None and score is not None and score < self.min_clip_score:
            return "image_unrelated_text"
        return None

    def annotate(self, active: pa.Table) -> Annotations:
        docs = active.column("doc_images").to_pylist()
        payload = active.column("doc_image_bytes").to_pylist()
        scores = (active.column("image_clip_score").to_pylist() if self.min_clip_score is not None
                  else [None] * active.num_rows)
        for i, recs in enumerate(docs):
            for j, rec in enumerate(recs or ()):
                if rec["status"] != schema.OK:
                    continue
                code = self.verdict(rec, scores[i][j] if scores[i] else None)
                if code:
                    rec.update(status=schema.DROPPED, reason=code, error=None)
                    if payload[i] is not None:
                        payload[i][j] = None
        return Annotations(columns={"doc_images": docs, "doc_image_bytes": payload})


@register
class DocFilter(Filter):
    """Keep or drop whole documents by text length, kept-image count and image-to-text ratio."""

    name: ClassVar[str] = "doc_filter"
    reads: ClassVar[tuple[str, ...]] = ("doc_images",)
    reasons: ClassVar[dict[str, str]] = {
        "doc_no_text": "the document has no text at all",
        "doc_text_too_short": "document text shorter than min_chars",
        "doc_text_too_long": "document text longer than max_chars",
        "doc_too_few_images": "fewer kept images than min_images",
        "doc_too_many_images": "more kept images than max_images",
        "doc_image_text_ratio": "kept images per 1,000 characters of text above max_images_per_kchar",
    }

    min_chars: int = Field(1, ge=0)  # drop documents with fewer text characters (stripped); 0 = off
    max_chars: int | None = Field(100_000, ge=1)  # drop documents with more text characters; None = no limit
    min_images: int = Field(0, ge=0)  # drop documents with fewer kept (ok) images; 0 = off
    max_images: int | None = Field(None, ge=0)  # drop documents with more kept images; None = no limit
    max_images_per_kchar: float | None = Field(None, gt=0)  # max kept images per 1,000 text chars; None = off

    def check(self, table: pa.Table) -> list[str | None]:
        out = []
        for text, recs in zip(table.column("text").to_pylist(), table.column("doc_images").to_pylist()):
            chars = len((text or "").strip())
            kept = sum(r["status"] == schema.OK for r in recs or ())
            if chars == 0 and self.min_chars > 0:
                out.append("doc_no_text")
            elif chars < self.min_chars:
                out.append("doc_text_too_short")
            elif self.max_chars is not None and chars > self.max_chars:
                out.append("doc_text_too_long")
            elif kept < self.min_images:
                out.append("doc_too_few_images")
            elif self.max_images is not None and kept > self.max_images:
                out.append("doc_too_many_images")
            elif self.max_images_per_kchar is not None and chars and kept * 1000 / chars > self.max_images_per_kchar:
                out.append("doc_image_text_ratio")
            else:
                out.append(None)
        return out
