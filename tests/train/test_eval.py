"""Evaluation metrics on constructed cases, and on a trained checkpoint; bad eval input raises."""
from __future__ import annotations

import json

import pytest
import torch

from curate.train.evaluate import (EvalError, evaluate, load_eval_meta, majority_baseline, read_eval_set,
                                   retrieval_chance, retrieval_metrics, retrieval_scores, zero_shot_accuracy)

from .conftest import add, write_classes, write_colour_shards


def test_a_perfect_model_gets_one():
    e = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    m = retrieval_metrics(e, e.clone())
    assert all(v == 1.0 for v in m.values())


def test_constant_embeddings_score_chance_not_one():
    """The review's case: every pair scores the same. Ties are averaged, so R@k = k/N exactly."""
    n = 40
    img, txt = torch.ones(n, 8) / 8 ** 0.5, torch.ones(n, 8) / 8 ** 0.5
    m = retrieval_metrics(img, txt)
    assert m["image_to_text_R@1"] == pytest.approx(1 / n) and m["text_to_image_R@1"] == pytest.approx(1 / n)
    assert m["image_to_text_R@5"] == pytest.approx(5 / n) and m["text_to_image_R@5"] == pytest.approx(5 / n)
    assert retrieval_chance(n) == pytest.approx(m)
    # zero embeddings (a collapsed model) normalise to 0: all ties, the same chance
    z = torch.nn.functional.normalize(torch.zeros(n, 8), dim=-1)
    assert retrieval_metrics(z, z)["image_to_text_R@1"] == pytest.approx(1 / n)
    # zero-shot: constant image embeddings tie every class, so top-1 = 1/C, top-5 = 5/C
    acc = zero_shot_accuracy(torch.randn(16, 4), torch.ones(8, 4), torch.arange(16) % 8)
    assert acc["top1"] == pytest.approx(1 / 8) and acc["top5"] == pytest.approx(5 / 8)


def test_non_finite_embeddings_are_an_error():
    e = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    bad = e.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(EvalError, match=r"non-finite image embeddings \(1 of 10"):
        retrieval_metrics(bad, e)
    bad[3, 1] = float("inf")
    with pytest.raises(EvalError, match="non-finite text embeddings"):
        retrieval_metrics(e, bad)
    with pytest.raises(EvalError, match="non-finite"):
        zero_shot_accuracy(bad, torch.eye(4), torch.zeros(10, dtype=torch.long))


def test_ties_are_averaged():
    """Image 0's caption ties with one other caption (expected R@1 1/2); image 1's with two others (1/3)."""
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    s = retrieval_scores(img, txt, ks=(1, 2))
    # image 0: caption 0 and 3 both score 1.0 -> 1/2; image 1: captions 1 and 2 tie at 1.0 -> 1/2
    assert s["image_to_text_R@1"][:2].tolist() == pytest.approx([0.5, 0.5])
    assert s["image_to_text_R@2"][:2].tolist() == pytest.approx([1.0, 1.0])
    # caption 0 retrieves image 0 (1.0) ahead of image 3 (0.8) and image 2 (0.6): a clean hit
    assert float(s["text_to_image_R@1"][0]) == 1.0
    # one tie counted the model's way would give 1.0, against it 0.0: averaged gives the expectation
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = retrieval_scores(a, a.clone(), ks=(1,))["image_to_text_R@1"]
    assert m.tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_several_captions_per_image():
    """image->text: any correct caption counts; text->image: each caption finds its image, mean per image."""
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 0.8, 0.6], [0, 0, 1.0], [0.1, 0.9, 0], [0.2, 0, 0.8]])
    txt = torch.nn.functional.normalize(txt, dim=-1)
    owner = torch.tensor([0, 1, 2, 0, 2])  # caption 3 is image 0's second caption, but looks like image 1
    s = retrieval_scores(img, txt, owner, ks=(1,))
    assert s["image_to_text_R@1"].tolist() == [1.0, 0.0, 1.0]   # image 0's caption 3 outscores image 1's own
    assert s["text_to_image_R@1"].tolist() == [0.5, 1.0, 1.0]   # caption 3 retrieves image 1, not image 0
    # chance with several captions: image 0 has 2 of 5 captions, so a random top-1 hits it 2/5 of the time
    ch = retrieval_chance(3, owner, ks=(1,))
    assert ch["image_to_text_R@1"] == pytest.approx((2 / 5 + 1 / 5 + 2 / 5) / 3)
    assert ch["text_to_image_R@1"] == pytest.approx(1 / 3)
    with pytest.raises(EvalError, match="at least one caption"):
        retrieval_scores(img, txt[:2], torch.tensor([0, 0]))


