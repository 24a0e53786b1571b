"""CapFilt tests reuse the tiny CLIP checkpoint of tests/scoring and the tiny CoCa of tests/caption."""
from __future__ import annotations

from tests.caption.conftest import coca_ckpt
from tests.scoring.conftest import tiny_ckpt

__all__ = ["coca_ckpt", "tiny_ckpt"]  # fixtures, found by pytest under these names
