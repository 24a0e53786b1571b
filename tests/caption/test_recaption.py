"""The recaption stage on both backends with tiny real models: columns, batching, bad input, row selection."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.caption.recaption import Recaption
from curate.recipe import RecipeError, build_recipe
from curate.stage import run_local

from .conftest import image_table, jpg

TEXTS = ["a red circle on the left", "IMG_0042.jpg", "click here", "two blue squares", "three green stars"]


def test_coca_beam_adds_columns_and_keeps_original_text(coca_ckpt):
    stage = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=12, min_tokens=2, batch_size=2,
                      on_truncated="keep")
    t = image_table(TEXTS)
    out = stage.process(t)
    assert out.column("text").to_pylist() == TEXTS  # never overwritten
    caps = out.column("recaption").to_pylist()
    assert all(isinstance(c, str) and c for c in caps)
    assert set(out.column("recaption_model").to_pylist()) == {f"coca:curate-tiny-coca:{coca_ckpt}"}
    assert set(out.column("status").to_pylist()) == {"ok"}
    # batching does not change results: one batch of 5 gives the same beams as batches of 2
    one = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=12, min_tokens=2, batch_size=8,
                    on_truncated="keep").process(t)
    assert one.column("recaption").to_pylist() == caps


def test_coca_one_beam_is_greedy_not_an_error(coca_ckpt):
    """num_beams 1 (allowed by the settings) decodes greedily: every row gets a caption, and the same one twice."""
    kw = dict(backend="coca", checkpoint=str(coca_ckpt), num_beams=1, max_tokens=8, min_tokens=2,
              on_truncated="keep")
    t = image_table(TEXTS[:3])
    a = Recaption(**kw).process(t)
    assert set(a.column("status").to_pylist()) == {"ok"}
    assert all(isinstance(c, str) and c for c in a.column("recaption").to_pylist())
    assert Recaption(seed=5, **kw).process(t).column("recaption").to_pylist() == a.column("recaption").to_pylist()


def test_coca_top_p_is_seeded(coca_ckpt):
    kw = dict(backend="coca", checkpoint=str(coca_ckpt), decoding="top_p", top_p=0.9, max_tokens=10,
              on_truncated="keep")
    t = image_table(TEXTS[:3])
    a = Recaption(seed=1, **kw).process(t).column("recaption").to_pylist()
    b = Recaption(seed=1, **kw).process(t).column("recaption").to_pylist()
    c = Recaption(seed=2, **kw).process(t).column("recaption").to_pylist()
    assert a == b and a != c


def test_truncated_generations_are_flagged_and_dropped_by_default(coca_ckpt):
    # a random-init CoCa never emits end-of-text in beam search, so every caption runs into max_tokens
    t = image_table(TEXTS[:2])
    out = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=6, min_tokens=2).process(t)
    assert out.column("recaption_flag").to_pylist() == ["truncated", "truncated"]
    assert out.column("recaption").to_pylist() == [None, None]
    kept = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=6, min_tokens=2,
                     on_truncated="keep").process(t)
    assert all(len(c.split()) <= 6 + 1 for c in kept.column("recaption").to_pylist())  # BPE pieces join


def test_undecodable_image_fails_its_row_only(coca_ckpt):
    images = [jpg((200, 0, 0)), b"not an image", None, jpg((0, 0, 200))]
    t = image_table(["a", "b", "c", "d"], images)
    out = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=8, on_truncated="keep").process(t)
    rows = out.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert rows[1]["reason"] == "recaption_image_error" and rows[1]["stage"] == "recaption"
    assert "cannot identify image" in rows[1]["error"]
    assert " at 0x" not in rows[1]["error"]  # PIL's object address would make the same input's meta differ per run
    assert rows[0]["recaption"] and rows[3]["recaption"] and rows[1]["recaption"] is None


def test_rows_already_decided_are_untouched(coca_ckpt):
    t = image_table(TEXTS[:3])
    t = t.set_column(t.column_names.index("status"), "status", pa.array(["ok", "dropped", "ok"]))
    out = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=8, on_truncated="keep").process(t)
    assert out.column("status").to_pylist() == ["ok", "dropped", "ok"]
    assert out.column("recaption").to_pylist()[1] is None


def test_transformers_tiny_blip_by_path_with_and_without_prompt(tiny_blip):
    t = image_table(TEXTS[:3])
    plain = Recaption(backend="transformers", model=str(tiny_blip), max_tokens=8, batch_size=2,
                      on_truncated="keep").process(t)
    caps = plain.column("recaption").to_pylist()
    assert all(isinstance(c, str) and c for c in caps)
    assert set(plain.column("recaption_model").to_pylist()) == {f"transformers:{tiny_blip}"}
    prompted = Recaption(backend="transformers", model=str(tiny_blip), prompt="a picture of", max_tokens=8,
                         min_tokens=2, on_truncated="keep").process(t)
    # the echoed prompt is removed: what remains is the model's continuation only
    for c in prompted.column("recaption").to_pylist():
        assert c and not c.startswith("a picture of")


def test_transformers_generations_over_the_limit_and_empty(tiny_blip, mute_blip):
    t = image_table(TEXTS[:2])
    long = Recaption(backend="transformers", model=str(tiny_blip), max_tokens=4, min_tokens=4).process(t)
    assert long.column("recaption_flag").to_pylist() == ["truncated", "truncated"]
    assert long.column("recaption").to_pylist() == [None, None]
    mute = Recaption(backend="transformers", model=str(mute_blip), max_tokens=8, min_tokens=0).process(t)
    assert mute.column("recaption_flag").to_pylist() == ["empty", "empty"]
    assert mute.column("recaption").to_pylist() == [None, None]
    assert set(mute.column("status").to_pylist()) == {"ok"}  # no caption is not a reason to drop a sample


def test_boilerplate_rows_only_then_caption_text_checks_the_effective_caption(tiny_blip):
    from curate.filters.caption_text import CaptionText

    steps = [Recaption(backend="transformers", model=str(tiny_blip), max_tokens=8, min_tokens=3,
                       rows="boilerplate", on_truncated="keep"),
             CaptionText(min_words=2, use_recaption=True)]
    out = run_local(steps, image_table(TEXTS)).to_pylist()
    flags = [r["recaption_flag"] for r in out]
    assert flags[0] == flags[3] == flags[4] == "not_selected" and "not_selected" not in flags[1:3]
    assert [r["status"] for r in out] == ["ok"] * 5  # boilerplate rows survive with a synthetic caption
    assert out[1]["text"] == "IMG_0042.jpg" and out[1]["recaption"]
    # without recaption, caption_text drops them as before
    plain = run_local([CaptionText(min_words=2)], image_table(TEXTS)).to_pylist()
    assert [r["reason"] for r in plain][1:3] == ["caption_boilerplate", "caption_boilerplate"]


@pytest.mark.parametrize("cfg, message", [
    ({"backend": "coca", "model": "no-such-coca"}, "unknown open_clip model 'no-such-coca'"),
    ({"backend": "coca", "model": "curate-tiny"}, "is not a CoCa model"),
    ({"backend": "coca", "checkpoint": "/nonexistent/coca.pt"}, "checkpoint not found"),
    ({"backend": "transformers", "model": "./no/such/folder"}, "model folder ./no/such/folder does not exist"),
    # whether a hub id is cached or reachable is the run's preflight (tests/test_models_hub.py), not the recipe's
    ({"backend": "transformers", "model": "no such vlm!"}, "is neither a folder nor a Hugging Face hub id"),
    ({"backend": "ollama"}, "backend"),
])
def test_unknown_model_is_a_recipe_error_before_work(cfg, message):
    with pytest.raises(RecipeError) as err:
        build_recipe({"name": "t", "input": {"path": "x.parquet"}, "output": {"path": "out"},
                      "stages": [{"download": {}}, {"recaption": cfg}]})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_endpoint_setting_is_base_url_like_the_other_endpoint_stages():
    """mllm_score and fuse_captions call it base_url; recaption's earlier name `url` still loads."""
    a = Recaption(backend="endpoint", base_url="http://127.0.0.1:9/v1", model="m")
    b = Recaption.model_validate({"backend": "endpoint", "url": "http://127.0.0.1:9/v1", "model": "m"})
    assert a == b and a.model_dump()["base_url"] == "http://127.0.0.1:9/v1" and "url" not in a.model_dump()


