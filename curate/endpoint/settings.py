"""The client settings shared by stages that call an OpenAI-compatible server (`mllm_score` and
`recaption` with `backend: endpoint`, `fuse_captions`): the API key's variable, requests in flight,
timeouts and retries with backoff.

One owner for them, so a stage cannot take a subset (recaption had no `backoff_s`/`max_backoff_s`, so
its waits against a rate-limited server could not be tuned) or pass them to ChatClient in its own way.
Where the server is (`base_url`) stays with each stage: whether it is required differs.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, Field


class EndpointClient(BaseModel):
    """Mixin for a Stage: `class MyStage(EndpointClient, Stage)`; `client_settings()` for ChatClient."""

    settings_last: ClassVar[bool] = True  # docs/stages.md lists these after the stage's own settings

    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    max_concurrency: int = Field(8, ge=1)  # requests in flight per worker
    timeout_s: float = Field(60.0, gt=0)  # seconds to wait for one answer
    retries: int = Field(3, ge=0)  # extra tries on timeouts, connection errors, 408/429/5xx
    backoff_s: float = Field(0.5, ge=0)  # base of the jittered exponential wait between tries (s)
    max_backoff_s: float = Field(30.0, ge=0)  # cap on one wait between tries, Retry-After included (s)
    check_endpoint: bool = True  # before the run: GET base_url/models must answer and list `model` (false: a server that starts on demand)

    def client_settings(self) -> dict[str, Any]:
        """ChatClient's keyword arguments for these settings; the key is read from the environment of the
        process that calls (the worker's), so it never sits in the recipe or the run directory."""
        return dict(api_key=os.environ.get(self.api_key_env) if self.api_key_env else None,
                    max_concurrency=self.max_concurrency, timeout_s=self.timeout_s, retries=self.retries,
                    backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)

    def endpoint_problem(self) -> str | None:
        """Why the server cannot be used (down, key refused, model not served: one line), None when it can, the
        stage does not call a server (another `backend`) or `check_endpoint` is off: a run asks this before
        any work (curate/runner.py), instead of sending and retrying every row (curate.endpoint.preflight)."""
        if not self.check_endpoint or getattr(self, "backend", "endpoint") != "endpoint":
            return None
        from curate.endpoint.preflight import CHECK_TIMEOUT_S, endpoint_problem

        return endpoint_problem(self.name, self.base_url or "", self.model or "",
                                api_key=self.client_settings()["api_key"], api_key_env=self.api_key_env,
                                timeout_s=min(self.timeout_s, CHECK_TIMEOUT_S))
