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


def test_a_model_that_fails_to_load_is_fixed_in_the_recipe_and_the_run_resumes(tmp_path, urls, coca_ckpt, ray_address):
    """The model is only checked when a worker starts (check_model: false, as for a hub model that is not in
    the cache). With the model stage after a job, the run stops with download and dedup kept and says to
    finish with --resume; the fixed recipe resumes (no row had reached recaption, so its settings may
    change) and the run directory then records the recipe that made the data. A change to a stage rows
    already went through is refused, naming the setting. With the model stage in the first segment the run
    made nothing, was removed, and says to run again."""
    import yaml

    from curate.runner import RunError

    out = tmp_path / "run"
    stages = [{"download": {"image_size": 64, "resize_mode": "center_crop", "timeout_s": 2, "retries": 0}},
              {"exact_dedup": {"by": "image"}},
              {"recaption": {"backend": "coca", "model": "curate-tiny-coca", "checkpoint": None, "rows": "all",
                             "max_tokens": 6, "batch_size": 16, "on_truncated": "keep", "check_model": False}}]
    path = tmp_path / "late_model.yaml"
    path.write_text(yaml.safe_dump({"name": "late-model", "stages": stages}))

    def recipe(*sets, to=out, where=path):
        return load_recipe(str(where), list(sets), input_path=str(urls), output_path=str(to))

    with pytest.raises(RunError, match="fix the recipe .* then finish with --resume"):
        Runner(recipe(f"recaption.checkpoint={tmp_path / 'missing.pt'}")).start()
    assert (out / "_work").exists() and not list((out / "meta").glob("*.parquet"))  # download + dedup were kept
    with pytest.raises(RunError, match=r"stages\[0\]\.download\.threads: \d+ -> 3"):  # rows went through it
        Runner(recipe(f"recaption.checkpoint={coca_ckpt}", "download.threads=3")).start(resume=True)
    manifest = Runner(recipe(f"recaption.checkpoint={coca_ckpt}")).start(resume=True)
    assert manifest.complete and manifest.counts.rows == 200
    meta = pq.read_table(str(out / "meta")).to_pylist()
    assert len(meta) == 200 and any(r["recaption"] for r in meta)
    saved = (out / "recipe.yaml").read_text()
    assert str(coca_ckpt) in saved and "missing.pt" not in saved  # the recipe that made the data
    assert any(str(coca_ckpt) in p for p in manifest.named_files)

    first = tmp_path / "first_segment.yaml"  # the model stage before any job: nothing is kept
    first.write_text(yaml.safe_dump({"name": "early-model", "stages": [stages[0], stages[2], stages[1]]}))
    with pytest.raises(RunError, match="fix the recipe and run it again"):
        Runner(recipe(f"recaption.checkpoint={tmp_path / 'missing.pt'}", to=tmp_path / "early", where=first)).start()
    assert not (tmp_path / "early").exists()
