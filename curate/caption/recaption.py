"""`recaption`: add a synthetic caption per image beside the original text, never over it.

Why beside: synthetic-only captions lose the world knowledge in alt-text (CapsFusion, VeCLIP), so the
original `text` stays untouched and the choice of what a training set sees is made later, at shard
time (output.caption_policy) or in training (`curate train --recaption-prob`).

Columns: `recaption` (the caption, null when there is none), `recaption_model` (which model wrote it),
`recaption_flag` (why a selected row has no caption or a doubtful one: `empty` generation, `truncated`
at max_tokens, `not_selected` by `rows`). An image that will not decode is a per-row failure
(`recaption_image_error`); the rest of the batch goes on.

Video clips (`source: keyframes`, after clip_split): a clip is captioned from its keyframes, not an
`image` column: by default its middle keyframe (one generation per clip); `keyframes: all` captions every
keyframe and keeps the one that agrees most with the others (`choose`), which is robust to one odd
frame (a fade, a cut clip_split missed) at N times the cost. The columns, the flags (plus
`no_keyframes`) and output.caption_policy are the same as for images.

Which rows: `rows: all` captions every row in play; `rows: boilerplate` only those whose original
text is empty or boilerplate alt-text (caption_text's patterns), which is how the demo recipe keeps
those images with a synthetic caption instead of dropping them: run `recaption` before
`caption_text` and give caption_text `use_recaption: true` so it checks the effective caption.
"""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field, PrivateAttr, model_validator

from curate.endpoint.errors import prefixed
from curate.endpoint.settings import EndpointClient
from curate.stage import Annotations, Stage, error_line, register


def choose(captions: list) -> Any:
    """One caption from several of the same clip (one per keyframe): the one whose words agree most with
    the others' (a medoid by word-set Jaccard), ties to the middle keyframe; generations without text
    lose to any with text. A single caption is itself."""
    if len(captions) == 1:
        return captions[0]
    words = [set((c.text or "").lower().split()) for c in captions]
    mid = (len(captions) - 1) / 2

    def score(k: int):
        agree = sum(len(words[k] & w) / max(1, len(words[k] | w)) for j, w in enumerate(words) if j != k)
        return (bool(captions[k].text) and not captions[k].flag, agree, -abs(k - mid))

    return captions[max(range(len(captions)), key=score)]


