"""The document row: Arrow types of the nested columns and the per-image reason vocabulary.

A document is one metadata row. `segments` lists its content in reading order; an image segment points
into `doc_images` (one struct per referenced image, in order) whose `status`/`reason` say what happened to
that image, the same vocabulary as image-text rows. `doc_image_bytes` (payload, never in meta) holds the
resized bytes of kept images, aligned with `doc_images`.
"""
from __future__ import annotations

import pyarrow as pa

from curate import schema
from curate.download import errors
from curate.download.image import IMAGE_REASONS

SEGMENT = pa.struct([("type", pa.string()),  # "text" | "image"
                     ("text", pa.string()),  # text segments: the paragraph
                     ("image", pa.int32())])  # image segments: index into doc_images
IMAGE = pa.struct([
    ("url", pa.string()), ("alt", pa.string()), ("segment", pa.int32()),  # position in `segments`
    ("status", pa.string()), ("reason", pa.string()), ("error", pa.string()),
    ("sha256", pa.string()), ("format", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("orig_width", pa.int32()), ("orig_height", pa.int32()),
])
SEGMENTS_T = pa.list_(SEGMENT)
IMAGES_T = pa.list_(IMAGE)
BYTES_T = pa.list_(pa.binary())


# Per-image outcomes recorded inside doc_images (status failed/dropped + reason); declared as public codes.
IMAGE_STATUS_REASONS: dict[str, str] = {
    **errors.REASONS,
    **IMAGE_REASONS,
    "image_url_refused": "image URL scheme is not http(s) or data: (javascript:, file:, ftp:, ...): never fetched",
    "image_over_cap": "the document references more than max_images images; later ones are not fetched",
    "data_url_too_large": "an inline data: URL larger than max_data_url_bytes",
    "duplicate_image": "byte-identical to an image kept earlier in this or another document (doc_image_dedup)",
    "image_too_small": "original size below min_side (doc_image_filter)",
    "image_aspect_ratio": "original aspect ratio beyond max_aspect (doc_image_filter)",
    "image_unrelated_text": "CLIP similarity to the neighbouring text below min_clip_score (doc_image_filter)",
}
schema.declare_reasons(IMAGE_STATUS_REASONS)


def image_record(url: str | None, alt: str | None, segment: int) -> dict:
    return {"url": url, "alt": alt, "segment": segment, "status": schema.OK, "reason": None, "error": None,
            "sha256": None, "format": None, "width": None, "height": None, "orig_width": None, "orig_height": None}


def text_of(segments: list[dict] | None) -> str:
    """The document text: its text segments joined by blank lines (what near-dup dedup and filters see)."""
    return "\n\n".join(s["text"] for s in segments or () if s["type"] == "text" and s["text"])


