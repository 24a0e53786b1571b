"""`caption_select`: BLIP's CapFilt decision. Per sample, keep the captions whose score passes, drop the
sample when neither does.

Inputs: the original caption (`text`) and the synthetic one (`recaption`, stage recaption), each scored
by `clip_score`/`mllm_score` with `text_col: both` (columns `clip_score` and `recaption_clip_score`, or
the `mllm_` pair). A caption passes when its score is at least its threshold (a missing caption or score
never passes). `keep: passing` keeps every passing caption (the paper's filter); `keep: best` keeps only
the higher-scoring one when both pass.

How this reaches the shards: the `text` and `recaption` columns are rewritten to hold the kept captions,
as the output.caption_policy `both` reads them (.txt = `text`, .recap.txt = `recaption`):

  caption_kept  text        recaption   caption_dropped
  both          original    synthetic   null
  original      original    null        the synthetic caption (null if there was none)
  recaption     synthetic   null        the original caption

So no kept sample trains on a caption that failed, and no caption is lost from the metadata: a
recaption-only sample's original text is in `caption_dropped`. Under the other policies the same columns
read as "prefer one of the kept captions": `original` writes `text` (the original where it passed),
`recaption` writes `recaption` where present, else `text` (the synthetic where it passed).
Stages after this one that read `text` see the kept caption, which is what the shards train on.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from curate.stage import Annotations, Stage, register

SCORE_COLUMNS = {"clip": ("clip_score", "recaption_clip_score"), "mllm": ("mllm_score", "recaption_mllm_score")}
NONE_PASS = "caption_select_none_pass"


def passes(score, threshold: float) -> bool:
    """A null or NaN score never passes."""
    return score is not None and not math.isnan(score) and score >= threshold


@register
class CaptionSelect(Stage):
    """Keep the captions (original, synthetic, both) whose score passes; drop the sample when none does."""

    name: ClassVar[str] = "caption_select"
    reads: ClassVar[tuple[str, ...]] = ("text", "recaption")
    writes: ClassVar[dict[str, pa.DataType]] = {"caption_kept": pa.string(), "caption_dropped": pa.string()}
    updates: ClassVar[tuple[str, ...]] = ("text", "recaption")
    reasons: ClassVar[dict[str, str]] = {
        NONE_PASS: "neither the original nor the synthetic caption scored at least caption_select's threshold",
    }

    score: Literal["clip", "mllm"] = "clip"  # which score pair: clip_score / mllm_score and their recaption_ twins
    min_score: float = Field(0.28, ge=-1.0, le=1.0)  # the original caption's bar; model-specific, as clip_threshold
    min_recaption_score: float | None = Field(None, ge=-1.0, le=1.0)  # the synthetic caption's bar (default min_score)
    keep: Literal["passing", "best"] = "passing"  # best: only the higher-scoring caption when both pass

    def needs(self) -> tuple[str, ...]:
        return (*self.reads, *SCORE_COLUMNS[self.score])

    def decide(self, original, synthetic, has_synthetic: bool) -> str | None:
        """original | recaption | both | None (neither passes) for one row's two scores."""
        bar = self.min_score if self.min_recaption_score is None else self.min_recaption_score
        po = passes(original, self.min_score)
        pr = has_synthetic and passes(synthetic, bar)
        if po and pr:
            if self.keep == "best":
                return "recaption" if synthetic > original else "original"
            return "both"
        return "original" if po else "recaption" if pr else None

    def annotate(self, active: pa.Table) -> Annotations:
        orig_col, rec_col = SCORE_COLUMNS[self.score]
        texts, recaps = active.column("text").to_pylist(), active.column("recaption").to_pylist()
        o_scores, r_scores = active.column(orig_col).to_pylist(), active.column(rec_col).to_pylist()
        kept, dropped = [None] * len(texts), [None] * len(texts)
        new_text, new_recap = list(texts), list(recaps)
        ann = Annotations(columns={"caption_kept": kept, "caption_dropped": dropped,
                                   "text": new_text, "recaption": new_recap})
        for i, (t, r, so, sr) in enumerate(zip(texts, recaps, o_scores, r_scores)):
            choice = self.decide(so, sr, r is not None)
            kept[i] = choice
            if choice is None:
                ann.drop(i, NONE_PASS)
            elif choice == "original":
                dropped[i], new_recap[i] = r, None
            elif choice == "recaption":
                dropped[i], new_text[i], new_recap[i] = t, r, None
        return ann
