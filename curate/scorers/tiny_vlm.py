"""A tiny, randomly initialised LLaVA-style VLM saved like a hub model, for tests, the demo and benches.

Why: the in-process MLLM backend must load "a model id or a local path" through the same
AutoProcessor / AutoModel calls a real checkpoint uses, without downloading anything. This builds one
from configs (CLIP vision tower + Llama text model, a few thousand parameters) with a byte-level BPE
tokenizer trained here on demo captions, and `save_pretrained`s both into a folder.
"""
from __future__ import annotations

from pathlib import Path

# A plain chat template in the shape real VLM templates have (role turns, image placeholders).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def _texts(n: int, seed: int) -> list[str]:
    import numpy as np

    from curate.demo.captions import caption
    from curate.demo.images import sample_attributes

    rng = np.random.default_rng(seed)
    caps = [caption(sample_attributes(seed * 100_003 + i), rng) for i in range(n)]
    prompts = ["Does this image match the caption? Answer yes or no.", "Rate from 1 to 10 how well the image "
               "matches the caption. Answer with a number only.", "yes no Yes No 1 2 3 4 5 6 7 8 9 10"]
    return caps + prompts * 20 + [" yes no Yes No yes no"] * 200


def build_tiny_vlm(out_dir: str | Path, *, seed: int = 0, image_size: int = 32, vocab_size: int = 600) -> Path:
    """Write a tiny LLaVA (model + processor with tokenizer and chat template) to `out_dir`; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    out = Path(out_dir)
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_texts(300, seed), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", additional_special_tokens=["<image>"])
    tok.padding_side = "left"
    patch = image_size // 4
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size}),
        tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=image_size, patch_size=patch,
                                       projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
