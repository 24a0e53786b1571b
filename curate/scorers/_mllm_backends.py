"""The two ways `mllm_score` asks a vision-language model: in process (transformers) or over HTTP.

Both take (uid, image bytes, prompt) triples and return one Outcome per triple: a score in [0, 1] or a
reason code (without the `mllm_` prefix) and a message. Answers become scores the same way in both:
- yes_prob: P(yes) / (P(yes) + P(no)) over the first answer token (the next-token distribution in
  process; the server's top_logprobs over HTTP, or the answer text, yes -> 1 and no -> 0, when a server
  returns no logprobs);
- rating: the first number in a generated answer, divided by rating_max (outside 1..rating_max: unparseable).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)")


@dataclass
class Outcome:
    score: float | None = None
    reason: str | None = None  # endpoint error code, "unparseable" or "image_error"
    error: str | None = None


def parse_rating(text: str | None, rating_max: int) -> Outcome:
    m = _NUMBER.search(text or "")
    if m is None:
        return Outcome(reason="unparseable", error=f"no number in the answer {(text or '')[:80]!r}")
    value = float(m.group(1))
    if not 1 <= value <= rating_max:
        return Outcome(reason="unparseable", error=f"rating {value:g} outside 1..{rating_max}")
    return Outcome(score=value / rating_max)


def _norm(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


def yes_prob_from_top_logprobs(top: list[dict], yes: set[str], no: set[str]) -> Outcome:
    """Score from one position's top_logprobs ([{token, logprob}, ...]): tokens compared lower-cased, stripped."""
    p_yes = sum(math.exp(t["logprob"]) for t in top if _norm(t["token"]) in yes)
    p_no = sum(math.exp(t["logprob"]) for t in top if _norm(t["token"]) in no)
    if p_yes + p_no <= 0:
        return Outcome(reason="unparseable", error="neither a yes nor a no token among the top logprobs")
    return Outcome(score=p_yes / (p_yes + p_no))


def yes_no_from_text(text: str | None, yes: set[str], no: set[str]) -> Outcome:
    words = re.findall(r"[a-z]+", (text or "").lower())
    if words and words[0] in yes:
        return Outcome(score=1.0)
    if words and words[0] in no:
        return Outcome(score=0.0)
    return Outcome(reason="unparseable", error=f"answer is neither yes nor no: {(text or '')[:80]!r}")


def open_image(data: bytes | None):
    from curate import images

    if data is None:
        raise ValueError("row has no image")
    return images.decode_rgb(data)


