"""Evaluation metrics on constructed cases, and on a trained checkpoint; bad eval input raises."""
from __future__ import annotations

import json

import pytest
import torch

from curate.train.evaluate import EvalError, evaluate, load_eval_meta, read_eval_set, retrieval_metrics, zero_shot_accuracy
from curate.train.loop import TrainConfig, train

from .conftest import add, write_classes, write_colour_shards


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


def test_unusable_eval_samples_are_skipped_with_counts(tmp_path):
    """Unlabelled, unknown-label, imageless, textless and undecodable eval samples: counted skips, not errors."""
    import tarfile

    import open_clip

    from curate.train import configs  # noqa: F401

    ev = tmp_path / "ev"
    write_colour_shards(ev, 10, 1)
    write_classes(ev)
    with tarfile.open(ev / "000000.tar") as src:
        img = src.extractfile("000000.jpg").read()
    with tarfile.open(ev / "000001.tar", "w") as tf:
        add(tf, "a.jpg", img)
        add(tf, "a.txt", b"a red picture")
        add(tf, "a.json", b'{"note": "no label"}')               # missing label
        add(tf, "b.jpg", img)
        add(tf, "b.txt", b"a red picture")
        add(tf, "b.json", b'{"label": "magenta"}')               # label not in classes.json
        add(tf, "c.jpg", b"\xff\xd8 not really a jpeg")
        add(tf, "c.txt", b"a red picture")
        add(tf, "c.json", b'{"label_id": 0}')                    # undecodable image
        add(tf, "d.txt", b"a red picture")
        add(tf, "d.json", b'{"label_id": 0}')                    # no image
        add(tf, "e.jpg", img)
        add(tf, "e.json", b'{"label_id": 0}')                    # no text
    _, _, pre = open_clip.create_model_and_transforms("curate-tiny")
    data = read_eval_set(ev, pre, load_eval_meta(ev))
    assert data["read"] == 15 and len(data["texts"]) == 10
    assert data["skipped"] == {"missing_label": 2, "image_decode_error": 1, "missing_image": 1, "missing_text": 1}
