"""Fixtures for recaption tests: a tiny CoCa checkpoint and a tiny BLIP folder, both built here, never downloaded."""
from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def jpg(rgb, size=(64, 64), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def image_table(texts: list[str], images: list[bytes | None] | None = None) -> pa.Table:
    """A batch as the runner hands it to a stage: core columns in play, plus image bytes."""
    n = len(texts)
    colours = [(220, 30, 30), (30, 200, 40), (30, 50, 220), (230, 220, 30)]
    images = images if images is not None else [jpg(colours[i % 4], seed=i) for i in range(n)]
    return pa.table({"uid": [f"u{i}" for i in range(n)], "part": pa.array([0] * n, pa.int32()),
                     "text": texts, "image": pa.array(images, pa.binary()),
                     "status": ["ok"] * n, "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string()),
                     "error": pa.nulls(n, pa.string())})


@pytest.fixture(scope="session")
def coca_ckpt(tmp_path_factory):
    """A randomly initialised curate-tiny-coca saved as one of our checkpoints (records its model name)."""
    import open_clip

    from curate.train import checkpoints, configs

    configs.register()
    torch.manual_seed(0)
    model = open_clip.create_model("curate-tiny-coca")
    path = tmp_path_factory.mktemp("coca") / "coca.pt"
    checkpoints.save(path, {"state_dict": model.state_dict(), "config": {"model": "curate-tiny-coca"}})
    return path


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory):
    from curate.caption.tiny import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="session")
def mute_blip(tmp_path_factory, tiny_blip):
    """The tiny BLIP with its output bias pushed onto [SEP]: it ends every caption at once (empty generations)."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(tiny_blip)
    sep = model.config.text_config.sep_token_id
    with torch.no_grad():
        model.text_decoder.cls.predictions.decoder.bias[sep] += 1e4
    out = tmp_path_factory.mktemp("blip") / "mute-blip"
    model.save_pretrained(out)
    BlipProcessor.from_pretrained(tiny_blip).save_pretrained(out)
    return out
