"""Training loop: learns, checkpoints load in open_clip unchanged, resume continues the same step, bad data is counted."""
from __future__ import annotations

import json
import shutil
import tarfile

import open_clip
import pytest
import torch

from curate.train import configs
from curate.train.checkpoints import load
from curate.train.loop import TrainConfig, TrainError, lr_at, train

from .conftest import add, write_colour_shards

configs.register()  # curate-tiny for open_clip.create_model_and_transforms below (idempotent)


def cfg(shards, out, **kw) -> TrainConfig:
    base = dict(shards=[str(shards)], output=str(out), samples_seen=256, batch_size=32, lr=2e-3, warmup=2,
                workers=0, log_every=1, shuffle_buffer=64)
    base.update(kw)
    return TrainConfig(**base)


def log_of(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_loss_decreases_and_checkpoint_loads_in_open_clip(trained_tiny):
    """The shared run (conftest.trained_tiny) is cfg(colour_shards, out, samples_seen=32 * 24)."""
    out = trained_tiny
    s = json.loads((out / "summary.json").read_text())  # what train() returned
    losses = [r["loss"] for r in log_of(out)]
    assert s["steps"] == 24 and len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
    rec = log_of(out)[-1]
    assert {"step", "loss", "samples_per_s", "data_wait_frac", "skipped", "lr"} <= set(rec)
    assert s["skipped_total"] == 0

    ckpt = out / "checkpoint.pt"
    model, _, _ = open_clip.create_model_and_transforms("curate-tiny", pretrained=str(ckpt))
    saved = load(ckpt)["state_dict"]
    assert set(model.state_dict()) == set(saved)
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)


def test_resume_continues_from_the_same_step(colour_shards, tmp_path):
    """Steps of 8 samples: what is checked (step numbers, optimiser state, lr schedule, settings) does not
    depend on the batch size, and a quarter of the batch is a quarter of the compute."""
    full = tmp_path / "full"
    train(cfg(colour_shards, full, samples_seen=8 * 6, batch_size=8, checkpoint_every=3))
    assert (full / "checkpoints" / "step_00000003.pt").is_file()
    # a run killed after step 3: its folder holds the step-3 checkpoint as the latest
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(full / "checkpoints" / "step_00000003.pt", part / "checkpoint.pt")
    s = train(cfg(colour_shards, part, samples_seen=8 * 6, batch_size=8), resume=True)
    steps = [r["step"] for r in log_of(part)]
    assert steps == [4, 5, 6] and s["steps"] == 6 and s["steps_this_run"] == 3
    # the summary's first loss is the run's step 1, not the resumed process's first step (step 4)
    assert s["first_loss"] == log_of(full)[0]["loss"] and log_of(full)[0]["step"] == 1
    assert s["final_loss"] == log_of(part)[-1]["loss"] and s["final_loss_step"] == 6
    ck = load(part / "checkpoint.pt")
    assert ck["step"] == 6 and ck["final"]
    # the optimiser continued: Adam's step counter is the global step
    assert int(next(iter(ck["optimizer"]["state"].values()))["step"]) == 6
    # the resumed lr follows the same schedule
    assert log_of(part)[0]["lr"] == pytest.approx(lr_at(3, 2e-3, 2, 6))
    # resuming a finished run does nothing and leaves it as it was (it used to rewrite null losses)
    kept = {f: (part / f).read_bytes() for f in ("summary.json", "log.jsonl", "checkpoint.pt")}
    again = train(cfg(colour_shards, part, samples_seen=8 * 6, batch_size=8), resume=True)
    assert again["already_complete"] and again["final_loss"] == s["final_loss"] is not None
    assert {f: (part / f).read_bytes() for f in kept} == kept

    with pytest.raises(TrainError, match="different settings"):
        train(cfg(colour_shards, part, samples_seen=8 * 6, batch_size=8, lr=1e-4), resume=True)
    with pytest.raises(TrainError, match="already holds"):
        train(cfg(colour_shards, part, samples_seen=8 * 6, batch_size=8))
    with pytest.raises(TrainError, match="no checkpoint.pt"):
        train(cfg(colour_shards, tmp_path / "none"), resume=True)


def test_siglip_checkpoint_loads_unchanged(colour_shards, tmp_path):
    out = tmp_path / "sig"
    s = train(cfg(colour_shards, out, samples_seen=64, loss="siglip"))
    assert s["steps"] == 2
    model, _, _ = open_clip.create_model_and_transforms("curate-tiny", pretrained=str(out / "checkpoint.pt"))
    assert "loss_state" in load(out / "checkpoint.pt") and "logit_bias" in load(out / "checkpoint.pt")["loss_state"]


def test_resnet_tower_trains_and_loads_in_open_clip(colour_shards, tmp_path):
    """curate-tiny-rn (open_clip's ModifiedResNet at 64 px) trains through the same loop and loads back."""
    out = tmp_path / "rn"
    s = train(cfg(colour_shards, out, samples_seen=64, model="curate-tiny-rn"))
    assert s["steps"] == 2
    model, _, preprocess = open_clip.create_model_and_transforms("curate-tiny-rn", pretrained=str(out / "checkpoint.pt"))
    assert type(model.visual).__name__ == "ModifiedResNet" and model.visual.image_size == 64
    x = model.encode_image(torch.zeros(2, 3, 64, 64))
    assert x.shape == (2, 128) and torch.isfinite(x).all()