@register
class Recaption(EndpointClient, Stage):
    """Synthetic captions from open_clip CoCa or a transformers VLM, batched, one model load per worker."""

    name: ClassVar[str] = "recaption"
    min_row_timeout_s: ClassVar[float] = 120.0  # the call bound's least per row: a captioning model on a CPU, or an endpoint answering slowly between retries
    reads: ClassVar[tuple[str, ...]] = ("image", "text")
    writes: ClassVar[dict[str, pa.DataType]] = {
        "recaption": pa.string(), "recaption_model": pa.string(), "recaption_flag": pa.string()}
    reasons: ClassVar[dict[str, str]] = prefixed("recaption", {  # recaption_<endpoint reason>: on_error: fail
        "recaption_image_error": "recaption could not decode the image bytes",
    })
    uses_model: ClassVar[bool] = True

    backend: Literal["coca", "transformers", "endpoint"] = "coca"  # open_clip CoCa, a transformers VLM or a chat server
    model: str | None = None  # open_clip name (coca) or hub id / local folder (transformers)
    pretrained: str | None = None  # coca: open_clip pretrained tag
    checkpoint: str | None = None  # coca: local checkpoint (e.g. from `curate train --loss coca`)
    prompt: str = ""  # transformers: text prompt ("a picture of", "<MORE_DETAILED_CAPTION>", a question)
    chat: Literal["auto", "always", "never"] = "auto"  # transformers: wrap the prompt in the chat template
    decoding: Literal["beam", "top_p", "greedy"] = "beam"  # beam search, top_p sampling or greedy (not coca)
    num_beams: int = Field(3, ge=1, le=16)  # beams for decoding: beam (1 = greedy)
    top_p: float = Field(0.9, gt=0, le=1)  # nucleus mass for decoding: top_p (coca, transformers)
    temperature: float = Field(1.0, gt=0)  # sampling temperature for top_p (endpoint: 0 otherwise)
    max_tokens: int = Field(30, ge=2, le=1024)  # generation cap; a caption cut here is flagged truncated
    min_tokens: int = Field(3, ge=0)  # shortest generation in tokens (coca, transformers)
    batch_size: int = Field(32, ge=1)  # images per generate call; lower it when GPU memory runs out
    rows: Literal["all", "boilerplate"] = "all"  # all rows, or only those whose text is empty or boilerplate
    on_truncated: Literal["keep", "drop"] = "drop"  # keep the cut-off text, or leave recaption null
    device: str = "auto"  # auto: cuda when visible, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # GPU dtype (auto: bf16 or fp16); CPU always fp32
    seed: int = 0  # top_p sampling seed: torch (coca, transformers); endpoint: the request's `seed`, and retry delays
    trust_remote_code: bool = False  # transformers: run code shipped with the model repo
    # endpoint backend: an OpenAI-compatible server (`model` is the served name)
    # `base_url`, as in mllm_score and fuse_captions; `url` (the earlier name) is still accepted
    base_url: str | None = Field(  # endpoint: the server, e.g. http://127.0.0.1:8000/v1
        None, validation_alias=AliasChoices("base_url", "url"))
    # and the client settings of curate.endpoint.settings.EndpointClient (api_key_env, timeouts, retries)
    # video clips (after clip_split): caption from the clip's keyframes instead of an `image` column
    source: Literal["image", "keyframes"] = "image"  # image column, or a clip's keyframes (after clip_split)
    keyframes: Literal["middle", "all"] = "middle"  # the middle keyframe, or caption each and keep the consensus
    check_model: bool = True  # resolve the model at recipe time (False: only when a worker starts)
    on_error: Literal["keep", "fail"] = "keep"  # endpoint: a request that failed for good: keep the row (flag endpoint_<reason>) or fail it (recaption_<reason>, for --retry-failed)
    _captioner: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _model_exists(self):
        if self.backend == "coca" and self.decoding == "greedy":
            raise ValueError("coca decoding is beam or top_p")
        if self.check_model:
            self.captioner_check()
        return self

    def captioner_check(self) -> None:
        """Fail before any work starts on a model that cannot be found (one-line ModelLoadError)."""
        from curate.caption.backends import CocaCaptioner, EndpointCaptioner, TransformersCaptioner
        from curate.models.clip import ModelLoadError

        try:
            if self.backend == "endpoint":
                EndpointCaptioner.check(self.base_url, self.model)
            elif self.backend == "coca":
                CocaCaptioner.check(self.model, self.pretrained, self.checkpoint)
            else:
                TransformersCaptioner.check(self.model or "", self.trust_remote_code)
        except ModelLoadError as err:
            raise ValueError(str(err)) from None

    def weights_problem(self) -> str | None:
        """Why the model's weights cannot be had on this machine (one line naming the fixes), None when they
        can or the backend fetches nothing: a CoCa hub tag, or a transformers hub id or folder
        (curate.models.hub); checked by a run before any work, as for the CLIP stages
        (curate.models.clip_settings), instead of in the first worker after the input was downloaded."""
        if self.backend == "transformers":
            from curate.models.hub import transformers_model_problem

            return transformers_model_problem(self.name, self.model or "", trust_remote_code=self.trust_remote_code)
        if self.backend != "coca" or self.checkpoint or not self.pretrained or not self.model:
            return None
        from curate.models.clip import hub_weights_problem

        why = hub_weights_problem(self.model, self.pretrained)
        if why is None:
            return None
        return (f"{self.name}: {why}; fetch them once where the network is reachable, set {self.name}.pretrained "
                f"to a weights file, or {self.name}.checkpoint to a CoCa checkpoint (curate train --loss coca)")

    def local_path_settings(self) -> tuple[str, ...]:
        """transformers: `model` may be a folder; coca: `pretrained` a weights file and `checkpoint` a file
        (`model` is an open_clip name); endpoint: nothing (`model` is the name the server serves)."""
        return {"transformers": ("model",), "coca": ("pretrained", "checkpoint")}.get(self.backend, ())

    def make_captioner(self):
        from curate.caption.backends import CocaCaptioner, EndpointCaptioner, TransformersCaptioner

        if self.backend == "endpoint":
            return EndpointCaptioner(self.base_url or "", self.model or "", prompt=self.prompt or EndpointCaptioner(
                "", "").prompt, max_tokens=self.max_tokens, temperature=self.temperature if self.decoding == "top_p"
                else 0.0, seed=self.seed, client=self.client_settings())
        common = dict(decoding=self.decoding, num_beams=self.num_beams, top_p=self.top_p,
                      temperature=self.temperature, max_tokens=self.max_tokens, min_tokens=self.min_tokens,
                      device=self.device, precision=self.precision, seed=self.seed)
        if self.backend == "coca":
            return CocaCaptioner(self.model, pretrained=self.pretrained, checkpoint=self.checkpoint, **common)
        return TransformersCaptioner(self.model or "", prompt=self.prompt, chat=self.chat,
                                     trust_remote_code=self.trust_remote_code, **common)

    def setup(self) -> None:
        if self._captioner is None:
            if self.backend == "coca":  # this worker's cache (the transformers captioner asks in its load)
                from curate.models.clip import ModelLoadError

                why = self.weights_problem()
                if why:
                    raise ModelLoadError(why)
            self._captioner = self.make_captioner().load()

    def needs(self) -> tuple[str, ...]:
        return ("keyframes", "text") if self.source == "keyframes" else self.reads

    def selected(self, texts: list[str | None]) -> list[bool]:
        if self.rows == "all":
            return [True] * len(texts)
        from curate.filters.caption_text import is_boilerplate, normalise

        return [not n or is_boilerplate(n) for n in (normalise(t or "") for t in texts)]

    def annotate(self, active: pa.Table) -> Annotations:
        self.setup()
        cap = self._captioner
        n = active.num_rows
        recap: list[str | None] = [None] * n
        flags: list[str | None] = [None] * n
        models: list[str | None] = [None] * n
        ann = Annotations(columns={"recaption": recap, "recaption_model": models, "recaption_flag": flags})
        want = self.selected(active.column("text").to_pylist())
        for i in range(n):
            if not want[i]:
                flags[i] = "not_selected"
        per_row: dict[int, list] = {}
        for batch, output in self._generated(active, want, ann):
            for i, c in zip(batch, output):
                per_row.setdefault(i, []).append(c)
        for i in range(n):
            if not want[i] or i in ann.failed:
                continue
            if i not in per_row:
                flags[i] = "no_keyframes"
                continue
            c = choose(per_row[i])
            models[i] = cap.name
            if c.flag:
                flags[i] = c.flag
                if self.on_error == "fail" and c.flag.startswith("endpoint_"):  # a server that was down:
                    ann.fail(i, "recaption_" + c.flag[len("endpoint_"):], c.error)  # ask again on --retry-failed
            elif not c.text:
                flags[i] = "empty"
            elif c.truncated:
                flags[i] = "truncated"
                recap[i] = c.text if self.on_truncated == "keep" else None
            else:
                recap[i] = c.text
        return ann

    def _generated(self, active: pa.Table, want: list[bool], ann: Annotations):
        """(rows, captions) per batch of `batch_size` images, in row order.

        Why a thread: decoding and preprocessing the next batch (PIL decode and resize, the processor) run
        while the model generates this one, instead of before it on the same thread; and only about two
        batches of decoded images exist at once, not a whole part's (a part of large images decoded up
        front could take gigabytes). The batches are the ones a row-by-row pass gives: a row's images
        (its keyframes) are decoded together and a row that fails is left out whole
        (`recaption_image_error`). One lock keeps `preprocess` and `decode` apart, since a backend may
        use one tokenizer in both (a fast tokenizer must not be used from two threads at once).
        """
        cap, lock = self._captioner, threading.Lock()
        items = self._decoded(active, want, ann)

        def prepare():
            batch = list(itertools.islice(items, self.batch_size))
            if not batch:
                return None
            with lock:
                return [i for i, _ in batch], cap.preprocess([im for _, im in batch])

        with ThreadPoolExecutor(1, thread_name_prefix="recaption-prepare") as pool:
            ahead = pool.submit(prepare)
            while (ready := ahead.result()) is not None:
                ahead = pool.submit(prepare)
                rows, inputs = ready
                output = cap.generate(inputs)
                with lock:
                    captions = cap.decode(inputs, output)
                yield rows, captions

    def _decoded(self, active: pa.Table, want: list[bool], ann: Annotations):
        """(row, decoded image) for each wanted row's image(s), a row at a time; undecodable rows fail."""
        for i in range(active.num_rows):
            if not want[i]:
                continue
            try:
                frames = self._images(active, i)
            except Exception as err:  # noqa: BLE001 - PIL raises many types on bad bytes: a per-row reason
                ann.fail(i, "recaption_image_error", error_line(err))
                continue
            yield from ((i, im) for im in frames)

    def _images(self, table: pa.Table, i: int) -> list:
        """The PIL image(s) row i is captioned from: its image, or its clip's middle keyframe (or all of them)."""
        from curate import images

        if self.source == "image":
            blobs = [table.column("image")[i].as_py()]
        else:
            frames = table.column("keyframes")[i].as_py() or []
            blobs = frames if self.keyframes == "all" else frames[len(frames) // 2:len(frames) // 2 + 1]
        return [images.decode_rgb(data or b"") for data in blobs]
