"""Tiny open_clip model configs shipped with curate, registered with open_clip on import.

Why: tests and the demo train and evaluate real CLIP models on CPU (2 cores), and open_clip's
smallest built-in configs (ViT-S-32 at 224 px) are far too slow for that. `curate-tiny` is a
64x64, patch-8 ViT (64 tokens) with a 3-layer text tower and the default open_clip tokenizer, so
its output stays usable by anything that takes an open_clip model name; `curate-tiny-32` is a
32x32, patch-4 ViT with 2+2 layers of width 128, about 2.5x faster per sample on CPU, which learns the
demo corpus's colour-and-shape captions within minutes on 2 cores (the curated-vs-raw example uses
it); `curate-tiny-rn` is a 64x64 ModifiedResNet tower (one bottleneck block per stage, base width 16)
with the same text tower: a convolution's locality is what a tiny model needs to tell shapes apart at
CPU budgets (on the held-out corpus' validation split, 38,400 samples at batch 256: shape zero-shot 0.19
vs curate-tiny-32's 0.12 against a 0.125 majority baseline; examples/results/curated_vs_raw/ uses it);
`curate-tiny-coca` is the CoCa twin for captioning. The names contain no "vit", so open_clip_train's name-based optimiser
defaults pick beta2=0.999/eps=1e-8 unless given --beta2/--eps.

open_clip only knows configs registered in the running process: after `import curate.train.configs`,
`open_clip.create_model_and_transforms("curate-tiny", pretrained=ckpt)` loads a checkpoint back.
A fresh open_clip_train process goes through `python -m curate.train.open_clip_launch`.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "model_configs"
MODELS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))


def register() -> tuple[str, ...]:
    """Add CONFIG_DIR to open_clip's registry (idempotent) and return the model names it holds."""
    if not set(MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)
    _init_coca_decoder_projection()
    return MODELS


def _init_coca_decoder_projection() -> None:
    """Initialise CoCa's decoder `text_projection`, which open_clip 3.3.0 leaves as torch.empty.

    Why: MultimodalTransformer never calls its init_parameters (open_clip issue #554), so a CoCa
    trained from scratch, as curate-tiny-coca always is, starts from whatever memory held: often
    zeros, sometimes 1e35 or inf logits. Loaded checkpoints overwrite it, so pretrained models are
    unaffected. Wraps the decoder builder once, with the std init_parameters intended.
    """
    from open_clip import coca_model

    build = getattr(coca_model, "_build_text_decoder_tower", None)
    if build is None or getattr(build, "_curate_init", False):
        return

    def build_initialised(*args, **kwargs):
        decoder = build(*args, **kwargs)
        if getattr(decoder, "text_projection", None) is not None:
            torch.nn.init.normal_(decoder.text_projection, std=decoder.width ** -0.5)
        return decoder

    build_initialised._curate_init = True
    coca_model._build_text_decoder_tower = build_initialised


register()
