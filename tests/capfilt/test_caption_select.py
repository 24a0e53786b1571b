"""caption_select: which captions pass, what the text/recaption columns and the shard members then hold,
that no caption is lost from the metadata, and that recipes check the score columns."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate import schema
from curate.io.shard_writer import sample_members
from curate.recipe import RecipeError, build_recipe
from curate.stage import load_builtin_steps

load_builtin_steps()
from curate.filters.caption_select import CaptionSelect  # noqa: E402 - registered by load_builtin_steps

# (text, recaption, clip_score, recaption_clip_score) -> expected caption_kept with min_score 0.5
CASES = [
    ("orig a", "synth a", 0.6, 0.7, "both"),
    ("orig b", None, 0.6, None, "original"),          # no synthetic caption: never passes
    ("orig c", "synth c", 0.1, 0.9, "recaption"),
    ("orig d", "synth d", 0.1, 0.2, None),            # neither: dropped
    (None, "synth e", None, 0.8, "recaption"),        # no original score (empty alt-text never scored)
    ("orig f", "synth f", 0.5, float("nan"), "original"),  # a NaN score fails, the bar itself passes
]


def table(cases, prefix: str = "clip") -> pa.Table:
    n = len(cases)
    cols = {"uid": [f"u{i}" for i in range(n)], "text": [c[0] for c in cases], "recaption": [c[1] for c in cases],
            f"{prefix}_score": pa.array([c[2] for c in cases], pa.float32()),
            f"recaption_{prefix}_score": pa.array([c[3] for c in cases], pa.float32()), "status": ["ok"] * n}
    return schema.conform(pa.table(cols), schema.run_schema({"recaption": pa.string(), f"{prefix}_score": pa.float32(),
                                                             f"recaption_{prefix}_score": pa.float32()}))


def test_kept_captions_rewrite_text_and_recaption_and_keep_the_failed_one():
    out = CaptionSelect(min_score=0.5).process(table(CASES)).to_pylist()
    assert [r["caption_kept"] for r in out] == [c[4] for c in CASES]
    assert [(r["status"], r["reason"]) for r in out][3] == ("dropped", "caption_select_none_pass")
    a, b, c, d, e, f = out
    assert (a["text"], a["recaption"], a["caption_dropped"]) == ("orig a", "synth a", None)
    assert (b["text"], b["recaption"], b["caption_dropped"]) == ("orig b", None, None)
    assert (c["text"], c["recaption"], c["caption_dropped"]) == ("synth c", None, "orig c")  # original kept in metadata
    assert (d["text"], d["recaption"]) == ("orig d", "synth d")  # a dropped row is not rewritten
    assert (e["text"], e["caption_dropped"]) == ("synth e", None)
    assert (f["text"], f["recaption"], f["caption_dropped"]) == ("orig f", None, "synth f")
    # the original caption is recoverable for every kept row
    originals = [r["caption_dropped"] if r["caption_kept"] == "recaption" else r["text"] for r in out]
    assert [o for o, r in zip(originals, out) if r["status"] == "ok"] == ["orig a", "orig b", "orig c", None, "orig f"]


def test_shard_members_under_policy_both_hold_exactly_the_kept_captions():
    out = CaptionSelect(min_score=0.5).process(table(CASES)).to_pylist()
    texts = {}
    for r in out:
        if r["status"] == "ok":
            members = dict(sample_members({**r, "key": r["uid"]}, "both"))
            texts[r["uid"]] = (members[f"{r['uid']}.txt"].decode(), members.get(f"{r['uid']}.recap.txt", b"").decode())
    assert texts == {"u0": ("orig a", "synth a"), "u1": ("orig b", ""), "u2": ("synth c", ""),
                     "u4": ("synth e", ""), "u5": ("orig f", "")}


def test_separate_bars_keep_best_and_the_mllm_pair():
    rows = [("o", "s", 0.6, 0.7, None), ("o", "s", 0.6, 0.55, None)]
    strict = CaptionSelect(min_score=0.5, min_recaption_score=0.65).process(table(rows)).to_pylist()
    assert [r["caption_kept"] for r in strict] == ["both", "original"]
    best = CaptionSelect(min_score=0.5, keep="best").process(table(rows)).to_pylist()
    assert [(r["caption_kept"], r["text"], r["caption_dropped"]) for r in best] == [
        ("recaption", "s", "o"), ("original", "o", "s")]
    mllm = CaptionSelect(score="mllm", min_score=0.5).process(table(rows, "mllm")).to_pylist()
    assert [r["caption_kept"] for r in mllm] == ["both", "both"]


def test_recipe_needs_both_scores_before_caption_select(tiny_ckpt):
    with pytest.raises(RecipeError, match="caption_select: needs column 'recaption_clip_score'"):
        build_recipe({"stages": ["download", {"recaption": {"backend": "coca", "check_model": False}},
                                 {"clip_score": {"checkpoint": str(tiny_ckpt)}}, "caption_select"]})
    r = build_recipe({"stages": ["download", {"recaption": {"backend": "coca", "check_model": False}},
                                 {"clip_score": {"checkpoint": str(tiny_ckpt), "text_col": "both"}},
                                 {"caption_select": {"min_score": 0.3}}]})
    assert {"recaption_clip_score", "caption_kept", "caption_dropped"} <= set(r.stage_columns())


def test_json_caption_source_names_the_synthetic_caption_when_only_it_passed():
    """caption_select puts a recaption-only sample's synthetic caption in `text`: the json says so."""
    from curate.io.members import caption

    row = {"text": "a red square", "recaption": None, "caption_kept": "recaption", "caption_dropped": "buy now"}
    for policy in ("original", "both", "recaption"):
        assert caption(row, policy) == ("a red square", "recaption")
    assert caption({**row, "caption_kept": "original"}, "both") == ("a red square", "original")
