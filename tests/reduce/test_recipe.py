"""The shipped reduce recipe end to end: download from a loopback server, CLIP embeddings, reduce to a
quarter, recaption the kept rows, shards with both captions."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds

from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer
from curate.recipe import load_recipe
from curate.runner import Runner


def test_reduce_recipe_keeps_a_quarter_and_recaptions_it(tmp_path, tiny_ckpt, coca_ckpt, ray_address):
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    generate_corpus(corpus, 80, seed=5, workers=1, eval_n=0, seed_n=0)
    with DemoServer(corpus) as server:
        urls = write_url_list(corpus, server.url, tmp_path / "urls.parquet")
        recipe = load_recipe("image_text_reduce", [
            f"clip_score.checkpoint={tiny_ckpt}", "clip_score.device=cpu", "clip_score.batch_size=32",
            "reduce.clusters=4", f"recaption.checkpoint={coca_ckpt}", "recaption.on_truncated=keep",
            "recaption.max_tokens=6", "recaption.batch_size=32"], input_path=str(urls), output_path=str(out))
        Runner(recipe).start()
    meta = pq.read_table(str(out / "meta")).to_pylist()
    assert len(meta) == 80  # every input row accounted for
    reached = [r for r in meta if r["reduce_cluster"] is not None]  # rows still in play when reduce ran
    kept = [r for r in meta if r["status"] == "ok"]
    outcomes = Counter((r["status"], r["stage"], r["reason"]) for r in meta)
    assert reached and len(kept) == int(np.floor(0.25 * len(reached) + 0.5)), outcomes
    assert {r["reduce_cluster"] for r in kept} == {r["reduce_cluster"] for r in reached if r["reduce_cluster"] >= 0}
    assert all(r["reason"] == "reduce_not_selected" for r in reached if r["status"] != "ok")
    assert all(r["recaption"] for r in kept)  # `rows: all` recaptioned every kept sample, and only those
    assert not any(r["recaption"] for r in meta if r["status"] != "ok")
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / "shards" / "000000.tar"), shardshuffle=False)}
    assert len(samples) == len(kept)
    for r in kept:
        s = samples[r["key"]]
        assert s["txt"].decode() == (r["text"] or "") and s["recap.txt"].decode() == r["recaption"]
