"""Video-text training: the storyboard data path on real clip tars, the video eval split and its scores, and a
tiny CPU run of examples/video_experiment.py's code path (real PyAV videos, real Ray runs, real training)."""
from __future__ import annotations

import io
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from curate.train import video_data  # noqa: E402
from curate.train.data import decode_sample, raw_samples, SkipCounter  # noqa: E402
from curate.train.evaluate import (majority_baseline, read_eval_set, retrieval_chance,  # noqa: E402
                                   retrieval_scores, zero_shot_scores)
from curate.train.subsets import usable_keys  # noqa: E402
from curate.video import synth  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _red_x(frame: np.ndarray) -> float:
    """Mean column of the red shape's pixels in one frame."""
    ys, xs = np.nonzero((frame[..., 0] > 150) & (frame[..., 1] < 100))
    return float(xs.mean())


@pytest.fixture(scope="module")
def clip_tar(tmp_path_factory):
    """A clip shard as curate writes it: a moving clip, a clip with a corrupt video, a jpg-only sample."""
    tar = tmp_path_factory.mktemp("clips") / "000000.tar"
    right = synth.scenes_video([synth.Scene("circle", "red", "right", "black", 2.0)], 10, 64, seed=1)
    with tarfile.open(tar, "w") as tf:
        _add(tf, "a.mp4", right)
        _add(tf, "a.txt", b"a small red circle moves right")
        _add(tf, "b.mp4", b"\x00\x01 not a video")
        _add(tf, "b.txt", b"a broken upload")
        _add(tf, "c.txt", b"a sample without a picture")
    return tar, right


def test_storyboard_keeps_time_order(clip_tar):
    _, right = clip_tar
    frames = video_data.sample_frames(right, 4)
    assert frames.shape == (4, video_data.FRAME_SIDE, video_data.FRAME_SIDE, 3)
    xs = [_red_x(f) for f in frames]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 20  # first frame left, last frame right
    board = np.asarray(video_data.video_image(right, 4))
    side = video_data.FRAME_SIDE
    assert board.shape == (2 * side, 2 * side, 3)  # 2x2 grid, row by row
    assert np.array_equal(board[side:, side:], frames[3]) and np.array_equal(board[:side, :side], frames[0])
    assert video_data.grid_shape(3) == (2, 2) and video_data.grid_shape(9) == (3, 3)
    with pytest.raises(ValueError):
        video_data.video_image(right, 0)


def test_clip_shards_yield_storyboards_and_text(clip_tar):
    tar, _ = clip_tar
    skips: Counter = Counter()
    got = []
    for s in raw_samples([str(tar)], SkipCounter(), split=False):
        r = decode_sample(s, lambda im: torch.from_numpy(np.asarray(im).copy()), skips, video_frames=3)
        if r is not None:
            got.append(r)
    assert len(got) == 1 and got[0][1] == "a small red circle moves right"
    assert tuple(got[0][0].shape) == (128, 128, 3)  # 3 frames in a 2x2 grid of 64 px cells
    assert skips == Counter({"image_decode_error": 1, "missing_image": 1})
    assert [k for _, k in usable_keys([str(tar)])] == ["a", "b"]  # both have a video and a text
    # without --video-frames a clip shard has no image for training: counted, never guessed
    skips.clear()
    for s in raw_samples([str(tar)], SkipCounter(), split=False):
        decode_sample(s, lambda im: im, skips)
    assert skips == Counter({"missing_image": 3})


