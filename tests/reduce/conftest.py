"""The tiny filter CLIP and tiny CoCa checkpoints of the scoring and caption tests (built here, never downloaded)."""
from tests.caption.conftest import coca_ckpt
from tests.scoring.conftest import tiny_ckpt

__all__ = ["coca_ckpt", "tiny_ckpt"]
