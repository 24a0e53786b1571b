"""`mllm_score`: how well an image matches its caption (or how good it is), judged by a vision-language model.

Scores only; `mllm_threshold` decides. Two backends:
- `transformers`: a VLM loaded in the worker from a hub id or a local folder (AutoProcessor +
  AutoModelForImageTextToText; LLaVA, Qwen2-VL, SmolVLM, ... whose processor has a chat template);
- `endpoint`: an OpenAI-compatible server (vLLM, SGLang) via `curate.endpoint.ChatClient`, with bounded
  concurrency, retries and an answer cache in the run directory (`cache/mllm_score.sqlite`), so
  `--resume` and `--retry-failed` ask only the rows without an answer.
A row whose request fails for good is `failed` with reason `mllm_<code>` (`on_error: fail`, the
default, so `--retry-failed` can ask again) or stays `ok` with a null score (`on_error: keep`).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr, model_validator

from curate.endpoint.errors import prefixed
from curate.stage import Annotations, Stage, register

PROMPTS = {
    "yes_prob": 'Does this image match the caption "{caption}"? Answer yes or no.',
    "rating": 'Rate from 1 to 10 how well this image matches the caption "{caption}". Answer with a number only.',
}


@register
class MllmScore(Stage):
    """Adds `mllm_score` (0..1) and `mllm_model` to every active row."""

    name: ClassVar[str] = "mllm_score"
    reads: ClassVar[tuple[str, ...]] = ("image", "text")
    writes: ClassVar[dict[str, pa.DataType]] = {"mllm_score": pa.float32(), "mllm_model": pa.string()}
    reasons: ClassVar[dict[str, str]] = prefixed("mllm", {
        "mllm_unparseable": "the model's answer held no yes/no or no rating in range",
        "mllm_image_error": "the image bytes could not be decoded or encoded for the model",
    })
    # a long-lived worker either way: the model loads once, or one HTTP client + cache per worker, so
    # `concurrency` (workers) x `max_concurrency` (requests per worker) bounds what the server sees
    uses_model: ClassVar[bool] = True

    backend: Literal["transformers", "endpoint"] = "transformers"
    model: str = Field(..., min_length=1, description="hub id or local folder; for endpoint, the served model name")
    mode: Literal["yes_prob", "rating"] = "yes_prob"
    prompt: str | None = Field(None, description="'{caption}' is replaced by the row's text; default per mode")
    yes_tokens: tuple[str, ...] = ("yes", "Yes", " yes", " Yes")
    no_tokens: tuple[str, ...] = ("no", "No", " no", " No")
    rating_max: int = Field(10, ge=2)
    max_new_tokens: int = Field(8, ge=1)
    on_error: Literal["fail", "keep"] = "fail"
    # transformers backend
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # endpoint backend
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)
    top_logprobs: int = Field(20, ge=1, le=20)
    cache: bool = True
    cache_dir: str | None = Field(None, description="default: <output>/cache")

    _backend = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self):
        if self.backend == "endpoint" and not self.base_url:
            raise ValueError("backend endpoint needs base_url (e.g. http://127.0.0.1:8000/v1)")
        local = self.model.startswith(("/", "./", "../", "~"))
        if self.backend == "transformers" and local and not Path(self.model).expanduser().exists():
            raise ValueError(f"model folder {self.model} does not exist")
        return self

    def setup(self) -> None:
        if self._backend is not None:
            return
        from curate.scorers import _mllm_backends as b

        common = dict(mode=self.mode, yes_tokens=self.yes_tokens, no_tokens=self.no_tokens,
                      rating_max=self.rating_max, max_new_tokens=self.max_new_tokens)
        if self.backend == "transformers":
            self._backend = b.TransformersBackend(self.model, batch_size=self.batch_size, device=self.device,
                                                  precision=self.precision, **common)
        else:
            self._backend = b.EndpointBackend(self.client(), top_logprobs=self.top_logprobs, **common)

    def client(self):
        """The configured ChatClient (with the answer cache when `cache` and a cache_dir are set)."""
        from curate.endpoint.client import client_for

        return client_for(self)

    def annotate(self, active: pa.Table) -> Annotations:
        self.setup()
        template = self.prompt or PROMPTS[self.mode]
        prompts = [template.replace("{caption}", t or "") for t in active.column("text").to_pylist()]
        outcomes = self._backend.score(active.column("uid").to_pylist(), active.column("image").to_pylist(), prompts)
        ann = Annotations(columns={"mllm_score": [o.score for o in outcomes],
                                   "mllm_model": [self.model] * active.num_rows})
        if self.on_error == "fail":
            for i, o in enumerate(outcomes):
                if o.reason is not None:
                    ann.fail(i, f"mllm_{o.reason}", o.error)
        return ann
