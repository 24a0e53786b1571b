"""A tiny, randomly initialised BLIP captioner saved to a local folder, for tests and benchmarks.

Why: the transformers backend must be exercised offline exactly as a user's hub id would be
(AutoProcessor + AutoModel...from_pretrained on a folder), and nothing here may download weights.
The tokenizer is a word-level BERT vocabulary built from the demo's caption words, so its output is
readable words, and the whole model is a few MB and generates on CPU in milliseconds per image.
"""
from __future__ import annotations

import re
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def _words() -> list[str]:
    from curate.demo import captions

    text = " ".join(captions.TEMPLATES) + " " + " ".join(captions.BOILERPLATE_FIXED)
    text += " " + " ".join(captions.COUNT_WORDS.values()) + " " + " ".join(captions.POSITION_PHRASES.values())
    text += " " + " ".join(captions.TEXTURE_WORDS.values())
    text += " red green blue yellow purple orange black white circle square triangle star small large medium"
    words = sorted(set(re.findall(r"[a-z]+", text.lower())) | set("abcdefghijklmnopqrstuvwxyz0123456789,.:()-"))
    return words


def build_tiny_blip(path: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """Write a tiny BlipForConditionalGeneration + BlipProcessor to `path` (idempotent) and return it."""
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    path = Path(path)
    if (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + _words()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True, bos_token="[DEC]",
                            model_max_length=64)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    ids = {t: vocab.index(t) for t in SPECIAL}
    text_cfg = dict(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                    pad_token_id=ids["[PAD]"], bos_token_id=ids["[DEC]"], eos_token_id=ids["[SEP]"],
                    sep_token_id=ids["[SEP]"])
    vision_cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=image_size, patch_size=16)
    cfg = BlipConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["[SEP]"]
    model.generation_config.pad_token_id = ids["[PAD]"]
    model.generation_config.bos_token_id = ids["[DEC]"]
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


if __name__ == "__main__":  # python -m curate.caption.tiny OUT_DIR
    import sys

    print(build_tiny_blip(sys.argv[1]))
