"""`fuse_captions`: an LLM merges a row's original alt-text and its synthetic recaption into one caption.

Why (CapsFusion, Yu et al. 2024): alt-text holds real-world knowledge (names, places, products) but is
noisy; a captioning model's text gets the visual details right but knows no names. Asking a text-only
LLM to keep the facts of the first and the details of the second gives captions better than either,
and `output.caption_policy: fuse` puts them in the shards' `.txt`.

The LLM is any OpenAI-compatible chat server (vLLM, SGLang, a hosted API), reached through
curate.endpoint's ChatClient: bounded concurrency, retries, and an answer cache in the run directory
(`cache/fuse_captions.sqlite`, keyed by uid and the request), so a repeated or resumed run asks nothing
twice. Columns: `fused_caption` (null when there is none), `fused_caption_model`, `fused_caption_flag`
(`no_recaption` / `no_original`: nothing to merge; `empty` / `too_long` answer; `endpoint_<reason>`
when the request failed for good). A row never loses its captions here: it keeps `text` and
`recaption`, and the policy falls back to them. With `on_error: fail` a failed request marks the row
`failed/fuse_<reason>` instead, so `--retry-failed` asks again.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr, model_validator

from curate.endpoint.errors import prefixed
from curate.endpoint.settings import EndpointClient
from curate.stage import Annotations, Stage, register

# CapsFusion's instruction, reworded: keep A's real-world facts, B's visual details, one sentence.
DEFAULT_PROMPT = (
    "Merge two captions of the same image into one caption.\n"
    "Caption A is the original alt-text from the web: it may hold real-world knowledge (names of people, "
    "places, brands, products, titles, dates) and may also hold text that is not about the image.\n"
    "Caption B was written by an image captioning model: it describes what is visible (objects, colours, "
    "counts, layout) but knows no names.\n"
    "Write one fluent sentence of at most {max_words} words that keeps the real-world facts from A and the "
    "visual details from B. Drop what in A is not about the image and add nothing that is in neither. "
    "Answer with the sentence only.\n\n"
    "A: {original}\n"
    "B: {recaption}"
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


def clean_answer(text: str | None) -> str:
    """One line, no surrounding quotes (chat models like to quote the sentence they were asked for)."""
    text = " ".join((text or "").split())
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


@register
class FuseCaptions(EndpointClient, Stage):
    """Adds `fused_caption`, `fused_caption_model`, `fused_caption_flag` to every row in play."""

    name: ClassVar[str] = "fuse_captions"
    min_row_timeout_s: ClassVar[float] = 120.0  # the call bound's least per row: an endpoint answering slowly between retries
    reads: ClassVar[tuple[str, ...]] = ("text", "recaption")
    writes: ClassVar[dict[str, pa.DataType]] = {
        "fused_caption": pa.string(), "fused_caption_model": pa.string(), "fused_caption_flag": pa.string()}
    reasons: ClassVar[dict[str, str]] = prefixed("fuse")  # only with on_error: fail
    uses_model: ClassVar[bool] = True  # one HTTP client + cache per long-lived worker

    model: str = Field(..., min_length=1, description="the name the server serves")
    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1")
    prompt: str = Field(DEFAULT_PROMPT, description="{original}, {recaption} and {max_words} are filled in")
    max_words: int = Field(40, ge=3, le=500)  # a longer answer is flagged `too_long` and not used
    max_tokens: int = Field(120, ge=4, le=4096)  # answer token cap sent to the server
    temperature: float = Field(0.0, ge=0)  # sampling temperature sent to the server; 0: deterministic
    on_error: Literal["keep", "fail"] = "keep"  # failed request: keep (flag endpoint_<reason>) or fail the row
    # and the client settings of curate.endpoint.settings.EndpointClient
    cache: bool = True  # reuse answers stored in <cache_dir>/fuse_captions.sqlite
    cache_dir: str | None = Field(None, description="default: <output>/cache")

    _client = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s)://host:port/v1, not {self.base_url!r}")
        missing = [p for p in ("{original}", "{recaption}") if p not in self.prompt]
        if missing:
            raise ValueError(f"prompt must contain {' and '.join(missing)}")
        return self

    def setup(self) -> None:
        if self._client is None:
            self._client = self.client()

    def client(self):
        from curate.endpoint.client import client_for

        return client_for(self)

    def message(self, original: str, recaption: str) -> str:
        # str.replace, not format: captions may hold braces
        return (self.prompt.replace("{max_words}", str(self.max_words))
                .replace("{original}", original).replace("{recaption}", recaption))

    def annotate(self, active: pa.Table) -> Annotations:
        from curate.endpoint import ChatRequest

        n = active.num_rows
        uids = active.column("uid").to_pylist()
        fused: list[str | None] = [None] * n
        flags: list[str | None] = [None] * n
        models: list[str | None] = [None] * n
        ann = Annotations(columns={"fused_caption": fused, "fused_caption_model": models, "fused_caption_flag": flags})
        todo = []
        pairs = zip(active.column("text").to_pylist(), active.column("recaption").to_pylist())
        for i, (text, recap) in enumerate(pairs):
            original, recap = " ".join((text or "").split()), " ".join((recap or "").split())
            if not recap:
                flags[i] = "no_recaption"
            elif not original:
                flags[i] = "no_original"
            else:
                todo.append((i, original, recap))
        if not todo:
            return ann
        self.setup()
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        results = self._client.chat_many([
            ChatRequest([{"role": "user", "content": self.message(o, r)}], uids[i], params) for i, o, r in todo])
        for (i, _, _), res in zip(todo, results):
            models[i] = self.model
            if not res.ok:
                flags[i] = f"endpoint_{res.reason}"
                if self.on_error == "fail":
                    ann.fail(i, f"fuse_{res.reason}", res.error)
                continue
            answer = clean_answer(res.text)
            if not answer:
                flags[i] = "empty"
            elif len(answer.split()) > self.max_words:
                flags[i] = "too_long"
            else:
                fused[i] = answer
        return ann