def test_next_batch_is_decoded_while_this_one_generates_and_batches_are_unchanged(coca_ckpt, monkeypatch):
    """Decode + preprocess run on a thread one batch ahead of generate (never a whole part up front), and the
    batches are the row-by-row ones: a broken row is left out whole, the others keep their order."""
    import threading

    from curate import images as img

    images = [jpg((20 * i, 0, 200 - 20 * i), seed=i) for i in range(10)]
    images[3] = b"not an image"
    t = image_table([f"caption {i}" for i in range(10)], images)
    stage = Recaption(backend="coca", checkpoint=str(coca_ckpt), max_tokens=8, on_truncated="keep", batch_size=3)
    stage.setup()
    cap = stage._captioner
    decoded, seen = [], []
    real_images, real_pre, real_gen = Recaption._images, cap.preprocess, cap.generate

    def counting_images(self, table, i):
        decoded.append(i)
        return real_images(self, table, i)

    def pre(ims):
        seen.append(("pre", threading.current_thread().name, len(ims)))
        return real_pre(ims)

    def gen(inputs):
        seen.append(("gen", len(decoded)))
        return real_gen(inputs)

    monkeypatch.setattr(Recaption, "_images", counting_images)
    monkeypatch.setattr(cap, "preprocess", pre)
    monkeypatch.setattr(cap, "generate", gen)
    out = stage.process(t).to_pylist()
    pres = [s for s in seen if s[0] == "pre"]
    gens = [s[1] for s in seen if s[0] == "gen"]
    assert [n for _, _, n in pres] == [3, 3, 3] and all(name.startswith("recaption-prepare") for _, name, _ in pres)
    assert gens[0] <= 7 < 10  # at the first generate, at most two batches (+ the broken row) were decoded
    assert out[3]["status"] == "failed" and out[3]["reason"] == "recaption_image_error"
    good = [i for i in range(10) if i != 3]
    monkeypatch.undo()
    want = []
    for k in range(0, len(good), 3):  # the same batches, captioned in one call each
        want += [c.text for c in cap.caption([img.decode_rgb(images[i]) for i in good[k:k + 3]])]
    assert [out[i]["recaption"] for i in good] == want


