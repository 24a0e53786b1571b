"""Which caption a scorer scores, and the score columns that follow from it (CapFilt scores both).

A sample can carry two captions: the original `text` and the synthetic `recaption` (stage recaption).
`clip_score` and `mllm_score` take `text_col: text | recaption | both`; the score of the original keeps
its historical name (`clip_score`, `mllm_score`) and the synthetic caption's score gets a `recaption_`
prefix (`recaption_clip_score`), so `clip_threshold column: recaption_clip_score` and `caption_select`
can read either one.

Why a descriptor for `writes`: a stage's `writes` is a class-level declaration that recipe checks
("needs column X, which no earlier stage writes"), `curate stages` and the reserved-column list read on
the class, while the run schema and the Stage contract read it on the configured instance. `PerConfig`
answers the class with every column the stage may write and an instance with the columns its settings
write, so a plain `clip_score` run gets no always-null `recaption_clip_score` column.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

TextCol = Literal["text", "recaption", "both"]
PREFIX = {"text": "", "recaption": "recaption_"}


def captions(text_col: str) -> tuple[str, ...]:
    """The caption columns a `text_col` setting scores, original first."""
    return ("text", "recaption") if text_col == "both" else (text_col,)


def score_column(base: str, caption: str) -> str:
    """`clip_score` for the original text, `recaption_clip_score` for the synthetic caption."""
    return PREFIX[caption] + base


class PerConfig:
    """A `writes` declaration that depends on the stage's settings (see the module docstring).

    every: all columns the stage may write under any setting (what the class answers);
    configured: instance -> the columns this instance writes (a sub-dict of `every`).
    """

    def __init__(self, every: dict, configured: Callable[[Any], dict]):
        self.every, self.configured = every, configured

    def __get__(self, obj, owner=None) -> dict:
        return self.every if obj is None else self.configured(obj)
