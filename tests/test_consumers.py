"""The run directory's shards are a public format: check real consumers read them, without the pipeline.

A tiny run directory is written with the shard writer itself (`write_tar`), then read back by
webdataset, Ray Data and open_clip's own trainer (in a fresh process, through the launcher that
registers curate's tiny model configs). Also checks those configs build, run fast on CPU and that
the CoCa one can caption at 64x64.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from curate.io.rundir import RunDir  # noqa: E402
from curate.io.shard_writer import write_tar  # noqa: E402
from curate.train import configs  # noqa: E402

N_SHARDS, PER_SHARD = 2, 32
SIZE = 64


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct flat colour per sample, so an image can be matched back to its uid after decoding."""
    return (20 + 7 * i) % 256, (200 - 3 * i) % 256, (37 * i) % 256


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """OUT/shards/00000k.tar as the shard writer lays them out; returns (RunDir, {uid: sample})."""
    run = RunDir(tmp_path_factory.mktemp("consumers") / "out")
    samples = {}
    for part in range(N_SHARDS):
        rows = []
        for j in range(PER_SHARD):
            i = part * PER_SHARD + j
            uid = hashlib.sha1(f"fixture\0{i}".encode()).hexdigest()[:20]
            row = {"key": uid, "uid": uid, "source": "fixture", "image": _jpeg(_colour(i)), "image_format": "jpg",
                   "text": f"a flat colour swatch number {i}", "width": SIZE, "height": SIZE, "rgb": list(_colour(i))}
            rows.append(row)
            samples[uid] = row
        write_tar(run.shard(part), rows)
    return run, samples


def _urls(run: RunDir) -> list[str]:
    return [str(run.shard(k)) for k in range(N_SHARDS)]


def _close(pixels: np.ndarray, rgb) -> bool:
    return bool(np.abs(pixels.reshape(-1, 3).mean(0) - np.asarray(rgb)).max() < 6)


def test_webdataset_reads_every_sample(run_dir):
    import webdataset as wds

    run, samples = run_dir
    ds = wds.WebDataset(_urls(run), shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json", "__key__")
    seen = {}
    for img, txt, meta, key in ds:
        assert key == meta["uid"]
        want = samples[meta["uid"]]
        assert txt == want["text"] and meta["source"] == "fixture" and meta["rgb"] == want["rgb"]
        assert img.size == (SIZE, SIZE) and _close(np.asarray(img.convert("RGB")), want["rgb"])
        seen[key] = seen.get(key, 0) + 1
    assert seen == {uid: 1 for uid in samples}


def test_ray_read_webdataset(run_dir, ray_address):
    import ray

    run, samples = run_dir
    rows = ray.data.read_webdataset(_urls(run)).take_all()
    assert len(rows) == len(samples)
    assert {r["__key__"] for r in rows} == set(samples)
    for r in rows:
        want = samples[r["__key__"]]
        # Ray decodes by extension: jpg -> HxWx3 uint8 array, txt -> str, json -> dict
        assert r["txt"] == want["text"] and r["json"]["uid"] == want["uid"]
        assert r["jpg"].shape == (SIZE, SIZE, 3) and _close(r["jpg"], want["rgb"])


@pytest.mark.parametrize("name", ["curate-tiny", "curate-tiny-coca"])
def test_tiny_configs_build_and_run_fast(name):
    assert name in configs.MODELS and name in open_clip.list_models()
    model = open_clip.create_model(name).eval()
    text = open_clip.get_tokenizer(name)(["a red square"] * 8)
    image = torch.randn(8, 3, SIZE, SIZE)
    # timed on one thread: on a busy 2-core box two OpenMP threads contend and run 10x slower, not faster
    times, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(3):
                t = time.perf_counter()
                out = model(image, text)
                times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    feats = out["image_features"] if isinstance(out, dict) else out[0]
    assert feats.shape == (8, 128) and torch.allclose(feats.norm(dim=-1), torch.ones(8), atol=1e-4)
    assert min(times) < 1.0, times


def test_tiny_coca_decodes_at_64px():
    """The captioning head works at 64x64: next-token logits over the full vocabulary, step by step.

    Freed junk first: open_clip leaves the decoder's text_projection as torch.empty, and
    curate.train.configs initialises it; without that, reused memory gives 1e35/inf logits."""
    junk = [torch.full((128 * 49408,), 1e30) for _ in range(2)]
    del junk
    model = open_clip.create_model("curate-tiny-coca").eval()
    assert 0.05 < model.text_decoder.text_projection.std().item() < 0.15
    image = torch.randn(2, 3, SIZE, SIZE)
    tokens = torch.full((2, 1), 49406)  # <start_of_text>
    with torch.no_grad():
        for _ in range(5):
            logits = model(image, tokens, output_labels=False)["logits"][:, -1]
            assert logits.shape == (2, 49408) and torch.isfinite(logits).all()
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert tokens.shape == (2, 6)


@pytest.mark.xfail(not open_clip.coca_model._has_transformers, raises=AssertionError, strict=True,
                   reason="open_clip 3.3.0 imports transformers.BeamSearchScorer, gone in transformers 5: "
                          "CoCa.generate is disabled until transformers<5")
def test_tiny_coca_generate():
    model = open_clip.create_model("curate-tiny-coca").eval()
    out = model.generate(torch.randn(2, 3, SIZE, SIZE), seq_len=8, generation_type="top_k")
    assert out.shape[0] == 2 and 1 < out.shape[1] <= 8


def test_open_clip_train_on_shards(run_dir, tmp_path):
    """open_clip's own trainer, unmodified, in a fresh process: 4 steps, loss logged, checkpoint loads back."""
    run, samples = run_dir
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "curate.train.open_clip_launch",
           "--model", "curate-tiny", "--dataset-type", "webdataset",
           "--train-data", str(run.shards / f"{{000000..{N_SHARDS - 1:06d}}}.tar"),
           "--train-num-samples", str(len(samples)), "--batch-size", "16", "--epochs", "1",
           "--workers", "0", "--lr", "1e-3", "--warmup", "1", "--device", "cpu", "--precision", "fp32",
           "--log-every-n-steps", "1", "--save-frequency", "1", "--logs", str(logs), "--name", "t"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = (logs / "t" / "out.log").read_text()
    losses = [float(x) for x in re.findall(r"Train Epoch: 0 \[.*? Loss: ([0-9.]+)", log)]
    assert len(losses) == len(samples) // 16 and all(math.isfinite(v) and 0 < v < 20 for v in losses), log[-2000:]

    ckpt = logs / "t" / "checkpoints" / "epoch_1.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    model, _, _ = open_clip.create_model_and_transforms("curate-tiny", pretrained=str(ckpt))
    w = "visual.conv1.weight"
    assert torch.equal(model.state_dict()[w], state["state_dict"][w])