def test_coca_hub_weights_that_cannot_be_had_stop_a_run_before_any_work(tmp_path, monkeypatch):
    """As for the CLIP stages: a CoCa hub tag neither cached nor reachable failed the first worker to load
    it, after the input was split and images downloaded; the run's preflight now refuses it in one line."""
    from huggingface_hub import constants

    from curate.runner import RunError, Runner

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    stage = Recaption(backend="coca", model="coca_ViT-B-32", pretrained="laion2b_s13b_b90k", check_model=False)
    why = stage.weights_problem()
    assert why.startswith("recaption: the weights of coca_ViT-B-32/laion2b_s13b_b90k are not in the local")
    assert "recaption.checkpoint" in why and "\n" not in why
    assert Recaption(backend="coca", model="coca_ViT-B-32", checkpoint="/x.pt", check_model=False).weights_problem() is None
    rec = build_recipe({"name": "t", "input": {"path": str(tmp_path / "in.parquet")}, "output": {"path": str(tmp_path / "out")},
                        "stages": [{"download": {}}, {"recaption": {"backend": "coca", "model": "coca_ViT-B-32",
                                                                    "pretrained": "laion2b_s13b_b90k", "check_model": False}}]})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a"]}), tmp_path / "in.parquet")
    with pytest.raises(RunError, match="recaption: the weights of coca_ViT-B-32"):
        Runner(rec).start()
    assert not (tmp_path / "out").exists()
