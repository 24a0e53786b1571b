"""Captioning backends: one small interface over open_clip CoCa and transformers vision-language models.

Why an interface: the `recaption` stage owns batching, bad input and bookkeeping; a backend only turns
a batch of decoded RGB images into texts. A backend returns, per image, a `Caption` (text, tokens
generated, whether it hit the token limit), so the stage can flag empty and truncated generations the
same way for every model. Models load once per worker in `load()`; `check()` runs at recipe time,
before any work, and turns an unknown model name into one clear line.

`EndpointCaptioner` sends each image to an OpenAI-compatible chat server (vLLM, SGLang, any hosted
API) through curate.endpoint's ChatClient (concurrency bound, retries, optional answer cache).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

from curate.models.clip import ModelLoadError, autocast_dtype, pick_device, resolve_model_name


@dataclass
class Caption:
    text: str
    tokens: int  # tokens generated (excluding start/end markers)
    truncated: bool  # generation reached the token limit before its end-of-text
    flag: str | None = None  # why there is no caption when the backend knows (endpoint_<reason>)
    error: str | None = None  # the failed request's message, for a row failed by on_error: fail


class Captioner:
    """Base class: `load()` once, then `caption(images)` per batch; `name` is recorded per row."""

    name: str = ""

    def load(self) -> "Captioner":
        return self

    def preprocess(self, images: Sequence) -> Any:
        """Turn decoded PIL images into the model's input batch (CPU work, may run ahead of generate)."""
        raise NotImplementedError

    def generate(self, inputs: Any) -> Any:
        """The model's own generate on one prepared batch (what bench/caption.py times alone)."""
        raise NotImplementedError

    def decode(self, inputs: Any, output: Any) -> list[Caption]:
        raise NotImplementedError

    def caption(self, images: Sequence) -> list[Caption]:
        inputs = self.preprocess(images)
        return self.decode(inputs, self.generate(inputs))


def _autocast(device: str, dtype):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


class CocaCaptioner(Captioner):
    """open_clip CoCa `generate` (beam search or top-p sampling), loaded with the shared CLIP loader."""

    def __init__(self, model: str | None, pretrained: str | None = None, checkpoint: str | None = None,
                 decoding: str = "beam", num_beams: int = 3, top_p: float = 0.9, temperature: float = 1.0,
                 max_tokens: int = 30, min_tokens: int = 5, device: str = "auto", precision: str = "auto",
                 seed: int = 0):
        self.model_name, self.pretrained, self.checkpoint = model, pretrained, checkpoint
        self.decoding, self.num_beams, self.top_p, self.temperature = decoding, num_beams, top_p, temperature
        self.max_tokens, self.min_tokens = max_tokens, min_tokens
        self.device, self.precision, self.seed = device, precision, seed
        self.clip = None
        self.name = ""  # coca:MODEL:SOURCE once loaded

    @staticmethod
    def check(model: str | None, pretrained: str | None, checkpoint: str | None) -> None:
        """Cheap recipe-time check: a known open_clip CoCa name, an existing checkpoint file."""
        model = resolve_model_name(model, pretrained, checkpoint, missing=(
            "coca backend needs `model` (an open_clip CoCa name) or a checkpoint that records it"))
        if not model.startswith(("hf-hub:", "local-dir:")) and "coca" not in model.lower():
            raise ModelLoadError(f"open_clip model {model!r} is not a CoCa model: it cannot generate captions")
        if not checkpoint and not pretrained:
            raise ModelLoadError(f"coca backend needs `checkpoint` (e.g. from `curate train --model {model} --loss coca`) "
                                 "or `pretrained` (an open_clip tag): a random-init model writes noise")

    def load(self) -> "CocaCaptioner":
        from curate.models.clip import load_clip

        self.clip = load_clip(self.model_name, pretrained=self.pretrained, checkpoint=self.checkpoint,
                              device=self.device, precision=self.precision)
        if not hasattr(self.clip.model, "generate"):
            raise ModelLoadError(f"open_clip model {self.clip.name} has no generate(): not a CoCa model")
        self.model_name = self.clip.name
        self.name = f"coca:{self.clip.name}:{self.clip.source}"
        return self

    def preprocess(self, images: Sequence):
        import torch

        return torch.stack([self.clip.preprocess(im) for im in images])

    def generate(self, inputs):
        import torch

        kwargs: dict = dict(seq_len=self.max_tokens + 2, min_seq_len=min(self.min_tokens, self.max_tokens),
                            temperature=self.temperature)
        if self.decoding == "beam" and self.num_beams == 1:
            # one beam is greedy decoding; open_clip's beam search needs two or more beams, so ask for
            # top-k with k = 1 (only the most probable token survives the warper: deterministic)
            kwargs.update(generation_type="top_k", top_k=1)
        elif self.decoding == "beam":
            kwargs.update(generation_type="beam_search", num_beams=self.num_beams, num_beam_groups=1)
        else:
            kwargs.update(generation_type="top_p", top_p=self.top_p)
            torch.manual_seed(self.seed)
        with torch.inference_mode(), _autocast(self.clip.device, self.clip.dtype):
            return self.clip.model.generate(inputs.to(self.clip.device, non_blocking=True), **kwargs)

    def decode(self, inputs, output) -> list[Caption]:
        tok = self.clip.tokenizer
        sot = tok.encoder.get("<start_of_text>", 49406) if hasattr(tok, "encoder") else 49406
        eot = tok.encoder.get("<end_of_text>", 49407) if hasattr(tok, "encoder") else 49407
        out = []
        for row in output.tolist():
            ids = row[1:] if row and row[0] == sot else row
            end = ids.index(eot) if eot in ids else len(ids)
            content = [t for t in ids[:end] if t != 0]
            text = tok.decode(content) if content else ""
            out.append(Caption(" ".join(text.split()), len(content), len(content) >= self.max_tokens))
        return out


