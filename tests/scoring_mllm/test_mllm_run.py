"""mllm_score through the real runner (local Ray, actor pool): download from the demo server, score over
HTTP or with the tiny VLM in process, threshold, shard; every row accounted for, the cache reused."""
from __future__ import annotations

import hashlib
import sqlite3

import pyarrow.dataset as pads
import pytest

from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.server import DemoServer
from curate.recipe import load_recipe
from curate.runner import Runner, RunError

N = 48
# deterministic noise only (no flaky or timing-dependent kinds), so two runs download the same rows
RATES = {"http_404": 0.06, "corrupt_bytes": 0.04, "boilerplate_caption": 0.06, "slow_ok": 0, "timeout": 0,
         "flaky": 0}


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    root = tmp_path_factory.mktemp("mllm_corpus")
    generate_corpus(root, N, seed=3, eval_n=1, seed_n=1, rates=RATES)
    with DemoServer(root) as server:
        yield write_url_list(root, server.url, tmp_path_factory.mktemp("mllm_urls") / "urls.parquet")


def recipe(tmp_path, mllm: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""name: mllm-test
input: {{path: null, url_col: url, text_col: caption}}
output: {{path: null, samples_per_shard: 16}}
stages:
  - download: {{image_size: 32, resize_mode: center_crop, timeout_s: 5, retries: 0, threads: 8}}
  - caption_text: {{min_words: 2}}
  - mllm_score: {mllm}
  - mllm_threshold: {{min_score: 0.5}}
""")
    return str(path)


def run(urls, out, recipe_path, ray_address):
    rec = load_recipe(recipe_path, input_path=str(urls), output_path=str(out))
    return Runner(rec, ray_address=ray_address).start()


def rows(out):
    return pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()


def unlucky(text: str) -> bool:
    """Prompts the server refuses for good (HTTP 500 on every try): about one in five."""
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5 == 0


def test_endpoint_run_accounts_for_every_row_and_reruns_ask_nothing_twice(urls, chat_server, tmp_path, ray_address):
    chat_server.behave = lambda n, text: ("status", 500) if unlucky(text) else ("ok",)
    chat_server.models = ["other", "tiny"]  # the preflight finds the model among those it serves
    settings = (f"{{backend: endpoint, model: tiny, base_url: '{chat_server.url}', max_concurrency: 3, "
                f"retries: 1, backoff_s: 0.01, concurrency: 1}}")
    out = tmp_path / "out"
    manifest = run(urls, out, recipe(tmp_path, settings), ray_address)

    meta = rows(out)
    assert len(meta) == N == manifest["counts"]["rows"] and len({r["uid"] for r in meta}) == N
    asked = [r for r in meta if r["mllm_model"] == "tiny"]
    failed = [r for r in asked if r["status"] == "failed"]
    scored = [r for r in asked if r["mllm_score"] is not None]
    assert failed and scored and len(failed) + len(scored) == len(asked)
    assert all((r["stage"], r["reason"]) == ("mllm_score", "mllm_http_error") and "HTTP 500" in r["error"]
               for r in failed)
    # rows that never reached the stage were not asked; every asked row was asked once (twice if refused)
    assert all(r["status"] != "ok" and r["stage"] in ("download", "caption_text") for r in meta
               if r["mllm_model"] is None)
    assert chat_server.requests == len(scored) + 2 * len(failed)
    assert chat_server.model_listings == 1  # one preflight request, from the driver
    assert 1 <= chat_server.max_in_flight <= 3  # one worker, max_concurrency 3
    for r in scored:
        if r["mllm_score"] < 0.5:
            assert (r["status"], r["stage"], r["reason"]) == ("dropped", "mllm_threshold", "mllm_score_below_threshold")
        else:
            assert r["status"] == "ok" and r["shard"]
    # the answer cache lives in the run directory and holds exactly the successful answers
    db = out / "cache" / "mllm_score.sqlite"
    assert sqlite3.connect(db).execute("SELECT count(*) FROM answers").fetchone()[0] == len(scored)

    # a second run sharing that cache, with the server healthy again, asks only what failed before
    chat_server.reset()
    settings2 = settings.replace("concurrency: 1}", f"concurrency: 1, cache_dir: '{out / 'cache'}'}}")
    out2 = tmp_path / "out2"
    run(urls, out2, recipe(tmp_path, settings2), ray_address)
    assert chat_server.requests == len(failed)
    assert all(unlucky(t) for t in chat_server.texts)
    again = {r["uid"]: r for r in rows(out2)}
    for r in scored:  # cached answers give the same scores
        assert again[r["uid"]]["mllm_score"] == r["mllm_score"]
    assert all(again[r["uid"]]["mllm_score"] is not None for r in failed)


def test_transformers_backend_runs_in_an_actor_pool(urls, tiny_vlm, tmp_path, ray_address):
    out = tmp_path / "out"
    manifest = run(urls, out, recipe(tmp_path, f"{{model: '{tiny_vlm}', device: cpu, batch_size: 8}}"), ray_address)
    meta = rows(out)
    assert len(meta) == N == manifest["counts"]["rows"]
    asked = [r for r in meta if r["mllm_model"] == tiny_vlm]
    assert asked and all(0 < r["mllm_score"] < 1 for r in asked)
    assert all(r["status"] == ("ok" if r["mllm_score"] >= 0.5 else "dropped") for r in asked)
    assert not (out / "cache").exists()  # nothing to cache in process


def test_a_model_that_cannot_load_stops_the_run_with_one_line(urls, tmp_path, ray_address):
    """A hub id that is not cached (HF_HUB_OFFLINE, set for tests) is refused by the run's preflight, before
    the output folder exists; it failed the first worker to load it, after the input was split."""
    with pytest.raises(RunError, match="^mllm_score: transformers model no-such-org/no-such-model: the local Hugging "
                                       "Face cache .*huggingface-cli download no-such-org/no-such-model") as info:
        run(urls, tmp_path / "out", recipe(tmp_path, "{model: no-such-org/no-such-model, device: cpu}"), ray_address)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_retry_failed_reads_parquet_images_again_from_the_input(chat_server, tmp_path, ray_address):
    # rows that carry their images (Parquet bytes) failed at the endpoint: the metadata keeps no image bytes,
    # so the retry must read them from the input again (it used to fail every retried row as
    # load_image/input_missing_image), and a kept sample's bytes are exactly the input's
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images, captions = [], [f"a painted box number {i}" for i in range(24)]
    for i in range(24):
        buf = io.BytesIO()
        Image.new("RGB", (40 + i, 36), (9 * i, 80, 200 - 5 * i)).save(buf, "JPEG")
        images.append(buf.getvalue())
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"image": images, "caption": captions}), src)
    (tmp_path / "recipe.yaml").write_text(f"""name: t
input: {{format: parquet, text_col: caption}}
output: {{samples_per_shard: 8}}
stages:
  - load_image: {{}}
  - mllm_score: {{backend: endpoint, model: tiny, base_url: '{chat_server.url}', retries: 0, cache: false}}
""")
    out = tmp_path / "out"
    chat_server.behave = lambda n, text: ("status", 500) if unlucky(text) else ("ok",)
    Runner(load_recipe(str(tmp_path / "recipe.yaml"), input_path=str(src), output_path=str(out)),
           ray_address=ray_address).start()
    failed = {r["uid"] for r in rows(out) if r["status"] == "failed"}
    assert failed and all(r["reason"] == "mllm_http_error" for r in rows(out) if r["uid"] in failed)

    chat_server.reset()  # healthy again
    retry = Runner(load_recipe(str(out / "recipe.yaml"), output_path=str(out)), ray_address=ray_address)
    manifest = retry.retry_failed()
    after = {r["uid"]: r for r in rows(out)}
    assert len(after) == 24 == manifest["counts"]["rows"] and manifest["counts"]["kept"] == 24
    assert all(after[u]["status"] == "ok" and after[u]["mllm_score"] is not None for u in failed)
    assert not (out / "_work").exists()
    kept = {}
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as tf:
            kept.update({m.name.split(".")[0]: tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")})
    by_text = dict(zip(captions, images))
    assert len(kept) == 24 and all(kept[u] == by_text[r["text"]] for u, r in after.items())


def test_retry_failed_refuses_when_the_images_input_changed(chat_server, tmp_path, ray_address):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.scoring_mllm.conftest import jpeg

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"image": [jpeg((i * 20, 0, 0)) for i in range(6)],
                             "caption": [f"red box {i}" for i in range(6)]}), src)
    (tmp_path / "recipe.yaml").write_text(f"""name: t
input: {{format: parquet, text_col: caption}}
stages:
  - load_image: {{}}
  - mllm_score: {{backend: endpoint, model: tiny, base_url: '{chat_server.url}', retries: 0, cache: false}}
""")
    out = tmp_path / "out"
    chat_server.behave = lambda n, text: ("status", 500)
    Runner(load_recipe(str(tmp_path / "recipe.yaml"), input_path=str(src), output_path=str(out)),
           ray_address=ray_address).start()
    before = (out / "manifest.json").read_bytes()
    pq.write_table(pa.table({"image": [jpeg((0, 0, 0))], "caption": ["other"]}), src)
    with pytest.raises(RunError, match="--retry-failed: the failed rows' images came with the input .* gone or "
                                       "changed since the run"):
        Runner(load_recipe(str(out / "recipe.yaml"), output_path=str(out)), ray_address=ray_address).retry_failed()
    assert (out / "manifest.json").read_bytes() == before and not (out / "_work").exists()
