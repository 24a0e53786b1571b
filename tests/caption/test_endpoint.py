"""The endpoint backend against a real loopback chat server (aiohttp): captions, the prompt sent, failures."""
from __future__ import annotations

import pytest

from curate.caption.recaption import Recaption
from curate.recipe import RecipeError, build_recipe
from tests.scoring_mllm.chat_server import ChatServer

from .conftest import image_table


class CaptionServer(ChatServer):
    """The mllm test server, answering with a caption that names the request's image size."""

    @staticmethod
    def _answer(body, p):
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"  a  caption {p:.3f} "}}]}


@pytest.fixture(scope="module")
def server():
    with CaptionServer() as s:
        yield s


def test_endpoint_captions_every_row_and_sends_the_prompt(server):
    server.reset()
    t = image_table(["a", "IMG_1.jpg", "c"])
    out = Recaption(backend="endpoint", url=server.url, model="served-vlm", prompt="Caption it.",
                    max_concurrency=2, retries=0).process(t)
    caps = out.column("recaption").to_pylist()
    assert all(c.startswith("a caption ") for c in caps) and len(set(caps)) == 3  # one answer per image
    assert set(out.column("recaption_model").to_pylist()) == {"endpoint:served-vlm"}
    assert server.texts == {"Caption it.": 3} and server.max_in_flight <= 2
    assert out.column("text").to_pylist() == ["a", "IMG_1.jpg", "c"]


def test_endpoint_sends_the_seed_in_every_request(server):
    """`seed` reaches the server as OpenAI's `seed` parameter, with the sampling settings it goes with, so a
    sampling endpoint that honours it gives the same captions on every run."""
    for seed in (7, 123):
        server.reset()
        Recaption(backend="endpoint", url=server.url, model="m", decoding="top_p", temperature=0.8, seed=seed,
                  max_tokens=20, retries=0).process(image_table(["a", "b"]))
        assert server.params == [{"model": "m", "max_tokens": 20, "temperature": 0.8, "seed": seed}] * 2


    def delays(seed):  # the retry jitter the same seed gives: the same delays in every run
        client = Recaption(backend="endpoint", url=server.url, model="m", seed=seed).make_captioner().load().client
        return [client._backoff(a, None) for a in range(4)]

    assert delays(7) == delays(7) != delays(123)


def test_endpoint_failure_is_a_flag_not_a_drop(server):
    server.reset()
    server.behave = lambda n, text: ("status", 500) if n == 2 else ("ok",)
    out = Recaption(backend="endpoint", url=server.url, model="m", retries=0, max_concurrency=1).process(
        image_table(["a", "b", "c"]))
    assert out.column("recaption_flag").to_pylist().count("endpoint_http_error") == 1
    assert out.column("recaption").to_pylist().count(None) == 1
    assert set(out.column("status").to_pylist()) == {"ok"}


def test_on_error_fail_fails_the_row_so_retry_failed_asks_again(server):
    # with the default (keep) a server that was down for the whole run left every row kept without a caption,
    # exit 0, and nothing --retry-failed would ask again
    server.reset()
    server.behave = lambda n, text: ("status", 500) if n == 2 else ("ok",)
    out = Recaption(backend="endpoint", url=server.url, model="m", retries=0, max_concurrency=1,
                    on_error="fail").process(image_table(["a", "b", "c"])).to_pylist()
    failed = [r for r in out if r["status"] == "failed"]
    assert len(failed) == 1 and (failed[0]["stage"], failed[0]["reason"]) == ("recaption", "recaption_http_error")
    assert failed[0]["error"].startswith("HTTP 500") and failed[0]["recaption_flag"] == "endpoint_http_error"
    assert [r["status"] for r in out].count("ok") == 2 and all(r["recaption"] for r in out if r["status"] == "ok")


def test_endpoint_without_url_is_a_recipe_error():
    with pytest.raises(RecipeError, match="endpoint backend needs `url`"):
        build_recipe({"name": "t", "input": {"path": "x"}, "output": {"path": "o"},
                      "stages": [{"download": {}}, {"recaption": {"backend": "endpoint", "model": "m"}}]})
