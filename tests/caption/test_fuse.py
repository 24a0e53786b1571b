"""fuse_captions against a real loopback chat server (the mllm tests' aiohttp server), the `fuse` caption
policy read back with webdataset, and the whole thing through the real runner."""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import webdataset as wds

from curate import schema
from curate.caption.fuse import FuseCaptions, clean_answer
from curate.io.shard_writer import write_tar
from curate.recipe import RecipeError, build_recipe, load_recipe
from curate.runner import Runner
from tests.scoring_mllm.chat_server import ChatServer

from .conftest import image_table, jpg


def merge(original: str, recap: str) -> str:
    """What the server answers for a fusion request: deterministic, and it names both inputs."""
    return f"{recap} showing {original}"


class FuseServer(ChatServer):
    """Answers a text-only fusion prompt (A: ... / B: ...) with merge(A, B), quoted as chat models do;
    an image request (the recaption endpoint backend) with a caption. `SILENT` in A gets an empty
    answer, `VERBOSE` a 60-word one."""

    @staticmethod
    def _answer(body, p):
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # image + prompt: a recaption request
            text = f"a small picture number {round(p * 1000)}"
        else:
            a = re.search(r"^A: (.*)$", content, re.M).group(1)
            b = re.search(r"^B: (.*)$", content, re.M).group(1)
            text = "" if "SILENT" in a else " ".join(["word"] * 60) if "VERBOSE" in a else f'"{merge(a, b)}"'
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


@pytest.fixture(scope="module")
def server_module():
    with FuseServer() as s:
        yield s


@pytest.fixture
def server(server_module):
    server_module.reset()
    yield server_module
    server_module.reset()


def table(texts, recaps, status=None) -> pa.Table:
    t = image_table(texts).append_column("recaption", pa.array(recaps, pa.string()))
    if status:
        t = t.set_column(t.column_names.index("status"), "status", pa.array(status))
    return t


def stage(server, **kw) -> FuseCaptions:
    return FuseCaptions(model="tiny-llm", base_url=server.url, retries=0, max_concurrency=2, **kw)


def test_fuses_rows_with_both_captions_and_flags_the_rest(server):
    t = table(["Eiffel Tower, Paris 1889", "", "Golden  Gate", "  ", "Big Ben"],
              ["a tall iron tower at night", "a red bridge", None, None, "a clock tower"],
              status=["ok", "ok", "ok", "ok", "dropped"])
    out = stage(server, max_words=25).process(t).to_pydict()
    assert out["fused_caption"] == [merge("Eiffel Tower, Paris 1889", "a tall iron tower at night"), None, None,
                                    None, None]
    assert out["fused_caption_flag"] == [None, "no_original", "no_recaption", "no_recaption", None]
    assert out["fused_caption_model"] == ["tiny-llm", None, None, None, None]
    assert out["text"][0] == "Eiffel Tower, Paris 1889" and out["recaption"][0] == "a tall iron tower at night"
    assert out["status"] == ["ok", "ok", "ok", "ok", "dropped"]
    assert server.requests == 1 and not server.images  # text-only chat, only the row with both captions
    (prompt,) = server.texts
    assert "at most 25 words" in prompt and "real-world facts from A" in prompt


def test_second_run_asks_nothing_and_a_changed_recaption_is_asked_again(server, tmp_path):
    texts = [f"photo {i} of Mount Fuji" for i in range(6)]
    recaps = [f"a snowy mountain {i}" for i in range(6)]
    first = stage(server, cache_dir=str(tmp_path)).process(table(texts, recaps)).column("fused_caption").to_pylist()
    assert server.requests == 6 and first == [merge(a, b) for a, b in zip(texts, recaps)]
    assert sqlite3.connect(tmp_path / "fuse_captions.sqlite").execute("SELECT count(*) FROM answers").fetchone()[0] == 6
    server.reset()
    again = stage(server, cache_dir=str(tmp_path)).process(table(texts, recaps)).column("fused_caption").to_pylist()
    assert server.requests == 0 and again == first
    recaps[2] = "a volcano under snow"
    third = stage(server, cache_dir=str(tmp_path)).process(table(texts, recaps)).column("fused_caption").to_pylist()
    assert server.requests == 1 and third[2] == merge(texts[2], "a volcano under snow")


