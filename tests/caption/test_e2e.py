"""The shipped recaption recipe through the real runner (download from a loopback server, Ray actor pool)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curate.demo.captions import is_boilerplate
from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer
from curate.recipe import RecipeError, load_recipe
from curate.runner import Runner


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    root = tmp_path_factory.mktemp("recapcorpus")
    generate_corpus(root, 200, seed=3)
    with DemoServer(root) as server:
        yield write_url_list(root, server.url, root / "urls.parquet")


def test_recaption_recipe_keeps_boilerplate_rows_with_a_synthetic_caption(tmp_path, urls, coca_ckpt, ray_address):
    out = tmp_path / "run"
    recipe = load_recipe("image_text_recaption", [f"recaption.checkpoint={coca_ckpt}", "recaption.on_truncated=keep",
                                                  "recaption.max_tokens=6", "recaption.batch_size=16"],
                         input_path=str(urls), output_path=str(out))
    Runner(recipe).start()
    meta = pq.read_table(str(out / "meta")).to_pylist()
    assert len(meta) == 200  # every input row accounted for
    boiler = [r for r in meta if r["status"] == "ok" and is_boilerplate(r["text"] or "")]
    assert boiler, "boilerplate rows are kept with a synthetic caption instead of dropped"
    assert all(r["recaption"] and r["recaption_model"].startswith("coca:curate-tiny-coca") for r in boiler)
    assert not any(r["reason"] == "caption_boilerplate" for r in meta)
    others = [r for r in meta if r["status"] == "ok" and not is_boilerplate(r["text"] or "")]
    assert others and all(r["recaption"] is None and r["recaption_flag"] == "not_selected" for r in others)
    # shards: original text in .txt, synthetic in .recap.txt, both in the json (policy `both`)
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / "shards" / "*.tar").replace("*", "000000"),
                                                        shardshuffle=False)}
    for r in boiler:
        s = samples[r["key"]]
        assert s["txt"].decode() == (r["text"] or "") and s["recap.txt"].decode() == r["recaption"]
        assert json.loads(s["json"])["recaption"] == r["recaption"]


def test_shipped_recipe_without_a_checkpoint_says_what_to_do():
    with pytest.raises(RecipeError, match="coca backend needs `checkpoint`"):
        load_recipe("image_text_recaption", input_path="x.parquet", output_path="o")


def test_cli_unknown_caption_model_is_one_line_and_nonzero(tmp_path, capsys):
    from tests.conftest import curate_inprocess

    r = curate_inprocess("run", "image_text_recaption", "-i", str(tmp_path / "urls.parquet"), "-o",
                         str(tmp_path / "out"), "--set", "recaption.model=no-such-coca",
                         "--set", f"recaption.checkpoint={tmp_path / 'c.pt'}", capsys=capsys)
    assert r.returncode != 0
    assert "checkpoint not found" in r.stderr or "no-such-coca" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists()  # nothing written before the error
