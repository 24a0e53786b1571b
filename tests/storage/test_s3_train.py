"""Training, evaluation and experiments with everything on a real S3-compatible server (moto_server on
loopback; issue 14 item 1): `train -o s3://` writes each checkpoint, log and summary as whole objects, a
run stopped after a checkpoint resumes from the s3 checkpoint, `eval` reads a checkpoint and an eval set
on s3 and writes its JSON there, and `experiment` trains on s3 shards (a random-subset control included),
evaluates on an s3 eval set and keeps results.json and the report on s3, reusing them when run again.
Shards are the demo's labelled tars (no Ray, no download): what is tested is the storage, not curation."""
from __future__ import annotations

import io
import json

import fsspec
import pytest
import torch

from curate.demo.images import classnames
from curate.demo.splits import write_split
from tests.conftest import curate_inprocess


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)  # no cached listings: see the bucket as it is


@pytest.fixture(scope="module")
def data(tmp_path_factory, s3_env):
    """A bucket holding data/train (16 samples in one tar) and data/eval (12 labelled samples + classes.json)."""
    import uuid

    root = tmp_path_factory.mktemp("s3train")
    write_split(root / "train", 16, seed=0, stream=1, balanced=False)
    write_split(root / "eval", 12, seed=0, stream=2, balanced=True)
    # the demo's class names with one prompt and no attribute tasks: 64 text encodes per eval, not ~1400
    (root / "eval" / "classes.json").write_text(json.dumps({"classnames": classnames(), "templates": ["a {}."]}))
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    fs = _fs()
    fs.mkdir(bucket)
    for f in sorted(root.rglob("*")):
        if f.is_file():
            fs.put_file(str(f), f"{bucket}/data/{f.relative_to(root).as_posix()}")
    return bucket


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Fetched checkpoints and the experiment's local working folder go under the test's tmp_path."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class _Stop(Exception):
    """Stands for a killed training process: raised from the log callback after the step-2 checkpoint."""


def test_train_to_s3_resume_and_eval(data, capsys):
    from curate.train.loop import TrainConfig, train

    b, fs = data, _fs()
    out = f"s3://{b}/train"
    cfg = TrainConfig(shards=[f"s3://{b}/data/train"], output=out, samples_seen=32, batch_size=8, warmup=1,
                      workers=0, checkpoint_every=2, log_every=1)

    def stop_at_3(rec):
        if rec["step"] == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, on_log=stop_at_3)
    # what the stopped run left on s3: its step-2 checkpoint, as the latest too, and the log up to it; no summary
    assert fs.exists(f"{b}/train/checkpoints/step_00000002.pt") and not fs.exists(f"{b}/train/summary.json")
    latest = torch.load(io.BytesIO(fs.cat_file(f"{b}/train/checkpoint.pt")), weights_only=True)
    assert latest["step"] == 2 and not latest["final"]
    assert [json.loads(x)["step"] for x in fs.cat_file(f"{b}/train/log.jsonl").decode().splitlines()] == [1, 2]

    # a new run into the same output is refused (one line, exit 2); --resume continues from the s3 checkpoint
    r = curate_inprocess("train", f"s3://{b}/data/train", "--samples-seen", "32", "--batch-size", "8", "-o", out,
                         capsys=capsys)
    assert r.returncode == 2 and "already holds a training run" in r.stderr, r.stderr
    s = train(cfg, resume=True)
    assert (s["steps"], s["steps_this_run"], s["checkpoint"]) == (4, 2, f"{out}/checkpoint.pt")
    assert json.loads(fs.cat_file(f"{b}/train/summary.json"))["model_digest"] == s["model_digest"]
    final = torch.load(io.BytesIO(fs.cat_file(f"{b}/train/checkpoint.pt")), weights_only=True)
    assert final["step"] == 4 and final["final"]
    steps = [json.loads(x)["step"] for x in fs.cat_file(f"{b}/train/log.jsonl").decode().splitlines()]
    assert steps[:2] == [1, 2] and steps[-1] == 4
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{b}/train")) == [
        "checkpoint.pt", "checkpoints", "config.json", "log.jsonl", "summary.json"]  # no temporary objects

    # eval: checkpoint, eval set and the metrics file all on s3
    r = curate_inprocess("eval", f"{out}/checkpoint.pt", "--eval-set", f"s3://{b}/data/eval", "-o",
                         f"s3://{b}/eval/metrics.json", capsys=capsys)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(fs.cat_file(f"{b}/eval/metrics.json"))
    assert metrics["samples"] == 12 and metrics["checkpoint"] == f"{out}/checkpoint.pt"
    assert 0 <= metrics["zeroshot_top1"] <= 1
    # a checkpoint that is not there: one line naming it
    r = curate_inprocess("eval", f"s3://{b}/nope.pt", "--eval-set", f"s3://{b}/data/eval", capsys=capsys)
    assert r.returncode == 2 and f"s3://{b}/nope.pt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_experiment_on_s3(data, capsys):
    b, fs = data, _fs()
    args = ["experiment", f"raw=s3://{b}/data/train", "--random-subset", "ctrl=raw:raw", "--eval-set",
            f"s3://{b}/data/eval", "--seeds", "1", "--samples-seen", "8", "--batch-size", "8", "--warmup", "1",
            "--workers", "0", "-o", f"s3://{b}/exp"]
    r = curate_inprocess(*args, capsys=capsys)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(fs.cat_file(f"{b}/exp/results.json"))
    assert [(x["set"], x["dir"]) for x in res["runs"]] == [
        ("raw", f"s3://{b}/exp/runs/raw/seed0"), ("ctrl", f"s3://{b}/exp/runs/ctrl/seed0")]
    for name in ("report.html", "report.md", "runs/raw/seed0/checkpoint.pt", "runs/ctrl/seed0/eval.json"):
        assert fs.exists(f"{b}/exp/{name}"), name
    # run again: the runs kept on s3 are reused (same settings and bytes), nothing is retrained
    r = curate_inprocess(*args, capsys=capsys)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("reusing") == 2 and "training" not in r.stderr, r.stderr
