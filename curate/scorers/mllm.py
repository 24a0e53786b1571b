"""`mllm_score`: how well an image matches its caption (or how good it is), judged by a vision-language model.

Scores only; `mllm_threshold` decides. Two backends:
- `transformers`: a VLM loaded in the worker from a hub id or a local folder (AutoProcessor +
  AutoModelForImageTextToText; LLaVA, Qwen2-VL, SmolVLM, ... whose processor has a chat template);
- `endpoint`: an OpenAI-compatible server (vLLM, SGLang) via `curate.endpoint.ChatClient`, with bounded
  concurrency, retries and an answer cache in the run directory (`cache/mllm_score.sqlite`), so
  `--resume` and `--retry-failed` ask only the rows without an answer.
A row whose request fails for good is `failed` with reason `mllm_<code>` (`on_error: fail`, the
default, so `--retry-failed` can ask again) or stays `ok` with a null score (`on_error: keep`).

Which caption (`text_col`, for CapFilt): `text` (column `mllm_score`), `recaption` (the synthetic caption,
column `recaption_mllm_score`) or `both`. A row without a synthetic caption gets a null
`recaption_mllm_score` and no request. The answer cache keys on the prompt, so the two captions of a row
never share an answer.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr, model_validator

from curate.endpoint.errors import prefixed
from curate.endpoint.settings import EndpointClient
from curate.scorers.caption_columns import PerConfig, TextCol, captions, score_column
from curate.stage import Annotations, Stage, register

PROMPTS = {
    "yes_prob": 'Does this image match the caption "{caption}"? Answer yes or no.',
    "rating": 'Rate from 1 to {rating_max} how well this image matches the caption "{caption}". Answer with a number only.',
}


@register
class MllmScore(EndpointClient, Stage):
    """Adds `mllm_score` (0..1) and `mllm_model` to every active row."""

    name: ClassVar[str] = "mllm_score"
    min_row_timeout_s: ClassVar[float] = 120.0  # the call bound's least per row: a VLM on a CPU, or an endpoint answering slowly between retries
    reads: ClassVar[tuple[str, ...]] = ("image", "text")
    writes: ClassVar[dict[str, pa.DataType]] = PerConfig(  # type: ignore[assignment]
        {"mllm_score": pa.float32(), "recaption_mllm_score": pa.float32(), "mllm_model": pa.string()},
        lambda self: {**{score_column("mllm_score", c): pa.float32() for c in captions(self.text_col)},
                      "mllm_model": pa.string()})
    reasons: ClassVar[dict[str, str]] = prefixed("mllm", {
        "mllm_unparseable": "the model's answer held no yes/no or no rating in range",
        "mllm_image_error": "the image bytes could not be decoded or encoded for the model",
    })
    # a long-lived worker either way: the model loads once, or one HTTP client + cache per worker, so
    # `concurrency` (workers) x `max_concurrency` (requests per worker) bounds what the server sees
    uses_model: ClassVar[bool] = True

    backend: Literal["transformers", "endpoint"] = "transformers"  # VLM in each worker, or an OpenAI-compatible server
    model: str = Field(..., min_length=1, description="hub id or local folder; for endpoint, the served model name")
    mode: Literal["yes_prob", "rating"] = "yes_prob"  # yes_prob: P(yes) / (P(yes) + P(no)); rating: number / rating_max
    prompt: str | None = Field(None, description="'{caption}': the row's text, '{rating_max}': rating_max; default per mode")
    yes_tokens: tuple[str, ...] = ("yes", "Yes", " yes", " Yes")  # first answer tokens counted as yes
    no_tokens: tuple[str, ...] = ("no", "No", " no", " No")  # first answer tokens counted as no
    rating_max: int = Field(10, ge=2)  # rating mode: top of the scale (the default prompt asks 1 to rating_max)
    max_new_tokens: int = Field(8, ge=1)  # rating mode: tokens generated for the answer
    on_error: Literal["fail", "keep"] = "fail"  # fail: row fails mllm_<reason> (--retry-failed); keep: null score
    text_col: TextCol = "text"  # text -> mllm_score, recaption -> recaption_mllm_score, both -> both columns
    # transformers backend
    batch_size: int = Field(16, ge=1)  # image-prompt pairs per forward pass
    device: str = "auto"  # auto: cuda when visible, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # GPU weights (auto: bf16 or fp16); CPU fp32
    # endpoint backend
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    # and the client settings of curate.endpoint.settings.EndpointClient
    top_logprobs: int = Field(20, ge=1, le=20)  # endpoint yes_prob: first-token alternatives requested (max 20)
    cache: bool = True  # reuse answers stored in <cache_dir>/mllm_score.sqlite
    cache_dir: str | None = Field(None, description="default: <output>/cache")

    _backend = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self):
        if self.backend == "endpoint" and not self.base_url:
            raise ValueError("backend endpoint needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "transformers":  # a folder that will not load, a name that is no hub id: no request
            from curate.models.hub import model_name_problem

            why = model_name_problem(self.name, self.model)
            if why:
                raise ValueError(why.removeprefix(f"{self.name}: "))
        return self

    def weights_problem(self) -> str | None:
        """Why the transformers model cannot be had on this machine (one line naming the fixes), None when it
        can or the backend loads nothing: a run checks it before any work (curate/runner.py), instead of the
        first worker failing after the input was downloaded (curate.models.hub)."""
        if self.backend != "transformers":
            return None
        from curate.models.hub import transformers_model_problem

        return transformers_model_problem(self.name, self.model)

    def local_path_settings(self) -> tuple[str, ...]:
        """`cache_dir`, and `model` for the transformers backend (a folder); an endpoint's model is a served name."""
        return ("model", "cache_dir") if self.backend == "transformers" else ("cache_dir",)

    def needs(self) -> tuple[str, ...]:
        return ("image", "recaption") if self.text_col != "text" else self.reads

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

    def template(self) -> str:
        """The prompt with `{caption}` still to fill: the recipe's, or the mode's default, which asks for a
        rating on this stage's own scale (1 to rating_max), not a fixed 1 to 10."""
        return (self.prompt or PROMPTS[self.mode]).replace("{rating_max}", str(self.rating_max))

    def annotate(self, active: pa.Table) -> Annotations:
        """One request per (row, caption); the original's null text is asked as "", a missing synthetic
        caption is not asked. A row fails (on_error: fail) when any of its requests failed for good."""
        self.setup()
        template = self.template()
        n, which = active.num_rows, captions(self.text_col)
        uids, images = active.column("uid").to_pylist(), active.column("image").to_pylist()
        asks: list[tuple[int, int, str]] = []  # (caption index, row, prompt)
        for j, c in enumerate(which):
            for i, t in enumerate(active.column(c).to_pylist()):
                if c == "text" or t is not None:
                    asks.append((j, i, template.replace("{caption}", t or "")))
        outcomes = self._backend.score([uids[i] for _, i, _ in asks], [images[i] for _, i, _ in asks],
                                       [p for _, _, p in asks]) if asks else []
        scores: list[list] = [[None] * n for _ in which]
        ann = Annotations(columns={**{score_column("mllm_score", c): scores[j] for j, c in enumerate(which)},
                                   "mllm_model": [self.model] * n})
        for (j, i, _), o in zip(asks, outcomes):
            scores[j][i] = o.score
            if self.on_error == "fail" and o.reason is not None and i not in ann.failed:
                ann.fail(i, f"mllm_{o.reason}", o.error)
        return ann