class TransformersCaptioner(Captioner):
    """A transformers vision-language model by hub id or local folder (BLIP, BLIP-2, Florence-2, Qwen-VL,
    SmolVLM, VisionEncoderDecoder): AutoProcessor + AutoModelForImageTextToText, `generate`."""

    def __init__(self, model: str, prompt: str = "", chat: str = "auto", decoding: str = "beam",
                 num_beams: int = 3, top_p: float = 0.9, temperature: float = 1.0, max_tokens: int = 30,
                 min_tokens: int = 0, device: str = "auto", precision: str = "auto", seed: int = 0,
                 trust_remote_code: bool = False, stage: str = "recaption"):
        self.model_id, self.prompt, self.chat, self.stage = model, prompt, chat, stage
        self.decoding, self.num_beams, self.top_p, self.temperature = decoding, num_beams, top_p, temperature
        self.max_tokens, self.min_tokens = max_tokens, min_tokens
        self.device, self.precision, self.seed, self.trust_remote_code = device, precision, seed, trust_remote_code
        self.name = f"transformers:{model}"
        self.model = self.processor = None

    @staticmethod
    def check(model: str, trust_remote_code: bool = False) -> None:
        """Recipe-time check, with no request and whatever the cache holds: a local folder holds a model
        transformers can load (config.json, weights); a hub id is well formed. Whether the hub id is cached
        or reachable is the run's preflight (Recaption.weights_problem, curate.models.hub)."""
        from curate.models.hub import model_name_problem

        why = model_name_problem("recaption", model, trust_remote_code)
        if why:
            raise ModelLoadError(why.removeprefix("recaption: "))

    def load(self) -> "TransformersCaptioner":
        import torch
        import transformers

        from curate.models.hub import local_model_dir, require_transformers_model

        dev = pick_device(self.device)
        dtype = autocast_dtype(self.precision, dev)
        # this worker's own cache and network (another node's may differ from the driver's preflight)
        require_transformers_model(self.stage, self.model_id, trust_remote_code=self.trust_remote_code)
        folder = local_model_dir(self.model_id)
        path = str(folder) if folder is not None else self.model_id
        kw = dict(trust_remote_code=self.trust_remote_code)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(path, **kw)
            model = None
            for auto in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM"):
                cls = getattr(transformers, auto, None)
                if cls is None:
                    continue
                try:
                    model = cls.from_pretrained(path, torch_dtype=dtype or torch.float32, **kw)
                    break
                except ValueError:  # this auto class does not map the config; try the next
                    continue
            if model is None:
                raise ModelLoadError(f"{self.model_id} is not a vision-to-text model transformers can load")
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001
            msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelLoadError(f"cannot load transformers model {self.model_id}: {msg}") from None
        self.model = model.to(dev).eval()
        self.dev = dev
        tok = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer = tok
        if getattr(tok, "padding_side", None) and not self.model.config.is_encoder_decoder:
            tok.padding_side = "left"  # decoder-only models continue the prompt at the right edge
        return self

    def _prompts(self, n: int) -> list[str] | None:
        if not self.prompt and self.chat != "always":
            return None
        use_chat = self.chat == "always" or (self.chat == "auto" and getattr(self.processor, "chat_template", None))
        if use_chat:
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(msgs, add_generation_prompt=True)
        else:
            text = self.prompt
        return [text] * n

    def preprocess(self, images: Sequence):
        prompts = self._prompts(len(images))
        kw = {"images": list(images), "return_tensors": "pt"}
        if prompts is not None:
            kw.update(text=prompts, padding=True)
        return self.processor(**kw)

    def generate(self, inputs):
        import torch

        inputs = inputs.to(self.dev)
        if self.model.dtype != torch.float32 and "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        kw: dict = dict(max_new_tokens=self.max_tokens, min_new_tokens=self.min_tokens or None)
        if self.decoding == "beam":
            kw.update(num_beams=self.num_beams, do_sample=False)
        elif self.decoding == "greedy":
            kw.update(num_beams=1, do_sample=False)
        else:
            kw.update(do_sample=True, top_p=self.top_p, temperature=self.temperature, num_beams=1)
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            return self.model.generate(**inputs, **kw)

    def decode(self, inputs, output) -> list[Caption]:
        tok = self.tokenizer
        eos = {t for t in (getattr(self.model.generation_config, "eos_token_id", None),
                           getattr(tok, "eos_token_id", None), getattr(tok, "sep_token_id", None))
               if isinstance(t, int)}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, list):
            eos |= set(gen_eos)
        special = set(getattr(tok, "all_special_ids", []) or [])
        ids_in = inputs.get("input_ids") if hasattr(inputs, "get") else None
        n_in = int(ids_in.shape[1]) if ids_in is not None else 0
        echoed = (ids_in is not None and output.shape[1] >= n_in
                  and bool((output[:, :n_in].to(ids_in.device) == ids_in).all()))
        out = []
        for i, row in enumerate(output.tolist()):
            if echoed:  # decoder-only models return prompt + continuation
                row = row[n_in:]
            elif ids_in is not None:  # BLIP-style: the prompt's words come back after a start token
                prompt = [t for t in ids_in[i].tolist() if t not in special]
                row = [t for t in row if t not in special or t in eos]
                if prompt and row[:len(prompt)] == prompt:
                    row = row[len(prompt):]
            end = next((j for j, t in enumerate(row) if t in eos), None)
            content = [t for t in (row if end is None else row[:end]) if t not in special]
            text = tok.decode(content, skip_special_tokens=True) if content else ""
            out.append(Caption(" ".join(text.split()), len(content), end is None and len(content) >= self.max_tokens))
        return out


