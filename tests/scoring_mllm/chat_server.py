"""A real loopback HTTP server speaking POST /v1/chat/completions, with fault injection, for the tests.

It runs aiohttp in a thread of the test process (its own event loop), answers like vLLM does (choices,
message.content, logprobs.content[0].top_logprobs) and records what it saw: requests, the most
requests in flight at once, the images it received. What it answers is decided per request by
`server.behave(n, text)` (n = 1-based request number, text = the prompt), returning one of
  ("ok",)  ("status", code)  ("status", code, retry_after)  ("sleep", seconds)  ("malformed",)  ("no_choices",)
Text-only requests (a string `content`, no image) are answered too, with image b"".
The score it answers comes from `server.scorer(image_bytes, text) -> p in (0, 1)`: by default a
deterministic hash, or a real model (the tests plug in the tiny VLM).
GET /v1/models (the endpoint preflight's request) lists `server.models` as vLLM does; with `models` None
(the default) it answers 404, as a proxy without /models does. With `server.api_key` set, a request without
`Authorization: Bearer <api_key>` gets 401 on either route.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import threading
from collections import Counter


def hash_score(image: bytes, text: str) -> float:
    h = int.from_bytes(hashlib.sha256(image + text.encode()).digest()[:4], "big")
    return 0.05 + 0.9 * (h % 1000) / 999


class ChatServer:
    def __init__(self, delay_s: float = 0.01):
        self.delay_s = delay_s
        self.behave = lambda n, text: ("ok",)
        self.scorer = hash_score
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.texts: Counter = Counter()
        self.images: list[bytes] = []
        self.params: list[dict] = []  # each request's body without its messages (sampling settings, seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.models: list[str] | None = None  # GET /v1/models lists these; None: 404
        self.api_key: str | None = None  # required as a Bearer token when set
        self.model_listings = 0  # GET /v1/models requests seen

    def reset(self) -> None:
        with self.lock:
            self.requests = self.in_flight = self.max_in_flight = 0
            self.texts.clear()
            self.images.clear()
            self.params.clear()
            self.model_listings = 0
        self.behave = lambda n, text: ("ok",)
        self.models = self.api_key = None

    def _refused(self, request) -> bool:
        return self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}"

    async def _models(self, request):
        from aiohttp import web

        with self.lock:
            self.model_listings += 1
        if self._refused(request):
            return web.json_response({"error": {"message": "Invalid API key"}}, status=401)
        if self.models is None:
            return web.Response(status=404, text="404: Not Found")
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "vllm", "root": m} for m in self.models]})

    # -- the handler --------------------------------------------------------------------------------------
    async def _chat(self, request):
        from aiohttp import web

        if self._refused(request):
            return web.json_response({"error": {"message": "Invalid API key"}}, status=401)
        body = await request.json()
        content = body["messages"][-1]["content"]  # a list of parts, or a plain string (text-only chat)
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = next(p["text"] for p in parts if p["type"] == "text")
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        image = base64.b64decode(urls[0].split(",", 1)[1]) if urls else b""
        with self.lock:
            self.requests += 1
            n = self.requests
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.texts[text] += 1
            self.params.append({k: v for k, v in body.items() if k != "messages"})
            if urls:
                self.images.append(image)
        try:
            await asyncio.sleep(self.delay_s)
            action = self.behave(n, text)
            kind = action[0]
            if kind == "status":
                headers = {"Retry-After": str(action[2])} if len(action) > 2 else {}
                return web.Response(status=action[1], text='{"error": "injected"}', headers=headers)
            if kind == "sleep":
                await asyncio.sleep(action[1])
            if kind == "malformed":
                return web.Response(text='{"choices": [', content_type="application/json")
            if kind == "no_choices":
                return web.json_response({"object": "error"})
            p = await asyncio.get_running_loop().run_in_executor(None, self.scorer, image, text)
            return web.json_response(self._answer(body, p))
        finally:
            with self.lock:
                self.in_flight -= 1

    @staticmethod
    def _answer(body: dict, p: float) -> dict:
        choice = {"index": 0, "finish_reason": "stop"}
        if body.get("logprobs"):
            top = [{"token": "yes", "logprob": math.log(p)}, {"token": "No", "logprob": math.log(1 - p)},
                   {"token": "maybe", "logprob": -9.0}]
            choice["message"] = {"role": "assistant", "content": "yes" if p >= 0.5 else "No"}
            choice["logprobs"] = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                               "top_logprobs": top[:body.get("top_logprobs", 3)]}]}
        else:
            choice["message"] = {"role": "assistant", "content": f"{1 + round(p * 9)}"}
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice]}

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> "ChatServer":
        from aiohttp import web

        ready = threading.Event()

        def serve():
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            runner = web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/v1"
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