class TransformersBackend:
    """A Hugging Face VLM (hub id or local folder) loaded with AutoProcessor + AutoModelForImageTextToText."""

    def __init__(self, model: str, *, mode: str, yes_tokens: Sequence[str], no_tokens: Sequence[str],
                 rating_max: int, max_new_tokens: int, batch_size: int, device: str, precision: str,
                 stage: str = "mllm_score"):
        from transformers import AutoProcessor

        from curate.models.clip import ModelLoadError, autocast_dtype, pick_device
        from curate.models.hub import local_model_dir, require_transformers_model

        self.mode, self.rating_max, self.max_new_tokens, self.batch_size = mode, rating_max, max_new_tokens, batch_size
        self.device = pick_device(device)
        dtype = autocast_dtype(precision, self.device)  # None: fp32
        # this worker's own cache and network (another node's may differ from the driver's preflight)
        require_transformers_model(stage, model)
        folder = local_model_dir(model)  # ~ expanded: from_pretrained took "~/m" for a hub id
        path = str(folder) if folder is not None else model
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = _auto_model(path, dtype).to(self.device).eval()
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"cannot load VLM {model!r}: {str(err).splitlines()[0][:200]}") from None
        import inspect

        self.forward_args = set(inspect.signature(self.model.forward).parameters)
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # the next-token logits of every row sit at position -1
        self.yes_ids = sorted({tok.encode(w, add_special_tokens=False)[0] for w in yes_tokens})
        self.no_ids = sorted({tok.encode(w, add_special_tokens=False)[0] for w in no_tokens})
        if set(self.yes_ids) & set(self.no_ids):
            raise ModelLoadError(f"{model}: yes_tokens and no_tokens start with the same token; choose other words")

    def _inputs(self, images, prompts: list[str]):
        texts = []
        for p in prompts:
            conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
            texts.append(self.processor.apply_chat_template(conv, add_generation_prompt=True))
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        # tokenizers may return inputs (token_type_ids) that the model does not take; generate refuses them
        return {k: v.to(self.device) for k, v in inputs.items() if k in self.forward_args}

    def forward_batch(self, images, prompts: list[str]) -> list[Outcome]:
        """Score decoded images (the model's share of the work; the bench times this alone)."""
        import torch

        inputs = self._inputs(images, prompts)
        with torch.inference_mode():
            if self.mode == "yes_prob":
                logits = self.model(**inputs).logits[:, -1, :].float()
                probs = torch.softmax(logits, dim=-1)
                p_yes = probs[:, self.yes_ids].sum(-1)
                p_no = probs[:, self.no_ids].sum(-1)
                scores = (p_yes / (p_yes + p_no).clamp_min(1e-30)).cpu().tolist()
                return [Outcome(score=s) for s in scores]
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        answers = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [parse_rating(a, self.rating_max) for a in answers]

    def score(self, uids: list[str], images: list[bytes | None], prompts: list[str]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(uids)
        decoded = []
        for i, data in enumerate(images):
            try:
                decoded.append((i, open_image(data)))
            except Exception as err:  # noqa: BLE001 - any undecodable image is a row outcome
                outcomes[i] = Outcome(reason="image_error", error=f"{type(err).__name__}: {err}"[:300])
        for s in range(0, len(decoded), self.batch_size):
            chunk = decoded[s:s + self.batch_size]
            results = self.forward_batch([im for _, im in chunk], [prompts[i] for i, _ in chunk])
            for (i, _), r in zip(chunk, results):
                outcomes[i] = r
        return outcomes  # type: ignore[return-value]


def _auto_model(model: str, dtype):
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            kwargs = {} if dtype is None else {"torch_dtype": dtype}
            return auto.from_pretrained(model, **kwargs)
        except ValueError:
            if name == "AutoModelForVision2Seq":
                raise
    raise ValueError("this transformers version has no image-text-to-text auto class")


class EndpointBackend:
    """An OpenAI-compatible server (vLLM, SGLang) through curate.endpoint.ChatClient."""

    def __init__(self, client, *, mode: str, yes_tokens: Sequence[str], no_tokens: Sequence[str], rating_max: int,
                 max_new_tokens: int, top_logprobs: int):
        self.client, self.mode, self.rating_max = client, mode, rating_max
        self.yes = {_norm(w) for w in yes_tokens}
        self.no = {_norm(w) for w in no_tokens}
        if mode == "yes_prob":
            self.params = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": top_logprobs}
        else:
            self.params = {"max_tokens": max_new_tokens, "temperature": 0.0}

    def score(self, uids: list[str], images: list[bytes | None], prompts: list[str]) -> list[Outcome]:
        from curate.endpoint import ChatRequest, user_message

        outcomes: list[Outcome | None] = [None] * len(uids)
        requests, where = [], []
        for i, (uid, data, prompt) in enumerate(zip(uids, images, prompts)):
            try:
                if data is None:
                    raise ValueError("row has no image")
                msg = user_message(prompt, [data])
            except Exception as err:  # noqa: BLE001 - bytes that are not an image are a row outcome
                outcomes[i] = Outcome(reason="image_error", error=f"{type(err).__name__}: {err}"[:300])
                continue
            requests.append(ChatRequest([msg], uid=uid, params=self.params))
            where.append(i)
        for i, r in zip(where, self.client.chat_many(requests)):
            outcomes[i] = self._outcome(r)
        return outcomes  # type: ignore[return-value]

    def _outcome(self, r) -> Outcome:
        if not r.ok:
            return Outcome(reason=r.reason, error=r.error)
        if self.mode == "rating":
            return parse_rating(r.text, self.rating_max)
        if r.logprobs:
            return yes_prob_from_top_logprobs(r.logprobs[0].get("top_logprobs") or [], self.yes, self.no)
        return yes_no_from_text(r.text, self.yes, self.no)
