"""`curate experiment` internals on constructed data: interval verdicts, content fingerprints and run reuse,
random-subset controls, selection on the validation split only. Tiny budgets (one or two steps)."""
from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

from curate.train import stats
from curate.train.experiment import Arm, ExperimentSpec, run_experiment
from curate.train.fingerprint import DigestCache, shards_fingerprint
from curate.train.loop import TrainConfig, TrainError
from curate.train.subsets import usable_keys, write_random_subset

from .conftest import write_classes, write_colour_shards


def test_paired_t_interval_matches_the_textbook():
    a, b = [0.30, 0.32, 0.31, 0.35, 0.33], [0.20, 0.25, 0.22, 0.21, 0.24]
    t = stats.paired_t_interval(a, b)
    d = np.subtract(a, b)
    half = 2.7764451 * d.std(ddof=1) / np.sqrt(5)  # t_{0.975, 4}
    assert t["diff"] == pytest.approx(d.mean()) and t["lo"] == pytest.approx(d.mean() - half)
    assert t["hi"] == pytest.approx(d.mean() + half)
    assert stats.paired_t_interval([0.1], [0.2])["lo"] is None
    # equal differences in every seed (accuracy in steps of 1/100): no zero-width interval, no verdict
    flat = stats.paired_t_interval([0.3, 0.5], [0.2, 0.4])  # 0.1 and 0.09999999999999998 in floats
    assert flat["lo"] is None and flat["no_spread"] and abs(flat["diff"] - 0.1) < 1e-12
    assert stats.verdict(flat, {"lo": 0.001, "hi": 0.02}) == stats.NO_SPREAD


def test_verdicts_come_from_both_intervals():
    rng = np.random.default_rng(0)
    good = (rng.random((5, 400)) < 0.6).astype(float)
    bad = (rng.random((5, 400)) < 0.3).astype(float)
    same = (rng.random((5, 400)) < 0.3).astype(float)
    t = stats.paired_t_interval(good.mean(1), bad.mean(1))
    assert stats.verdict(t, stats.bootstrap_interval(good, bad)) == stats.BETTER
    assert stats.verdict(stats.paired_t_interval(bad.mean(1), good.mean(1)),
                         stats.bootstrap_interval(bad, good)) == stats.WORSE
    assert stats.verdict(stats.paired_t_interval(same.mean(1), bad.mean(1)),
                         stats.bootstrap_interval(same, bad)) == stats.NONE
    # the old rule's failure: a consistent small gain across seeds with a wide eval-sampling interval is not called
    t_narrow = {"lo": 0.01, "hi": 0.02}
    assert stats.verdict(t_narrow, {"lo": -0.01, "hi": 0.04}) == stats.NONE
    assert stats.verdict({"lo": None}, {"lo": 0.1, "hi": 0.2}) == stats.TOO_FEW
    # NaN examples (no attribute label) are left out of the bootstrap
    a = np.array([[1.0, np.nan, 0.0]] * 2)
    assert stats.bootstrap_interval(a, np.zeros((2, 3)))["examples"] == 2


def test_fingerprint_sees_one_changed_byte_and_caches(tmp_path):
    paths = write_colour_shards(tmp_path / "s", 16, 2)
    cache = DigestCache(tmp_path / "cache.json")
    fp = shards_fingerprint([str(tmp_path / "s")], cache)
    assert fp["files"] == 2 and fp["bytes"] == sum(p.stat().st_size for p in paths)
    cache.save()
    again = DigestCache(tmp_path / "cache.json")
    assert shards_fingerprint([str(tmp_path / "s")], again) == fp and len(again.entries) == 2
    data = bytearray(paths[1].read_bytes())
    data[600] ^= 1
    paths[1].write_bytes(bytes(data))
    assert shards_fingerprint([str(tmp_path / "s")], again)["sha256"] != fp["sha256"]
    # a copy elsewhere has the same content fingerprint
    shutil.copytree(tmp_path / "s", tmp_path / "copy")
    assert shards_fingerprint([str(tmp_path / "copy")], again) == shards_fingerprint([str(tmp_path / "s")], again)


