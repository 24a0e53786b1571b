"""clip_score through the real runner (actor pool, Ray), the embeddings sidecar feeding semantic dedup,
clip_top_fraction as a Job, and `curate refilter` end to end (validate, counts in == counts out, bad SQL)."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.catalog import query
from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer
from curate.recipe import build_recipe
from curate.runner import Runner

N = 200


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_ckpt, ray_address):
    root = tmp_path_factory.mktemp("scoring_run")
    corpus = root / "corpus"
    generate_corpus(corpus, N, seed=1, workers=1, eval_n=0, seed_n=0)
    out = root / "out"
    with DemoServer(corpus) as server:
        urls = write_url_list(corpus, server.url, root / "urls.parquet")
        recipe = build_recipe({"name": "t", "input": {"path": str(urls)},
                               "output": {"path": str(out), "samples_per_shard": 80},
                               "stages": [{"download": {"image_size": 64, "timeout_s": 1, "retries": 0}},
                                          {"clip_score": {"checkpoint": str(tiny_ckpt), "batch_size": 32,
                                                          "embeddings": True, "device": "cpu"}},
                                          {"semantic_dedup": {"column": "clip_image_embedding", "threshold": 0.9999,
                                                              "clusters": 2}},
                                          {"clip_top_fraction": {"fraction": 0.5}}]})
        Runner(recipe).start()
    return out


def test_scores_sidecar_and_top_fraction(scored_run):
    meta = pq.read_table(str(scored_run / "meta")).to_pylist()
    assert len(meta) == N
    assert "clip_image_embedding" not in meta[0]  # vectors live in the sidecar, not in meta
    failed = [r for r in meta if r["status"] == "failed"]
    assert failed and all(r["clip_score"] is None for r in failed)
    scored = [r for r in meta if r["clip_score"] is not None]
    ranked = [r for r in scored if r["clip_rank"] is not None]
    kept = [r for r in ranked if r["status"] == "ok"]
    assert len(kept) == int(np.floor(0.5 * len(ranked) + 0.5))
    assert min(r["clip_score"] for r in kept) >= max(r["clip_score"] for r in ranked if r["status"] != "ok")
    assert all(r["reason"] == "clip_score_not_top" for r in ranked if r["status"] != "ok")
    # sidecar: one unit vector per scored row, joinable on uid through the catalog
    side = pq.read_table(str(scored_run / "embeddings"))
    assert set(side.column("uid").to_pylist()) == {r["uid"] for r in scored}
    x = np.array(side.column("clip_image_embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    cols, rows = query(scored_run, "SELECT count(*) FROM embeddings e JOIN samples s USING (uid) WHERE s.clip_score IS NOT NULL")
    assert rows[0][0] == len(scored)
    # semantic dedup ran on the embeddings column: every embedded row got a cluster id
    assert all(r["semantic_cluster"] is not None for r in scored)


def test_refilter_end_to_end(scored_run, tmp_path, cli_inprocess):
    """Through the console entry point in this process (the one-line-error tests below do the same)."""
    cli = cli_inprocess
    med = float(np.median([r["clip_score"] for r in pq.read_table(str(scored_run / "meta")).to_pylist()
                           if r["status"] == "ok"]))
    out2 = tmp_path / "out2"
    proc = cli("refilter", str(scored_run), "--where", f"clip_score >= {med}", "--output", str(out2))
    assert proc.returncode == 0, proc.stderr
    a = {r["uid"]: r for r in pq.read_table(str(scored_run / "meta")).to_pylist()}
    b = {r["uid"]: r for r in pq.read_table(str(out2 / "meta")).to_pylist()}
    assert a.keys() == b.keys()
    for uid, r in b.items():
        if a[uid]["status"] != "ok":
            assert (r["status"], r["reason"]) == (a[uid]["status"], a[uid]["reason"])
        elif a[uid]["clip_score"] >= med:
            assert r["status"] == "ok" and r["shard"] == a[uid]["shard"]
        else:
            assert (r["status"], r["stage"], r["reason"], r["shard"]) == ("dropped", "refilter", "refilter_where", None)
    assert 0 < sum(r["status"] == "ok" for r in b.values()) < sum(r["status"] == "ok" for r in a.values())
    val = cli("validate", str(out2))
    assert val.returncode == 0, val.stdout + val.stderr
    assert (out2 / "embeddings").is_dir() and (out2 / "report.html").is_file()
    # the report's dropped thumbnails: OUT's, plus the rows refilter dropped (read back from OUT's shards)
    before = pq.read_table(str(scored_run / "thumbs")).column("uid").to_pylist()
    after = {r["uid"]: r for r in pq.read_table(str(out2 / "thumbs")).to_pylist()}
    assert set(before) < set(after)
    assert all(b[u]["stage"] == "refilter" and r["stage"] == "refilter" for u, r in after.items() if u not in before)
    assert 'data-stage="refilter"' in (out2 / "report.html").read_text()


def test_report_shows_what_the_clip_filter_dropped(scored_run):
    """Rows dropped by a model filter (clip_top_fraction) get their image and clip_score in the report."""
    import re

    page = (scored_run / "report.html").read_text()
    grid = re.search(r'<h3 class="dropped-stage" data-stage="clip_top_fraction">.*?</h3>(<div class="grid">.*?)'
                     r'(?=<h3|</section>)', page).group(1)
    tiles = grid.count("<figure")
    assert tiles == grid.count('class="thumb"') >= 5 and grid.count("clip_score_not_top · ") == tiles
    assert re.search(r"clip_score_not_top · (\d+×\d+ · )?clip_score -?\d", grid)


def test_refilter_errors_are_one_line(scored_run, tmp_path, cli_inprocess):
    for args, msg in [(("--where", "clip_scor >= 0.1"), "--where"),
                      (("--where", "clip_score >>= 0.1"), "--where"),
                      (("--where", "true"), "not empty")]:
        out2 = tmp_path / "bad"
        if msg == "not empty":
            out2.mkdir(exist_ok=True)
            (out2 / "x").write_text("x")
        proc = cli_inprocess("refilter", str(scored_run), *args, "--output", str(out2))
        assert proc.returncode == 2, proc
        assert msg in proc.stderr and proc.stderr.strip().count("\n") == 0
        assert not (out2 / "meta").exists()
    proc = cli_inprocess("refilter", str(scored_run), "--where", "true", "--output", str(scored_run))
    assert proc.returncode == 2
