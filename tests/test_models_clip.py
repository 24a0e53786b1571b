"""The shared CLIP loader: random-init tiny model, our checkpoint round trip, and its one-line errors."""
import numpy as np
import pytest
from PIL import Image

from curate.models.clip import ModelLoadError, load_clip


@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.manual_seed(0)
    return load_clip("curate-tiny", device="cpu")


def test_embeddings_are_unit_norm_and_batch_independent(tiny):
    ims = [Image.new("RGB", (80, 60), c) for c in ("red", "blue", "green")]
    img = tiny.embed_images(ims)
    txt = tiny.embed_texts(["a red square", "a blue square", "a green square"])
    assert img.shape == txt.shape == (3, tiny.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    # same image alone or in a batch: same embedding (eval mode, no batch statistics)
    np.testing.assert_allclose(tiny.embed_images(ims[1:2])[0], img[1], atol=1e-5)
    assert tiny.embed_texts([]).shape == (0, tiny.dim)


def test_checkpoint_round_trip(tiny, tmp_path):
    import torch

    ckpt = tmp_path / "c.pt"
    torch.save({"state_dict": tiny.model.state_dict(), "config": {"model": "curate-tiny"}}, ckpt)
    again = load_clip(checkpoint=str(ckpt), device="cpu")  # name read from the checkpoint
    assert again.name == "curate-tiny"
    im = [Image.new("RGB", (64, 64), "white")]
    np.testing.assert_allclose(again.embed_images(im), tiny.embed_images(im), atol=1e-5)


@pytest.mark.parametrize("kwargs, msg", [
    ({"model": "no-such-model"}, "unknown open_clip model"),
    ({"checkpoint": "/nonexistent/c.pt"}, "checkpoint not found"),
    ({"model": "curate-tiny", "checkpoint": "x", "pretrained": "y"}, "not both"),
    ({"model": "curate-tiny", "precision": "fp8"}, "unknown precision"),
])
def test_errors_are_one_line(kwargs, msg):
    with pytest.raises(ModelLoadError, match=msg) as err:
        load_clip(device="cpu", **kwargs)
    assert "\n" not in str(err.value)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_clip(checkpoint=str(bad), device="cpu")