def test_failures_and_bad_answers_keep_the_row_with_a_flag(server, tmp_path):
    server.behave = lambda n, text: ("status", 500) if "Kyoto" in text else ("ok",)
    texts = ["Kinkaku-ji, Kyoto", "SILENT alt text", "VERBOSE alt text", "Louvre pyramid"]
    recaps = ["a golden temple", "a cat", "a dog", "a glass pyramid"]
    out = stage(server, cache_dir=str(tmp_path)).process(table(texts, recaps)).to_pydict()
    assert out["fused_caption_flag"] == ["endpoint_http_error", "empty", "too_long", None]
    assert out["fused_caption"] == [None, None, None, merge("Louvre pyramid", "a glass pyramid")]
    assert out["status"] == ["ok"] * 4 and out["text"] == texts and out["recaption"] == recaps
    # on_error: fail marks the failed request instead (so --retry-failed asks again); bad answers still stay
    server.reset()
    server.behave = lambda n, text: ("status", 500) if "Kyoto" in text else ("ok",)
    out = stage(server, on_error="fail", cache_dir=str(tmp_path)).process(table(texts, recaps)).to_pydict()
    assert out["status"] == ["failed", "ok", "ok", "ok"]
    assert (out["stage"][0], out["reason"][0]) == ("fuse_captions", "fuse_http_error") and "HTTP 500" in out["error"][0]
    assert "fuse_http_error" in schema.REASONS  # a declared reason code
    assert server.requests == 1  # only the failed row was asked again: the rest came from the cache


def test_clean_answer():
    assert clean_answer(' "a  red\nbus" ') == "a red bus"
    assert clean_answer("\u201cLondon bus\u201d") == "London bus"
    assert clean_answer(None) == ""


def _recipe(policy, stages):
    return {"name": "t", "input": {"path": "x"}, "output": {"path": "o", "caption_policy": policy}, "stages": stages}


def test_recipe_checks():
    rec = [{"download": {}}, {"recaption": {"backend": "endpoint", "url": "http://h/v1", "model": "m"}}]
    fuse = {"fuse_captions": {"model": "llm", "base_url": "http://h/v1"}}
    with pytest.raises(RecipeError, match="^output.caption_policy fuse needs a fuse_captions stage"):
        build_recipe(_recipe("fuse", rec))
    assert build_recipe(_recipe("fuse", [*rec, fuse])).output.caption_policy == "fuse"
    with pytest.raises(RecipeError, match="needs column 'recaption'.*add 'recaption' before it"):
        build_recipe(_recipe("both", [{"download": {}}, fuse]))
    with pytest.raises(RecipeError, match="prompt must contain \\{recaption\\}"):
        build_recipe(_recipe("fuse", [*rec, {"fuse_captions": {**fuse["fuse_captions"], "prompt": "{original}"}}]))
    with pytest.raises(RecipeError, match="base_url must be http"):
        build_recipe(_recipe("fuse", [*rec, {"fuse_captions": {"model": "llm", "base_url": "h:8000"}}]))


