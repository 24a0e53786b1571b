"""clip_score on the synthetic caption: text_col both gives the same numbers as a direct computation with
the same model, rows without a recaption get null (not an error), and recipes check the columns."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.recipe import RecipeError, build_recipe
from curate.scorers.clip_score import ClipScore
from tests.scoring.conftest import rows_table


def with_recaptions(n: int = 8) -> pa.Table:
    t = rows_table(n)  # n active rows, then 3 failed rows without an image
    recaps = [None if i % 3 == 1 else f"a synthetic caption number {i}" for i in range(t.num_rows)]
    return t.append_column(pa.field("recaption", pa.string()), pa.array(recaps, pa.string()))


def test_both_scores_match_direct_computation_and_missing_recaptions_are_null(tiny_ckpt):
    from curate.models.clip import load_clip

    table = with_recaptions(8)
    stage = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", batch_size=3, text_col="both", embeddings=True)
    assert set(stage.writes) == {"clip_score", "recaption_clip_score", "clip_image_embedding", "clip_text_embedding"}
    out = stage.process(table).to_pylist()
    clip = load_clip(checkpoint=str(tiny_ckpt), device="cpu")
    active = [r for r in table.to_pylist() if r["status"] == "ok"]
    ie = clip.embed_images([Image.open(io.BytesIO(r["image"])).convert("RGB") for r in active])
    te = clip.embed_texts([r["text"] for r in active])
    np.testing.assert_allclose([r["clip_score"] for r in out[:8]], (ie * te).sum(1), atol=1e-4)
    with_recap = [i for i, r in enumerate(active) if r["recaption"] is not None]
    re = clip.embed_texts([active[i]["recaption"] for i in with_recap])
    np.testing.assert_allclose([out[i]["recaption_clip_score"] for i in with_recap],
                               (ie[with_recap] * re).sum(1), atol=1e-4)
    assert [out[i]["recaption_clip_score"] for i in range(8) if i not in with_recap] == [None] * (8 - len(with_recap))
    # the embeddings are the image and the original caption, as with text_col text
    np.testing.assert_allclose(np.array([r["clip_text_embedding"] for r in out[:8]], np.float32), te, atol=1e-4)
    assert all(r["clip_score"] is None and r["recaption_clip_score"] is None for r in out[8:])  # failed rows untouched
    # text_col recaption alone writes only its own column, with the same numbers
    only = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", text_col="recaption")
    assert set(only.writes) == {"recaption_clip_score"}
    again = only.process(table).to_pylist()
    assert [r["recaption_clip_score"] for r in again] == pytest.approx([r["recaption_clip_score"] for r in out],
                                                                        abs=1e-5, nan_ok=True)


def test_recipes_check_the_synthetic_caption_and_settings(tiny_ckpt):
    with pytest.raises(RecipeError, match="needs column 'recaption'.*'recaption'"):
        build_recipe({"stages": ["download", {"clip_score": {"checkpoint": str(tiny_ckpt), "text_col": "both"}}]})
    with pytest.raises(RecipeError, match="text_col: both"):
        build_recipe({"stages": ["download", {"clip_score": {"checkpoint": str(tiny_ckpt), "text_col": "recaption",
                                                 "embeddings": True}}]})
    # the class declares every column it may write (recipe hints, reserved input names)
    assert {"clip_score", "recaption_clip_score"} <= set(ClipScore.writes)
    assert "recaption_clip_score" not in ClipScore(checkpoint=str(tiny_ckpt)).writes
