"""mllm_score in a plain loop: the tiny VLM in process, the same VLM behind the loopback server, error rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate import schema
from curate.models.clip import ModelLoadError
from curate.recipe import RecipeError, load_recipe
from curate.scorers.mllm import MllmScore
from curate.stage import run_local

from .conftest import jpeg

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]


def table(n: int = 8, bad: tuple[int, ...] = (), dropped: tuple[int, ...] = ()) -> pa.Table:
    t = pa.table({
        "uid": [f"u{i}" for i in range(n)],
        "text": [f"a {COLORS[i % 8]} circle" + " on grass" * (i % 3) for i in range(n)],  # varied lengths: padding
        "image": [b"not an image" if i in bad else jpeg(COLORS[i % 8], (40 + 8 * i, 40)) for i in range(n)],
        "status": ["dropped" if i in dropped else "ok" for i in range(n)],
    })
    return schema.conform(t, schema.run_schema({"image": pa.binary(), **MllmScore.writes}))


@pytest.fixture(scope="module")
def in_process(tiny_vlm):
    stage = MllmScore(model=tiny_vlm, device="cpu", batch_size=3)
    stage.setup()
    return stage


def test_transformers_backend_scores_every_active_row(in_process, tiny_vlm):
    out = in_process.process(table(8, bad=(5,), dropped=(6,))).to_pylist()
    for i, r in enumerate(out):
        if i == 6:
            assert (r["status"], r["mllm_score"], r["mllm_model"]) == ("dropped", None, None)  # not touched
        elif i == 5:
            assert (r["status"], r["stage"], r["reason"]) == ("failed", "mllm_score", "mllm_image_error")
            assert r["error"]
        else:
            assert r["status"] == "ok" and 0 < r["mllm_score"] < 1 and r["mllm_model"] == tiny_vlm
    # a random model still tells images apart: the scores are not one constant
    assert len({round(r["mllm_score"], 6) for r in out if r["mllm_score"] is not None}) > 1


def test_batching_does_not_change_scores(in_process, tiny_vlm):
    one = MllmScore(model=tiny_vlm, device="cpu", batch_size=1)
    a = in_process.process(table(7)).column("mllm_score").to_numpy()
    b = one.process(table(7)).column("mllm_score").to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_rating_mode_parses_or_reports_unparseable(tiny_vlm):
    out = MllmScore(model=tiny_vlm, device="cpu", mode="rating", max_new_tokens=3).process(table(4)).to_pylist()
    for r in out:  # a random model babbles: each row is either a rating in range or mllm_unparseable
        if r["status"] == "ok":
            assert 0.1 <= r["mllm_score"] <= 1.0
        else:
            assert r["reason"] == "mllm_unparseable" and ("answer" in r["error"] or "rating" in r["error"])


def test_endpoint_backend_matches_the_same_model_in_process(in_process, tiny_vlm, chat_server, tmp_path):
    """The server scores with the tiny VLM; a yes_prob answer travels as top_logprobs and comes back equal."""
    from PIL import Image
    import io

    backend = in_process._backend

    def vlm_score(image: bytes, text: str) -> float:
        return backend.forward_batch([Image.open(io.BytesIO(image)).convert("RGB")], [text])[0].score

    chat_server.scorer = vlm_score
    try:
        remote = MllmScore(backend="endpoint", model="tiny", base_url=chat_server.url, cache_dir=str(tmp_path))
        a = remote.process(table(6)).column("mllm_score").to_numpy()
    finally:
        from .chat_server import hash_score
        chat_server.scorer = hash_score
    b = in_process.process(table(6)).column("mllm_score").to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_endpoint_failures_fail_rows_or_keep_them_by_policy(chat_server, tmp_path):
    chat_server.behave = lambda n, text: ("status", 500) if "blue" in text else (
        ("malformed",) if "green" in text else ("ok",))
    kw = dict(backend="endpoint", model="tiny", base_url=chat_server.url, retries=1, backoff_s=0.01, cache=False)
    out = MllmScore(**kw).process(table(4, bad=(3,))).to_pylist()
    assert [(r["status"], r["reason"]) for r in out] == [
        ("ok", None), ("failed", "mllm_http_error"), ("failed", "mllm_bad_response"), ("failed", "mllm_image_error")]
    assert sum(c for t, c in chat_server.texts.items() if "blue" in t) == 2  # retried once

    kept = MllmScore(**kw, on_error="keep").process(table(4)).to_pylist()
    assert [r["status"] for r in kept] == ["ok"] * 4
    assert [r["mllm_score"] is None for r in kept] == [False, True, True, False]


def test_rating_mode_over_http(chat_server):
    chat_server.behave = lambda n, text: ("ok",)
    out = MllmScore(backend="endpoint", model="tiny", base_url=chat_server.url, mode="rating",
                    cache=False).process(table(5)).to_pylist()
    from curate.scorers.mllm import PROMPTS

    from .chat_server import hash_score

    prompt = PROMPTS["rating"].replace("{rating_max}", "10")
    expected = [(1 + round(hash_score(r["image"], prompt.replace("{caption}", r["text"])) * 9)) / 10 for r in out]
    assert all(r["status"] == "ok" for r in out)
    np.testing.assert_allclose([r["mllm_score"] for r in out], expected, atol=1e-6)


def test_threshold_filter_decides_on_the_score(chat_server):
    from curate.filters.mllm_threshold import MllmThreshold

    chat_server.behave = lambda n, text: ("status", 400) if "blue" in text else ("ok",)
    steps = [MllmScore(backend="endpoint", model="tiny", base_url=chat_server.url, cache=False, on_error="keep"),
             MllmThreshold(min_score=0.5)]
    out = run_local(steps, table(8)).to_pylist()
    for r in out:
        if r["mllm_score"] is None:
            assert r["reason"] == "mllm_score_missing"
        elif r["mllm_score"] < 0.5:
            assert (r["status"], r["reason"]) == ("dropped", "mllm_score_below_threshold")
        else:
            assert r["status"] == "ok"
    assert {r["reason"] for r in out} >= {"mllm_score_missing", "mllm_score_below_threshold", None}


def test_a_model_that_cannot_load_is_one_line(tmp_path):
    from transformers import BertConfig

    text_only = tmp_path / "bert"  # config and weights files are there, but it is no VLM (and has no processor)
    config = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    config.save_pretrained(text_only)
    (text_only / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="cannot load VLM"):
        MllmScore(model=str(text_only), device="cpu").setup()
    with pytest.raises(ValueError, match="does not exist"):  # caught when the recipe is validated
        MllmScore(model=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        MllmScore(model=str(tmp_path / "empty"))


def test_recipe_rejects_endpoint_without_url(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "name: x\ninput: {path: in.parquet}\noutput: {path: out}\n"
        "stages:\n  - download: {}\n  - mllm_score: {backend: endpoint, model: m}\n")
    with pytest.raises(RecipeError, match="base_url"):
        load_recipe(str(tmp_path / "r.yaml"))


def test_default_rating_prompt_asks_for_the_stage_scale():
    """rating_max rescales the answer; the default prompt must ask for the same scale (it always said 1 to 10)."""
    from curate.scorers.mllm import MllmScore

    five = MllmScore(backend="endpoint", model="m", base_url="http://127.0.0.1:9/v1", mode="rating", rating_max=5)
    assert "Rate from 1 to 5 how well" in five.template() and "{caption}" in five.template()
    ten = MllmScore(backend="endpoint", model="m", base_url="http://127.0.0.1:9/v1", mode="rating")
    assert "Rate from 1 to 10 how well" in ten.template()  # the default scale: the same prompt (and cache key) as before
    own = MllmScore(backend="endpoint", model="m", base_url="http://127.0.0.1:9/v1", mode="rating", rating_max=4,
                    prompt="Score {caption} from 0 to {rating_max}")
    assert own.template() == "Score {caption} from 0 to 4"


def test_a_folder_under_home_written_with_a_tilde_loads(tiny_vlm, tmp_path, monkeypatch):
    """`model: ~/models/vlm` passed the recipe check (expanded there) but went to from_pretrained unexpanded,
    which took it for a hub id and failed in the worker."""
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_vlm, tmp_path / "vlm")
    stage = MllmScore(model="~/vlm", device="cpu")
    assert stage.weights_problem() is None
    stage.setup()
    assert stage._backend.model is not None
