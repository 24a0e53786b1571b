"""clip_score stage: scores equal a direct computation with the same model, failed rows untouched,
embeddings stored unit-norm, config errors caught at recipe load."""
from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.recipe import RecipeError, build_recipe
from curate.scorers.clip_score import ClipScore

from .conftest import rows_table


def test_scores_match_direct_computation(tiny_ckpt):
    from curate.models.clip import load_clip

    table = rows_table()
    stage = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", batch_size=5, decode_threads=2, embeddings=True)
    stage.setup()
    out = stage.process(table)
    assert out.num_rows == table.num_rows

    clip = load_clip(checkpoint=str(tiny_ckpt), device="cpu")
    active = table.filter(pa.compute.equal(table.column("status"), "ok"))
    ims = [Image.open(io.BytesIO(b)).convert("RGB") for b in active.column("image").to_pylist()]
    ie = clip.embed_images(ims)
    te = clip.embed_texts(active.column("text").to_pylist())
    want = (ie * te).sum(axis=1)
    got = out.column("clip_score").to_numpy(zero_copy_only=False)[: active.num_rows]
    np.testing.assert_allclose(got, want, atol=1e-4)
    # stored embeddings are the same unit vectors
    stored = np.array(out.column("clip_image_embedding").to_pylist()[: active.num_rows], np.float32)
    np.testing.assert_allclose(stored, ie, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-4)
    # the scores are not all the same (the test could fail)
    assert np.ptp(got) > 1e-3


def test_failed_rows_and_bad_images_untouched(tiny_ckpt):
    table = rows_table(6)
    imgs = table.column("image").to_pylist()
    imgs[2] = b"not a jpeg"
    table = table.set_column(table.column_names.index("image"), "image", pa.array(imgs, pa.binary()))
    out = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", batch_size=4).process(table)
    scores = out.column("clip_score").to_pylist()
    status = out.column("status").to_pylist()
    assert [s for s, st in zip(scores, status) if st == "failed"] == [None, None, None]
    assert scores[2] is None or np.isnan(scores[2])
    assert all(s is not None and np.isfinite(s) for i, s in enumerate(scores[:6]) if i != 2)
    assert out.column("clip_image_embedding").null_count == out.num_rows  # embeddings off
    for col in ("status", "stage", "reason", "uid", "text"):
        assert out.column(col).to_pylist() == table.column(col).to_pylist()


def test_batch_size_does_not_change_scores(tiny_ckpt):
    table = rows_table(11)
    a = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", batch_size=3, decode_threads=3).process(table)
    b = ClipScore(checkpoint=str(tiny_ckpt), device="cpu", batch_size=64, decode_threads=1).process(table)
    np.testing.assert_allclose(a.column("clip_score").to_numpy(zero_copy_only=False),
                               b.column("clip_score").to_numpy(zero_copy_only=False), atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("cfg, msg", [
    ({"checkpoint": "/nonexistent/filter.pt"}, "checkpoint not found: /nonexistent/filter.pt"),
    ({"model": "ViT-Nope-99"}, "unknown open_clip model 'ViT-Nope-99'"),
    ({}, "clip_score needs `model` (an open_clip name) or `checkpoint`"),
    ({"model": "ViT-B-32"}, "clip_score has no weights for ViT-B-32: give `pretrained:`"),
    ({"model": "curate-tiny", "pretrained": None, "checkpoint": None}, "clip_score has no weights for curate-tiny"),
    ({"model": "ViT-B-32", "pretrained": "no-such-tag"}, "no pretrained tag 'no-such-tag' for ViT-B-32"),
])
def test_bad_model_is_a_recipe_error(cfg, msg):
    with pytest.raises(RecipeError, match=re.escape(msg)) as err:
        build_recipe({"name": "t", "input": {"path": "x"}, "output": {"path": "y"},
                      "stages": [{"download": {}}, {"clip_score": cfg}]})
    assert "\n" not in str(err.value)


def test_random_weights_only_when_opted_in():
    """A model name alone builds a random-init model in open_clip: its scores, and the keep/drop decisions on
    them, are noise. `random_init: true` is the explicit opt-in (tests, demos, speed benches); it skips only
    the weights check, not the name and tag checks."""
    def recipe(cfg: dict):
        return build_recipe({"name": "t", "input": {"path": "x"}, "output": {"path": "y"},
                             "stages": [{"download": {}}, {"clip_score": cfg}]})

    assert recipe({"model": "curate-tiny", "random_init": True}).to_dict()["stages"][1]["clip_score"]["random_init"]
    recipe({"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})  # checked, not downloaded
    with pytest.raises(RecipeError, match="unknown open_clip model 'ViT-Nope-99'"):
        recipe({"model": "ViT-Nope-99", "random_init": True})
    with pytest.raises(ValueError, match="has no weights for curate-tiny"):
        ClipScore(model="curate-tiny", device="cpu")  # in code too, not only in recipes


def test_resume_of_a_random_weight_run_is_refused_in_one_line(tmp_path, cli_inprocess):
    """A run started before clip_score refused random weights saved `model` alone in its recipe.yaml (every
    other setting resolved, no random_init). `curate run --resume` reads it back and stops in one line that
    names what to add, before it touches the run."""
    import yaml

    out = tmp_path / "out"
    out.mkdir()
    rec = build_recipe({"name": "r", "input": {"path": str(tmp_path / "urls.csv")}, "output": {"path": str(out)},
                        "stages": [{"download": {}}, {"clip_score": {"model": "ViT-B-32", "random_init": True}}]})
    saved = rec.to_dict()
    del saved["stages"][1]["clip_score"]["random_init"]  # as the older version wrote it
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    before = sorted(p.name for p in out.iterdir())
    proc = cli_inprocess("run", "--resume", "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "clip_score has no weights for ViT-B-32" in line, line
    assert "`pretrained:`" in line and "`checkpoint:`" in line and "random_init: true" in line
    assert sorted(p.name for p in out.iterdir()) == before


def test_cli_one_line_error_before_any_work(tmp_path, cli_inprocess):
    cli = cli_inprocess  # the entry point in this process: same error handling, no interpreter start
    src = tmp_path / "urls.csv"
    src.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a cat\n")
    rec = tmp_path / "r.yaml"
    rec.write_text("name: r\nstages:\n  - download: {}\n  - clip_score: {checkpoint: missing/filter.pt}\n")
    out = tmp_path / "out"
    proc = cli("run", str(rec), "-i", str(src), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "checkpoint not found: missing/filter.pt" in proc.stderr
    assert not out.exists()
