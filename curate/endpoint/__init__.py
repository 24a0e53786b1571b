"""Client for OpenAI-compatible chat-completions servers (vLLM, SGLang, TGI, OpenAI), shared by stages.

Why here: MLLM scoring (`mllm_score`) and recaptioning both send many image+text conversations to a
served model; they need the same bounded concurrency, retries, error codes and answer cache.

    from curate.endpoint import ChatClient, ChatRequest, ResponseCache, user_message

    client = ChatClient("http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-2B-Instruct",
                        max_concurrency=16, timeout_s=60, retries=3,
                        cache=ResponseCache("out/cache/recaption.sqlite"))
    r = client.chat([user_message("Describe the image.", [jpeg_bytes])], uid="abc", max_tokens=64)
    r.ok, r.text, r.reason, r.error, r.attempts, r.cached
    results = client.chat_many([ChatRequest([user_message(p, [img])], uid=u, params={"max_tokens": 8})
                                for u, p, img in rows])    # request order; never raises per request

- `chat_many` runs at most `max_concurrency` requests at once (per client, so per worker), each try
  limited to `timeout_s`; 408/409/425/429/5xx, timeouts and connection errors are retried `retries`
  times with exponential backoff and full jitter (`backoff_s * 2**attempt`, capped at `max_backoff_s`),
  or after the server's Retry-After. Other 4xx and malformed answers are not retried.
- A request that fails for good comes back with `reason` in `curate.endpoint.errors.REASONS`:
  `http_error`, `rate_limited`, `timeout`, `connection_error`, `bad_response`. Stages declare them with
  their own prefix: `errors.prefixed("mllm")` -> `mllm_timeout`, ...
- `user_message(text, images)` builds a user turn with images as base64 data URLs (`images.data_url`).
- `ResponseCache(path)`: answers keyed by (uid, model, digest of the request body, images by digest);
  only successes are stored, so a re-run or `--resume` asks only what it has no answer for.
  `ChatResult.logprobs` holds `choices[0].logprobs.content` when you pass `logprobs=True, top_logprobs=k`.
"""
from curate.endpoint.cache import ResponseCache
from curate.endpoint.client import ChatClient, ChatRequest, ChatResult, request_digest
from curate.endpoint.errors import REASONS, EndpointError, prefixed
from curate.endpoint.images import data_url, image_part, user_message

__all__ = ["ChatClient", "ChatRequest", "ChatResult", "ResponseCache", "REASONS", "EndpointError", "prefixed",
           "data_url", "image_part", "user_message", "request_digest"]
