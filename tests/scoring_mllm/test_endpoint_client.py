"""curate.endpoint.ChatClient against a real loopback server: concurrency bound, retries, error codes, cache."""
from __future__ import annotations

import socket
import time

import pytest

from curate.endpoint import ChatClient, ChatRequest, ResponseCache, user_message

from .conftest import jpeg


def requests_for(n: int, prefix: str = "caption") -> list[ChatRequest]:
    return [ChatRequest([user_message(f"{prefix} {i}", [jpeg((i * 40 % 256, 80, 120))])], uid=f"u{i}",
                        params={"max_tokens": 4}) for i in range(n)]


def client(server, **kw) -> ChatClient:
    kw = {"max_concurrency": 4, "timeout_s": 5, "retries": 2, "backoff_s": 0.01, "seed": 0, **kw}
    return ChatClient(server.url, "tiny", **kw)


def test_concurrency_is_bounded_and_results_keep_request_order(chat_server):
    chat_server.delay_s = 0.05
    try:
        results = client(chat_server, max_concurrency=3).chat_many(requests_for(24))
    finally:
        chat_server.delay_s = 0.01
    assert chat_server.requests == 24
    assert chat_server.max_in_flight == 3  # the bound is reached and never exceeded
    assert [r.uid for r in results] == [f"u{i}" for i in range(24)]
    assert all(r.ok and r.attempts == 1 and r.text.isdigit() for r in results)


def test_images_arrive_as_the_bytes_sent(chat_server):
    imgs = [jpeg("red"), jpeg("blue", (30, 60))]
    client(chat_server, max_concurrency=1).chat_many(
        [ChatRequest([user_message("x", [b])], uid=str(i)) for i, b in enumerate(imgs)])
    assert chat_server.images == imgs


def test_server_errors_are_retried_until_they_pass(chat_server):
    chat_server.behave = lambda n, text: ("status", 503) if n <= 3 else ("ok",)
    results = client(chat_server, max_concurrency=1, retries=3).chat_many(requests_for(4))
    assert all(r.ok for r in results)
    assert results[0].attempts == 4 and all(r.attempts == 1 for r in results[1:])
    assert chat_server.requests == 7


def test_retry_after_is_honoured(chat_server):
    chat_server.behave = lambda n, text: ("status", 429, 0.3) if n == 1 else ("ok",)
    t0 = time.monotonic()
    r = client(chat_server, backoff_s=20, max_backoff_s=60).chat_many(requests_for(1))[0]
    elapsed = time.monotonic() - t0
    assert r.ok and r.attempts == 2
    assert 0.3 <= elapsed < 5  # waited what the server asked, not the 20 s backoff


@pytest.mark.parametrize("action,reason,tries", [
    (("status", 500), "http_error", 3),          # kept failing after 2 retries
    (("status", 429), "rate_limited", 3),
    (("status", 400), "http_error", 1),          # client errors are not retried
    (("malformed",), "bad_response", 1),
    (("no_choices",), "bad_response", 1),
])
def test_permanent_failures_come_back_as_reason_codes(chat_server, action, reason, tries):
    chat_server.behave = lambda n, text: action
    r = client(chat_server).chat_many(requests_for(1))[0]
    assert (r.ok, r.reason, r.attempts, chat_server.requests) == (False, reason, tries, tries)
    assert r.error and r.text is None


def test_slow_answers_time_out_and_are_retried(chat_server):
    chat_server.behave = lambda n, text: ("sleep", 2.0) if text.endswith(" 0") else ("ok",)
    results = client(chat_server, timeout_s=0.3, retries=1).chat_many(requests_for(3))
    assert (results[0].reason, results[0].attempts) == ("timeout", 2)
    assert all(r.ok for r in results[1:])


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = ChatClient(f"http://127.0.0.1:{port}/v1", "tiny", retries=1, backoff_s=0.01).chat([user_message("x", [jpeg("red")])])
    assert (r.reason, r.attempts) == ("connection_error", 2)


def test_cache_answers_a_rerun_without_asking_and_keeps_failures_out(chat_server, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    chat_server.behave = lambda n, text: ("status", 400) if text == "caption 2" else ("ok",)
    first = client(chat_server, cache=cache).chat_many(requests_for(5))
    assert chat_server.requests == 5 and len(cache) == 4 and not first[2].ok

    chat_server.reset()
    again = client(chat_server, cache=ResponseCache(tmp_path / "c.sqlite")).chat_many(requests_for(5))
    assert chat_server.requests == 1 and chat_server.texts == {"caption 2": 1}  # only the failure is asked again
    assert [r.text for r in again] == [r.text if r.ok else again[2].text for r in first]
    assert [r.cached for r in again] == [True, True, False, True, True]

    # another model or another prompt is another question
    chat_server.reset()
    client(chat_server, cache=cache).chat_many(requests_for(5, prefix="other"))
    assert chat_server.requests == 5


@pytest.mark.parametrize("stage", ["mllm_score", "recaption", "fuse_captions"])
def test_every_endpoint_stage_takes_every_client_setting(stage, monkeypatch):
    """The three stages that call a server share one owner of the client settings
    (curate.endpoint.settings.EndpointClient): recaption took no backoff_s/max_backoff_s, so its waits
    against a rate-limited server could not be tuned. Each setting must reach the ChatClient it builds."""
    from curate.caption.fuse import FuseCaptions
    from curate.caption.recaption import Recaption
    from curate.scorers.mllm import MllmScore

    monkeypatch.setenv("CURATE_TEST_KEY", "sk-test")
    settings = dict(api_key_env="CURATE_TEST_KEY", max_concurrency=5, timeout_s=7.5, retries=6, backoff_s=0.25,
                    max_backoff_s=4.0)
    url = "http://127.0.0.1:9/v1"  # never contacted: the client is only built
    if stage == "mllm_score":
        chat = MllmScore(backend="endpoint", model="m", base_url=url, **settings).client()
    elif stage == "fuse_captions":
        chat = FuseCaptions(model="m", base_url=url, **settings).client()
    else:
        chat = Recaption(backend="endpoint", model="m", base_url=url, **settings).make_captioner().load().client
    assert (chat.max_concurrency, chat.timeout_s, chat.retries, chat.backoff_s, chat.max_backoff_s) == \
        (5, 7.5, 6, 0.25, 4.0)
    assert chat.headers == {"Authorization": "Bearer sk-test"} and chat.url == url + "/chat/completions"
