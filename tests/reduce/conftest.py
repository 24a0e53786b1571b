"""The tiny CoCa checkpoint of the caption tests (built there, never downloaded; the tiny CLIP is in tests/conftest.py)."""
from tests.caption.conftest import coca_ckpt

__all__ = ["coca_ckpt"]
