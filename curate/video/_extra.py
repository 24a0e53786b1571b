"""The `video` extra (PyAV, webvtt-py) checked when a recipe is loaded, so a missing install is one line
before the run starts instead of a `stage_error` on every row."""
from __future__ import annotations

HINT = "pip install 'curate[video]'"


def require_video_extra(stage: str) -> None:
    for module, package in (("av", "PyAV"), ("webvtt", "webvtt-py")):
        try:
            __import__(module)
        except ImportError:
            raise ValueError(f"{stage} needs {package}, which is not installed: {HINT}") from None