def test_random_subset_is_seeded_sized_and_byte_identical(tmp_path):
    write_colour_shards(tmp_path / "raw", 40, 3)
    a = write_random_subset([str(tmp_path / "raw")], 12, tmp_path / "a", seed=0)
    b = write_random_subset([str(tmp_path / "raw")], 12, tmp_path / "b", seed=0)
    c = write_random_subset([str(tmp_path / "raw")], 12, tmp_path / "c", seed=1)
    assert len(usable_keys(a)) == 12
    cache = DigestCache()
    assert shards_fingerprint(a, cache) == shards_fingerprint(b, cache) != shards_fingerprint(c, cache)
    src = {}
    for t in sorted((tmp_path / "raw").glob("*.tar")):
        with tarfile.open(t) as tf:
            src.update({m.name: tf.extractfile(m).read() for m in tf})
    with tarfile.open(a[0]) as tf:
        jpgs = [tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")]
    assert len(jpgs) == 12 and all(j in src.values() for j in jpgs)
    with pytest.raises(ValueError, match="source has 40"):
        write_random_subset([str(tmp_path / "raw")], 41, tmp_path / "d", seed=0)


@pytest.fixture()
def tiny(tmp_path):
    write_colour_shards(tmp_path / "train", 64, 2)
    write_colour_shards(tmp_path / "eval", 24, 1, seed=1)
    write_classes(tmp_path / "eval")
    base = TrainConfig(shards=[], output="", model="curate-tiny-32", samples_seen=32, batch_size=32, warmup=1,
                       workers=0, shuffle_buffer=32, log_every=1)
    return tmp_path, base


def _flip_byte(path, offset=600):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def test_reuse_only_for_the_same_contents(tiny):
    """Same config and bytes: reused. One byte of a shard: retrained. One byte of the eval set: re-evaluated."""
    root, base = tiny
    spec = lambda: ExperimentSpec(arms={"all": Arm("all", shards=[str(root / "train")])},  # noqa: E731
                                  eval_set=str(root / "eval"), seeds=1)
    logs: list[str] = []
    out = root / "exp"
    r1 = run_experiment(spec(), str(out), base, log=logs.append)
    run = out / "runs" / "all" / "seed0"
    assert (run / "fingerprints.json").is_file() and r1["fingerprints"]["eval"]["files"] == 2
    assert r1["runs"][0]["fingerprints"]["shards"]["files"] == 2
    digest = json.loads((run / "summary.json").read_text())["model_digest"]

    logs.clear()
    run_experiment(spec(), str(out), base, log=logs.append)
    assert any("reusing" in x for x in logs) and not any("training" in x for x in logs)
    # a summary without losses (as `curate train --resume` on a finished run once wrote) is reused, not fatal
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "first_loss": None, "final_loss": None}))
    logs.clear()
    run_experiment(spec(), str(out), base, log=logs.append)
    assert any("reusing" in x for x in logs) and any("loss n/a" in x for x in logs), logs
    (run / "summary.json").write_text(json.dumps(summary))

    _flip_byte(sorted((root / "eval").glob("*.tar"))[0])
    logs.clear()
    r3 = run_experiment(spec(), str(out), base, log=logs.append)
    assert any("re-evaluating" in x for x in logs) and not any("training" in x for x in logs)
    assert json.loads((run / "summary.json").read_text())["model_digest"] == digest
    assert r3["fingerprints"]["eval"]["sha256"] != r1["fingerprints"]["eval"]["sha256"]
    assert json.loads((run / "eval.json").read_text())["eval_fingerprint"] == r3["fingerprints"]["eval"]["sha256"]

    _flip_byte(sorted((root / "train").glob("*.tar"))[1])
    logs.clear()
    r4 = run_experiment(spec(), str(out), base, log=logs.append)
    assert any("retraining (shard contents changed" in x for x in logs), logs
    assert r4["runs"][0]["fingerprints"]["shards"]["sha256"] != r1["runs"][0]["fingerprints"]["shards"]["sha256"]


def test_settings_are_chosen_on_the_validation_split_only(tiny):
    root, base = tiny
    arms = {"all": Arm("all", shards=[str(root / "train")])}
    with pytest.raises(TrainError, match="validation"):
        run_experiment(ExperimentSpec(arms=dict(arms), eval_set=str(root / "eval"), sweep={"lr": [1e-3]}),
                       str(root / "x"), base)
    shutil.copytree(root / "eval", root / "same")
    with pytest.raises(TrainError, match="eval set's content"):
        run_experiment(ExperimentSpec(arms=dict(arms), eval_set=str(root / "eval"), validation_set=str(root / "same"),
                                      sweep={"lr": [1e-3]}), str(root / "x"), base)
    write_colour_shards(root / "val", 24, 1, seed=2)
    write_classes(root / "val")
    res = run_experiment(ExperimentSpec(arms=dict(arms), eval_set=str(root / "eval"), validation_set=str(root / "val"),
                                        sweep={"lr": [1e-4, 3e-3]}, seeds=1), str(root / "exp"), base, log=lambda m: None)
    sel = res["selection"]
    assert len(sel["candidates"]) == 2 and sel["chosen"]["lr"] in (1e-4, 3e-3)
    assert res["settings"]["lr"] == sel["chosen"]["lr"]
    for c in sel["candidates"]:  # every selection run was scored on the validation split, none on the eval split
        tag = f"lr{c['setting']['lr']}"
        ev = json.loads((root / "exp" / "selection" / tag / "all" / "eval.json").read_text())
        assert ev["eval_set"] == str(root / "val")