def test_policy_fuse_shard(tmp_path):
    rows = [{"key": "k0", "uid": "k0", "image": jpg((200, 0, 0)), "text": "Tower Bridge", "recaption": "a bridge",
             "fused_caption": "a bridge, Tower Bridge", "fused_caption_model": "llm", "fused_caption_flag": None},
            {"key": "k1", "uid": "k1", "image": jpg((0, 200, 0)), "text": "Big Ben", "recaption": "a clock",
             "fused_caption": None, "fused_caption_model": "llm", "fused_caption_flag": "endpoint_timeout"},
            {"key": "k2", "uid": "k2", "image": jpg((0, 0, 200)), "text": "", "recaption": "a blue square",
             "fused_caption": None, "fused_caption_model": None, "fused_caption_flag": "no_original"}]
    write_tar(tmp_path / "s.tar", rows, caption_policy="fuse")
    got = {s["__key__"]: s for s in wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False)}
    assert {k: s["txt"].decode() for k, s in got.items()} == {"k0": "a bridge, Tower Bridge", "k1": "Big Ben",
                                                               "k2": "a blue square"}
    meta = {k: json.loads(s["json"]) for k, s in got.items()}
    assert [meta[k]["caption_source"] for k in ("k0", "k1", "k2")] == ["fused", "original", "recaption"]
    assert meta["k0"]["text"] == "Tower Bridge" and meta["k0"]["recaption"] == "a bridge"  # all three kept
    assert meta["k1"]["fused_caption_flag"] == "endpoint_timeout"
    assert all("recap.txt" not in s for s in got.values())


# -- through the real runner ------------------------------------------------------------------------------
N = 24
RATES = {"http_404": 0.1, "corrupt_bytes": 0, "boilerplate_caption": 0, "slow_ok": 0, "timeout": 0, "flaky": 0}


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    from curate.demo.corpus import generate_corpus, write_url_list
    from curate.demo.server import DemoServer

    root = tmp_path_factory.mktemp("fuse_corpus")
    generate_corpus(root, N, seed=5, eval_n=1, seed_n=1, rates=RATES)
    with DemoServer(root) as demo:
        yield write_url_list(root, demo.url, root / "urls.parquet")


def unlucky(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 4 == 0


def test_runner_policy_fuse(urls, server, tmp_path, ray_address):
    server.behave = lambda n, text: ("status", 500) if text.startswith("Merge") and unlucky(text) else ("ok",)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""name: fuse-test
input: {{path: null, url_col: url, text_col: caption}}
output: {{path: null, samples_per_shard: 100, caption_policy: fuse}}
stages:
  - download: {{image_size: 32, resize_mode: center_crop, timeout_s: 5, retries: 0, threads: 8}}
  - recaption: {{backend: endpoint, url: '{server.url}', model: tiny-vlm, retries: 0, batch_size: 8}}
  - fuse_captions: {{model: tiny-llm, base_url: '{server.url}', retries: 0, concurrency: 1}}
""")
    out = tmp_path / "out"
    manifest = Runner(load_recipe(str(path), input_path=str(urls), output_path=str(out)), ray_address=ray_address).start()
    meta = pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()
    assert len(meta) == N == manifest["counts"]["rows"]
    kept = [r for r in meta if r["status"] == "ok"]
    lost = {(r["status"], r["stage"], r["reason"]) for r in meta if r not in kept}
    assert kept and lost <= {("failed", "download", "download_http_404")}, lost
    fused = [r for r in kept if r["fused_caption"]]
    refused = [r for r in kept if r["fused_caption_flag"] == "endpoint_http_error"]
    assert fused and refused and len(fused) + len(refused) == len(kept)
    assert all(r["fused_caption"] == merge(r["text"], r["recaption"]) for r in fused)
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / "shards" / "000000.tar"), shardshuffle=False)}
    assert len(samples) == len(kept)
    for r in kept:
        s = samples[r["key"]]
        info = json.loads(s["json"])
        assert s["txt"].decode() == (r["fused_caption"] or r["text"])
        assert info["caption_source"] == ("fused" if r["fused_caption"] else "original")
        assert (info["text"], info["recaption"], info["fused_caption"]) == (r["text"], r["recaption"], r["fused_caption"])
    assert (out / "cache" / "fuse_captions.sqlite").exists()
    from curate.validate import validate

    assert validate(out)[0] == []  # validate checks each .txt against caption_policy fuse, as the writer wrote it
