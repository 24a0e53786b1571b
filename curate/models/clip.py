"""One place that loads an open_clip model and embeds images and texts with it.

Why shared: the CLIP-score stage, semantic dedup, interleaved image placement, video keyframe scoring
and `curate eval` all need "model by name + pretrained tag (hub cache) or local checkpoint ->
L2-normalised embeddings", with the same device and precision rules and the same one-line errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curate.io import storage


class ModelLoadError(ValueError):
    """A model name, pretrained tag or checkpoint that cannot be loaded (reported as one line)."""


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def autocast_dtype(precision: str, device: str):
    """torch dtype for autocast, or None for full fp32 (CPU always runs fp32: bf16 matmuls are slow there)."""
    import torch

    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise ModelLoadError(f"unknown precision {precision!r}: use fp32, bf16, fp16 or auto")
    if not device.startswith("cuda") or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


@dataclass
class Clip:
    """A loaded open_clip model with its eval preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    name: str
    source: str
    device: str
    dtype: Any = None  # autocast dtype or None

    def _autocast(self):
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def embed_image_tensors(self, pixels) -> np.ndarray:
        """L2-normalised float32 embeddings of a preprocessed (N, 3, H, W) tensor."""
        import torch

        with torch.inference_mode(), self._autocast():
            out = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy()

    def embed_images(self, images: Sequence) -> np.ndarray:
        """Embeddings of PIL images (preprocessed here; hot paths should preprocess off the model's thread)."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_image_tensors(torch.stack([self.preprocess(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self._autocast():
            out = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy()

    @property
    def dim(self) -> int:
        import torch

        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        if isinstance(proj, torch.nn.Linear):
            return int(proj.out_features)
        return int(self.model.visual.output_dim)


def local_model_file(path: str, setting: str) -> Path:
    """A local file for a checkpoint setting: a local path as given, a URL (s3://bucket/filter.pt,
    http(s)://, hf://) fetched through fsspec into this machine's cache (curate/io/storage.py)."""
    try:
        return storage.local_file(path, setting)
    except storage.StorageError as err:
        raise ModelLoadError(str(err)) from None


def resolve_model_name(model: str | None, pretrained: str | None, checkpoint: str | None,
                       missing: str = "no model name given (and no checkpoint that records one)",
                       checkpoint_hint: str = "", setting: str = "checkpoint") -> str:
    """The open_clip model name to load (read from our checkpoint when not given), checked without loading.

    Cheap enough for recipe-time validation (a checkpoint is memory-mapped, not read): an unknown name, an
    unknown pretrained tag or a missing checkpoint fails before any work. `checkpoint_hint` is appended
    to the missing-checkpoint message (where the caller knows how one is made).
    """
    import open_clip

    from curate.train import checkpoints, configs

    configs.register()
    if checkpoint and pretrained:
        raise ModelLoadError("give either pretrained (a hub tag) or checkpoint (a local file), not both")
    if checkpoint:
        local = local_model_file(checkpoint, setting)
        if not local.is_file():
            raise ModelLoadError(f"checkpoint not found: {checkpoint}{checkpoint_hint}")
        try:
            model = checkpoints.model_name_of(local, model)
        except checkpoints.CheckpointError as err:
            raise ModelLoadError(str(err)) from None
    if not model:
        raise ModelLoadError(missing)
    if model.startswith(("hf-hub:", "local-dir:")):
        return model
    if model not in open_clip.list_models():
        raise ModelLoadError(f"unknown open_clip model {model!r} (see open_clip.list_models())")
    if pretrained and storage.is_remote(pretrained):
        local_model_file(pretrained, "pretrained")
    elif pretrained and not Path(pretrained).expanduser().is_file() and not open_clip.get_pretrained_cfg(model, pretrained):
        raise ModelLoadError(f"open_clip has no pretrained tag {pretrained!r} for {model} "
                             "(see open_clip.list_pretrained())")
    return model


def check_weights(stage: str, model: str | None, pretrained: str | None, checkpoint: str | None,
                  random_init: bool = False, checkpoint_hint: str = "") -> str:
    """Recipe-time check of a scoring stage's CLIP settings: `resolve_model_name`, and weights given.

    Why: open_clip builds a model with random weights when neither `pretrained` nor `checkpoint` is set,
    and a stage scoring with it makes keep/drop decisions from noise without any sign of it. Such a model
    is only accepted with `random_init: true` (tests and demos). Raises ModelLoadError (one line).
    `checkpoint_hint` is appended to the missing-checkpoint message (see `resolve_model_name`).
    """
    name = resolve_model_name(model, pretrained, checkpoint,
                              missing=f"{stage} needs `model` (an open_clip name) or `checkpoint`",
                              checkpoint_hint=checkpoint_hint, setting=f"{stage}.checkpoint")
    if not pretrained and not checkpoint and not random_init:
        raise ModelLoadError(f"{stage} has no weights for {name}: give `pretrained:` (an open_clip tag such as "
                             f"laion2b_s34b_b79k) or `checkpoint:` (e.g. from `curate train`); random weights "
                             f"score noise (set random_init: true only for tests and demos)")
    return name


HUB_CHECK_TIMEOUT_S = 5.0  # one HEAD request to the weights' host when they are not cached


def _reach(url: str) -> str | None:
    """None when `url`'s server answers at all (any HTTP status: the host is reachable), else why not. One
    try, HUB_CHECK_TIMEOUT_S; the proxy settings of the environment apply (urllib)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_CHECK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))
    return None


def hub_weights_problem(model: str, pretrained: str | None) -> str | None:
    """Why the open_clip hub weights `pretrained` of `model` cannot be had on this machine, None when they
    are in the local cache, are a file, or can be fetched.

    Why: open_clip fetches a hub tag's weights when the model loads, in the first worker that reaches the
    stage; offline, huggingface_hub retried for ~45 s there, after the input was parsed and images
    downloaded. Checked before any work instead: the local caches (Hugging Face hub, ~/.cache/clip)
    without network; when missing, HF_HUB_OFFLINE refuses at once, else one HEAD request must reach the
    weights' host."""
    import os

    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
    if not cfg or "file" in cfg:
        return None  # a weights file (checked by resolve_model_name) or no hub tag
    where = f"{model}/{pretrained}"
    if cfg.get("hf_hub") and oc_pretrained.has_hf_hub():
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or oc_pretrained.HF_WEIGHTS_NAME
        # the .safetensors open_clip looks for first (a private helper: none when it is gone)
        names = [*getattr(oc_pretrained, "_get_safe_alternatives", lambda f: ())(filename), filename]
        if any(isinstance(try_to_load_from_cache(repo, n, cache_dir=constants.HF_HUB_CACHE), str) for n in names):
            return None
        if constants.HF_HUB_OFFLINE:
            return (f"the weights of {where} are not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                    "and HF_HUB_OFFLINE is set")
        url = f"{constants.ENDPOINT}/{repo}/resolve/main/{filename}"  # HF_ENDPOINT as read now
    else:
        url = cfg.get("url", "")
        if not url or os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
            return None
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # offline is offline for every host: no request leaves this machine
            return f"the weights of {where} are not cached here (~/.cache/clip) and HF_HUB_OFFLINE is set"
    why = _reach(url)
    return None if why is None else f"the weights of {where} are not cached here and {url} cannot be reached ({why})"


def load_clip(model: str | None = None, pretrained: str | None = None, checkpoint: str | None = None,
              device: str = "auto", precision: str = "auto") -> Clip:
    """Load `model` with a hub/pretrained tag (e.g. ViT-B-32 + laion2b_s34b_b79k, from the local hub cache)
    or a local checkpoint file (ours from `curate train`, or any open_clip state dict).

    With only `checkpoint`, the model name is read from the checkpoint (ours record it).
    """
    import open_clip

    model = resolve_model_name(model, pretrained, checkpoint)
    checkpoint = str(local_model_file(checkpoint, "checkpoint")) if checkpoint else None
    if pretrained and storage.is_remote(pretrained):  # a weights file on s3://, http(s)://, hf://...
        pretrained = str(local_model_file(pretrained, "pretrained"))
    dev = pick_device(device)
    dtype = autocast_dtype(precision, dev)
    source = checkpoint or pretrained or "random-init"
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=str(checkpoint) if checkpoint else pretrained, device=dev)
    except Exception as err:  # noqa: BLE001 - missing hub files, wrong keys/shapes: all "cannot load"
        msg = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(f"cannot load open_clip model {model} from {source}: {msg}") from None
    net.eval()
    return Clip(model=net, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(model), name=model,
                source=str(source), device=dev, dtype=dtype)