def test_config_arms_controls_and_primary_metrics_are_checked_before_any_run(tiny):
    root, base = tiny
    doc = {"arms": {"curated": {"shards": str(root / "train")}, "raw": [str(root / "train")],
                    "random": {"random_subset_of": "raw", "size_of": "curated"}},
           "eval_set": str(root / "eval"), "seeds": 5, "primary_metrics": ["zeroshot_top1", "image_to_text_R@1"],
           "train": {"samples_seen": 64}}
    from curate.train.experiment import spec_from_config

    spec, train_cfg = spec_from_config(doc)
    spec.validate()
    assert spec.compare == [("curated", "raw"), ("curated", "random")] and train_cfg == {"samples_seen": 64}
    assert spec.arms["random"].random_subset_of == "raw" and spec.arms["raw"].shards == [str(root / "train")]
    # a misspelt key at any level is refused in one line naming it and the valid ones, never defaulted
    for bad, key, valid in ((dict(doc, seed=1), "'seed'", "seeds"),
                            (dict(doc, primary_metric=["x"]), "'primary_metric'", "primary_metrics"),
                            (dict(doc, train={"samples_seen": 64, "learning_rate": 0.5}), "'train.learning_rate'", "lr"),
                            (dict(doc, arms={**doc["arms"], "raw": {"shard": "x"}}), "'arms.raw.shard'", "shards")):
        with pytest.raises(TrainError, match=f"unknown key {key}") as err:
            spec_from_config(bad, where="exp.yaml")
        assert str(err.value).startswith("exp.yaml: ") and valid in str(err.value) and "\n" not in str(err.value)
    assert spec_from_config(dict(doc, train={"samples_seen": 64, "lr": 0.5}))[1] == {"samples_seen": 64, "lr": 0.5}
    bad = dict(doc, primary_metrics=["accuracy"])
    with pytest.raises(TrainError, match="primary metric"):
        run_experiment(spec_from_config(bad)[0], str(root / "x"), base)
    loop = dict(doc, arms={**doc["arms"], "random": {"random_subset_of": "random", "size_of": "curated"}})
    with pytest.raises(TrainError, match="random_subset_of"):
        spec_from_config(loop)[0].validate()
    assert not (root / "x" / "runs").exists()  # nothing was trained


def test_a_refused_experiment_trains_and_writes_nothing(tiny):
    """Every arm is checked before the first run trains, and a refusal leaves no output folder behind."""
    root, base = tiny
    out = root / "refused"
    arms = {"curated": Arm("curated", shards=[str(root / "train")]), "gone": Arm("gone", shards=[str(root / "nope")])}
    with pytest.raises(TrainError, match="data set 'gone': shard not found"):
        run_experiment(ExperimentSpec(arms=arms, eval_set=str(root / "eval"), seeds=1), str(out), base)
    assert not out.exists()
    # a random subset bigger than its source is refused before any arm trains (it used to fail after them)
    write_colour_shards(root / "small", 16, 1, seed=3)
    arms = {"small": Arm("small", shards=[str(root / "small")]), "big": Arm("big", shards=[str(root / "train")]),
            "random": Arm("random", random_subset_of="small", size_of="big")}
    with pytest.raises(TrainError, match=r"random: a random subset of small \(16 usable samples\) with the size "
                                         r"of big \(64\) cannot be drawn"):
        run_experiment(ExperimentSpec(arms=arms, eval_set=str(root / "eval"), seeds=1), str(out), base)
    assert not out.exists()
    # an arm that is (or holds a copy of) the eval set is refused; so is one holding the validation set
    shutil.copy(next((root / "eval").glob("*.tar")), root / "small" / "copied.tar")
    arms = {"leak": Arm("leak", shards=[str(root / "small")]), "big": Arm("big", shards=[str(root / "train")])}
    with pytest.raises(TrainError, match=r"data set 'leak': .*copied.tar has the content of eval set file .*000000.tar"):
        run_experiment(ExperimentSpec(arms=arms, eval_set=str(root / "eval"), seeds=1), str(out), base)
    write_colour_shards(root / "val", 24, 1, seed=2)
    write_classes(root / "val")
    arms = {"val": Arm("val", shards=[str(root / "val")]), "big": Arm("big", shards=[str(root / "train")])}
    with pytest.raises(TrainError, match=r"data set 'val': .* has the content of validation set file"):
        run_experiment(ExperimentSpec(arms=arms, eval_set=str(root / "eval"), validation_set=str(root / "val"),
                                      sweep={"lr": [1e-3]}, seeds=1), str(out), base)
    assert not out.exists()