def test_bad_samples_are_counted_not_silent(tmp_path):
    root = tmp_path / "bad"
    write_colour_shards(root, 64, 2)
    (root / "000002.tar").write_bytes(b"")                       # empty shard
    (root / "000003.tar").write_bytes(b"not a tar at all" * 100)  # corrupt shard
    with tarfile.open(root / "000004.tar", "w") as tf:
        add(tf, "a.txt", b"caption without image")
        add(tf, "b.jpg", (root / "000000.tar").read_bytes()[:0] or b"\xff\xd8 broken jpeg")
        add(tf, "b.txt", b"a broken image")
        with tarfile.open(root / "000000.tar") as src:
            img = src.extractfile("000000.jpg").read()
        add(tf, "c.jpg", img)                                    # image without text
    s = train(cfg(root, tmp_path / "run", samples_seen=64, batch_size=16))
    sk = s["skipped"]
    assert sk.get("missing_image") == 1 and sk.get("missing_text") == 1 and sk.get("image_decode_error") == 1
    assert sk.get("shard_error", 0) >= 1
    assert log_of(tmp_path / "run")[-1]["skipped"] == sk


def test_only_bad_shards_is_a_clear_error(tmp_path):
    root = tmp_path / "allbad"
    root.mkdir()
    (root / "000000.tar").write_bytes(b"garbage" * 50)
    with pytest.raises(TrainError, match="ran out of usable samples"):
        train(cfg(root, tmp_path / "run", samples_seen=64))
    with pytest.raises(TrainError, match="shard not found"):
        train(cfg(tmp_path / "nope.tar", tmp_path / "run2"))
    with pytest.raises(TrainError, match="unknown model"):
        train(cfg(root, tmp_path / "run3", model="no-such-model"))


def test_fewer_usable_samples_than_a_batch_is_refused(tmp_path):
    """A truncated shard with a sample or two trained on copies of them (loss stuck at ln(batch)); now refused."""
    root = tmp_path / "few"
    write_colour_shards(root, 1, 1)  # (a cut tar is refused as truncated: test_truncated_shard_is_refused)
    with pytest.raises(TrainError, match=r"only 1 usable sample\(s\) in the shards, fewer than the batch size 16: "
                                         r"every batch would repeat them; skipped 0"):
        train(cfg(root, tmp_path / "run", samples_seen=32, batch_size=16))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with tarfile.open(root / "000001.tar", "w") as tf:  # skipped samples are named in the refusal
        add(tf, "x.jpg", b"\xff\xd8 broken jpeg")
        add(tf, "x.txt", b"a broken image")
    with pytest.raises(TrainError, match=r"only 1 usable .* skipped \{'image_decode_error': 1\}"):
        train(cfg(root, tmp_path / "run", samples_seen=32, batch_size=16))


def _cut(tar, at: int) -> None:
    """Keep the tar's first `at` bytes, as an interrupted copy does."""
    tar.write_bytes(tar.read_bytes()[:at])


def test_truncated_shard_is_refused(tmp_path):
    """A shard cut exactly at a member boundary (no end-of-archive block) read as a shorter shard, silently;
    now training refuses it, naming the file, in one line from a data loader worker too. Cut inside a header
    or a member's data it is refused the same way; an intact shard, even without the record padding, is not."""
    from curate.train.data import SkipCounter, TruncatedShard, raw_samples

    root = tmp_path / "cut"
    write_colour_shards(root, 64, 2)
    tar = root / "000001.tar"
    with tarfile.open(tar) as tf:
        members = tf.getmembers()
    assert len(members) == 96
    end = members[-1].offset_data + -(-members[-1].size // 512) * 512  # the last member's padded end
    whole = tar.read_bytes()
    _cut(tar, members[60].offset)  # at a member boundary: 20 whole samples and no end-of-archive block
    with pytest.raises(TrainError, match=r"^truncated tar \S*cut/000001.tar: after 60 member\(s\) "
                                         r"\(the last '000051.json'\) it ends without the tar end-of-archive block") as err:
        train(cfg(root, tmp_path / "run", samples_seen=64, batch_size=16, workers=2))  # one shard per worker
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "summary.json").exists()

    for at in (members[60].offset + 100, members[60].offset_data + 10):  # inside a header, inside a member's data
        tar.write_bytes(whole[:at])
        with pytest.raises(TruncatedShard, match="000001.tar"):
            list(raw_samples([str(tar)], SkipCounter(), split=False))
    for at in (len(whole), end + 512):  # intact; one end block and no padding (a minimal tar writer's)
        tar.write_bytes(whole[:at])
        handler = SkipCounter()
        assert len(list(raw_samples([str(tar)], handler, split=False))) == 32 and not handler.counts


def test_video_shards_without_video_frames_suggest_it(tmp_path):
    """Image training on clip shards skips every sample as missing_image: the error names --video-frames."""
    root = tmp_path / "clips"
    root.mkdir()
    with tarfile.open(root / "000000.tar", "w") as tf:
        for i in range(4):
            add(tf, f"{i:06d}.mp4", b"\x00\x00\x00\x18ftypmp42 not decoded here")
            add(tf, f"{i:06d}.txt", b"a red square moving left")
    with pytest.raises(TrainError, match=r"skipped \{'missing_image': 4\}; the shards hold videos .* --video-frames"):
        train(cfg(root, tmp_path / "run", samples_seen=16, batch_size=4))
    with pytest.raises(TrainError, match="empty, corrupt or unlabelled shards") as err:  # not for image shards
        (root / "000000.tar").write_bytes(b"garbage" * 50)
        train(cfg(root, tmp_path / "run2", samples_seen=16, batch_size=4))
    assert "video" not in str(err.value)