def test_majority_class_is_the_baseline():
    labels = torch.tensor([0, 0, 0, 1, 2, -1])
    assert majority_baseline(labels, 3, ks=(1, 2)) == pytest.approx({"top1": 0.6, "top2": 0.8})
    # a model that always answers class 0 reaches the baseline, not beyond
    cls = torch.eye(3)
    assert zero_shot_accuracy(torch.tensor([[1.0, 0, 0]] * 6), cls, labels, ks=(1,))["top1"] == pytest.approx(0.6)


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


def test_trained_model_beats_chance(trained_tiny, colour_eval, tmp_path):
    out = trained_tiny  # 24 steps of 32 at lr 2e-3 on colour_shards (conftest)
    res = evaluate(str(out / "checkpoint.pt"), str(colour_eval), per_example=True)
    assert res["samples"] == 96 and res["skipped"] == {}
    assert res["zeroshot_top1"] > 0.5, res  # chance is about 1/8: the majority class's share
    assert res["chance"]["zeroshot_top1"] == res["chance_top1"] and 0.125 <= res["chance_top1"] < 0.3
    assert res["chance"]["image_to_text_R@1"] == pytest.approx(1 / 96)
    pe = res["per_example"]
    assert len(pe["zeroshot_top1"]) == len(pe["text_to_image_R@5"]) == 96
    assert sum(pe["zeroshot_top1"]) / 96 == pytest.approx(res["zeroshot_top1"])
    # several correct captions per image, read from the json's "captions" list
    multi = tmp_path / "multi"
    write_colour_shards(multi, 8, 1, seed=3, captions=True)
    write_classes(multi)
    m = evaluate(str(out / "checkpoint.pt"), str(multi))
    assert m["samples"] == 8 and m["captions"] == 16


def test_bad_eval_input(trained_tiny, tmp_path):
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
    # a real checkpoint (the shared run of conftest.trained_tiny, read-only) on an eval set without labels
    out = trained_tiny
    with pytest.raises(EvalError, match="has a label"):
        evaluate(str(out / "checkpoint.pt"), str(nolab))
    # --model naming another model than the one the checkpoint records is refused (it used to be ignored)
    with pytest.raises(EvalError, match="--model curate-tiny-32 differs from the model curate-tiny recorded in"):
        evaluate(str(out / "checkpoint.pt"), str(ev), model_name="curate-tiny-32")
    # a diverged checkpoint (NaN in the image projection): one clear error, not R@1 = 1.0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    key = next(k for k in ck["state_dict"] if k.startswith("visual.") and k.endswith("proj"))
    ck["state_dict"][key].fill_(float("nan"))
    torch.save(ck, tmp_path / "nan.pt")
    with pytest.raises(EvalError, match="non-finite image embeddings"):
        evaluate(str(tmp_path / "nan.pt"), str(ev))
    json.loads((out / "summary.json").read_text())


def test_unusable_eval_samples_are_skipped_with_counts(tmp_path):
    """Unlabelled, unknown-label, imageless, textless and undecodable eval samples: counted skips, not errors."""
    import tarfile

    import open_clip

    from curate.train import configs

    configs.register()  # curate-tiny for open_clip (idempotent)

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
