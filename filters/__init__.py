"""Cheap per-row decisions (thresholds, heuristics), importable as `curate.filters`.

Importing this package registers every shipped filter under its recipe name.
"""
from curate.filters.caption_text import CaptionText
from curate.filters.image_size import ImageSize

__all__ = ["CaptionText", "ImageSize"]
