"""Evaluation metrics on constructed cases, and on a trained checkpoint; bad eval input raises."""
from __future__ import annotations

import json

import pytest
import torch

from curate.train.evaluate import EvalError, evaluate, retrieval_metrics, zero_shot_accuracy
from curate.train.loop import TrainConfig, train

from .conftest import write_classes, write_colour_shards


def test_identical_embeddings_give_perfect_retrieval():
    e = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    m = retrieval_metrics(e, e.clone())
    assert all(v == 1.0 for v in m.values())


def test_shifted_pairs_give_zero_r1_and_known_r5():
    e = torch.eye(10)
    m = retrieval_metrics(e, e.roll(1, dims=0))  # caption i belongs to image i-1: no image ranks its own caption first
    assert m["image_to_text_R@1"] == 0.0 and m["text_to_image_R@1"] == 0.0


def test_zero_shot_accuracy_constructed():
    classes = torch.eye(4)
    img = classes[[0, 1, 2, 3, 0, 1]]
    assert zero_shot_accuracy(img, classes, torch.tensor([0, 1, 2, 3, 0, 1]))["top1"] == 1.0
    assert zero_shot_accuracy(img, classes, torch.tensor([1, 1, 2, 3, 0, 1]))["top1"] == pytest.approx(5 / 6)
    assert zero_shot_accuracy(img, classes, torch.tensor([1, 2, 3, 0, 1, 2]), ks=(1,))["top1"] == 0.0


def test_trained_model_beats_chance(colour_shards, colour_eval, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(shards=[str(colour_shards)], output=str(out), samples_seen=32 * 24, batch_size=32, lr=2e-3,
                      warmup=2, workers=0, shuffle_buffer=64))
    res = evaluate(str(out / "checkpoint.pt"), str(colour_eval))
    assert res["samples"] == 96 and res["skipped"] == {}
    assert res["zeroshot_top1"] > 0.5, res  # chance is 1/8


def test_bad_eval_input(colour_shards, tmp_path):
    ck = tmp_path / "missing.pt"
    ev = tmp_path / "ev"
    write_colour_shards(ev, 16, 1)
    with pytest.raises(EvalError, match="classes.json"):
        evaluate(str(ck), str(ev))
    write_classes(ev)
    with pytest.raises(EvalError, match="checkpoint not found"):
        evaluate(str(ck), str(ev))
    nolab = tmp_path / "nolab"
    write_colour_shards(nolab, 16, 1, labels=False)
    write_classes(nolab)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EvalError, match="cannot read checkpoint"):
        evaluate(str(bad), str(ev))
    torch.save({"state_dict": {}, "config": {"model": "curate-tiny"}}, tmp_path / "empty.pt")
    with pytest.raises(EvalError, match="does not fit"):
        evaluate(str(tmp_path / "empty.pt"), str(ev))
    with pytest.raises(EvalError, match="no such|not found"):
        evaluate(str(bad), str(tmp_path / "nowhere"))
    # a real checkpoint on an eval set without labels
    out = tmp_path / "run"
    train(TrainConfig(shards=[str(colour_shards)], output=str(out), samples_seen=32, batch_size=32, workers=0))
    with pytest.raises(EvalError, match="has a label"):
        evaluate(str(out / "checkpoint.pt"), str(nolab))
    json.loads((out / "summary.json").read_text())