class EndpointCaptioner(Captioner):
    """An OpenAI-compatible chat server: one request per image (the image as a data URL, then `prompt`).

    A request that still fails after the client's retries gives no caption and flag
    `endpoint_<reason>` (http_error, rate_limited, timeout, ...); the sample itself is not dropped.
    The chat API does not report tokens, so `tokens` counts words and `truncated` is not detected.
    `seed` goes into every request (OpenAI's `seed` parameter) and seeds the retry delays.
    """

    def __init__(self, url: str, model: str, prompt: str = "Describe this image in one sentence.",
                 max_tokens: int = 60, temperature: float = 0.0, seed: int = 0, client: dict | None = None):
        """`client`: ChatClient's keyword arguments (curate.endpoint.settings.EndpointClient.client_settings)."""
        self.url, self.model_id, self.prompt = url, model, prompt
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self.client_kwargs = dict(client or {})
        self.name = f"endpoint:{model}"
        self.client = None

    @staticmethod
    def check(url: str | None, model: str | None) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ModelLoadError(f"endpoint backend needs `url` (http(s)://host:port/v1), not {url!r}")
        if not model:
            raise ModelLoadError("endpoint backend needs `model` (the name the server serves)")

    def load(self) -> "EndpointCaptioner":
        from curate.endpoint.client import ChatClient

        self.client = ChatClient(self.url, self.model_id, seed=self.seed, **self.client_kwargs)
        return self

    def preprocess(self, images: Sequence) -> list[bytes]:
        import io

        out = []
        for im in images:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=92)
            out.append(buf.getvalue())
        return out

    def generate(self, inputs: list[bytes]):
        from curate.endpoint.client import ChatRequest
        from curate.endpoint.images import user_message

        # OpenAI's `seed`: a server that honours it samples the same caption for the same image and settings
        # on every run (the client's retry jitter is seeded with it too)
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": self.seed}
        return self.client.chat_many([ChatRequest([user_message(self.prompt, [b])], None, params) for b in inputs])

    def decode(self, inputs, output) -> list[Caption]:
        out = []
        for r in output:
            if not r.ok:
                out.append(Caption("", 0, False, flag=f"endpoint_{r.reason}", error=r.error))
                continue
            text = " ".join((r.text or "").split())
            out.append(Caption(text, len(text.split()), False))
        return out
