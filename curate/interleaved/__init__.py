"""Interleaved image-text documents (mmc4 / OBELICS / MINT-1T style): one row per document with ordered
text and image segments, per-image download status inside the row, and one WebDataset sample per document.

Modules whose names start with `_` hold shared helpers; the others register pipeline steps.
"""
