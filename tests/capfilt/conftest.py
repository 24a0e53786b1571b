"""CapFilt tests reuse the tiny CoCa of tests/caption (the tiny CLIP checkpoint is in tests/conftest.py)."""
from __future__ import annotations

from tests.caption.conftest import coca_ckpt

__all__ = ["coca_ckpt"]  # a fixture, found by pytest under this name