def test_video_eval_split_scores_chance_for_constant_embeddings(tmp_path):
    from curate.demo import video_proof

    d = video_proof.write_split(tmp_path / "eval", 12, 0, video_proof.EVAL_STREAM)
    meta = json.loads((d / "classes.json").read_text())
    assert meta["classnames"] == ["left", "right", "up", "down"]
    assert {a["name"] for a in meta["attributes"]} == {"colour", "shape", "size", "background"}
    data = read_eval_set(d, lambda im: torch.zeros(1), meta, video_frames=4)
    n = len(data["texts"])
    assert n == 12 and data["skipped"] == {} and all("moves" in t for t in data["texts"])
    assert set(data["labels"].tolist()) <= {0, 1, 2, 3} and (data["attrs"]["colour"] >= 0).all()
    # constant embeddings: text->video R@k is k/N, zero-shot ties give 1/classes (below or at the majority)
    const = retrieval_scores(torch.ones(n, 4), torch.ones(n, 4))
    assert float(const["text_to_image_R@1"].mean()) == pytest.approx(1 / n)
    assert float(const["text_to_image_R@5"].mean()) == pytest.approx(5 / n)
    assert retrieval_chance(n)["text_to_image_R@1"] == pytest.approx(1 / n)
    zs = zero_shot_scores(torch.ones(n, 4), torch.eye(4), data["labels"])
    assert float(zs["top1"].mean()) == pytest.approx(1 / 4)
    assert majority_baseline(data["labels"], 4)["top1"] >= 1 / 4
    # embeddings that know the answer score 1.0: the scores can fail both ways
    perfect = torch.nn.functional.one_hot(data["labels"], 4).float()
    assert float(zero_shot_scores(perfect, torch.eye(4), data["labels"])["top1"].mean()) == 1.0
    assert float(retrieval_scores(torch.eye(n), torch.eye(n))["text_to_image_R@1"].mean()) == 1.0


def test_example_code_path_tiny(ray_address, tmp_path, capsys):
    """examples/video_experiment.py end to end at a toy size: corpus, both curate runs, curate experiment."""
    from tests.conftest import curate_inprocess

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import video_experiment as ve
    finally:
        sys.path.remove(str(ROOT / "examples"))
    from curate.demo.video_proof import kinds

    out = tmp_path / "vx"
    cur = ve.prepare(out, videos=16, eval_n=12, ray_address=ray_address)
    plan = kinds(16, 0)
    assert cur["curated"]["static"]["clip dropped/clip_static"] == plan.count("static")
    assert cur["curated"]["duplicate"]["clip dropped/near_duplicate_clip"] >= plan.count("duplicate")
    assert cur["curated"]["two_scene"]["video dropped/split_into_clips"] == plan.count("two_scene")
    assert cur["raw"]["two_scene"] == {"video ok": plan.count("two_scene")}  # raw keeps them whole
    # the documented `curate train --video-frames` and `curate eval` on the curated clip shards
    ck = tmp_path / "train"
    proc = curate_inprocess("train", str(out / "curated" / "shards"), "--video-frames", "4", "--model", "curate-tiny-32",
                            "--samples-seen", "16", "--batch-size", "8", "--workers", "0", "-o", str(ck), capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = curate_inprocess("eval", str(ck / "checkpoint.pt"), "--eval-set", str(out / "corpus" / "eval"), capsys=capsys)
    assert proc.returncode == 0 and "zero-shot colour" in proc.stdout, proc.stderr[-2000:]
    a = ve.args(["--seeds", "2", "--samples-seen", "32", "--batch-size", "8", "--frames", "4"])  # 11 usable clips in an arm: batch 16 is now refused
    proc = curate_inprocess(*ve.experiment_argv(out, a), capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "experiment" / "results.json").read_text())
    assert res["settings"]["video_frames"] == 4
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("curated", "raw"), ("curated", "random")}
    assert res["primary_metrics"] == list(ve.PRIMARY)
    assert {r["eval"]["video_frames"] for r in res["runs"]} == {4} and len(res["runs"]) == 6
    assert all(r["eval"]["samples"] == 12 for r in res["runs"])
    ve.publish(out, tmp_path / "published")
    report = (tmp_path / "published" / "report.md").read_text()
    assert "| curated | static | clip dropped/clip_static |" in report and str(out) not in report
