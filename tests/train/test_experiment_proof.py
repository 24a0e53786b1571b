"""Proof helpers of curate experiment: attributes vs their baseline, parallel workers (--arms)."""
from __future__ import annotations

import pytest

from curate.train.stats import above_baseline


def test_learned_needs_the_whole_interval_above_the_baseline():
    assert above_baseline([0.41, 0.43, 0.40, 0.44, 0.42], 0.25)["learned"] is True
    # mean above the baseline but one seed below it and a wide spread: not called learned
    r = above_baseline([0.30, 0.22, 0.35, 0.20, 0.28], 0.25)
    assert r["mean"] == pytest.approx(0.27) and r["learned"] is False
    assert r["diff_ci"][0] < 0 < r["diff_ci"][1]
    # at the baseline exactly (a model that answers the majority class): never learned
    assert above_baseline([0.25] * 5, 0.25)["learned"] is False
    assert above_baseline([0.9], 0.25)["learned"] is None  # one seed: no interval
    assert above_baseline([None, 0.5, 0.52], 0.25)["seeds"] == 2


def test_parallel_workers_must_name_arms_of_the_experiment(tmp_path):
    from curate.train.experiment import Arm, ExperimentSpec, run_experiment
    from curate.train.loop import TrainConfig, TrainError

    spec = ExperimentSpec(arms={"a": Arm("a", shards=["x.tar"])}, eval_set=str(tmp_path / "eval"))
    with pytest.raises(TrainError, match="--arms b: not a data set"):
        run_experiment(spec, str(tmp_path / "out"), TrainConfig(shards=[], output=""), only=["b"])
    with pytest.raises(TrainError, match="--arms b: not a data set"):  # NAME@SEED names one run of an arm
        run_experiment(spec, str(tmp_path / "out"), TrainConfig(shards=[], output=""), only=["a@0", "b@1"])
    assert not (tmp_path / "out").exists()  # refused before anything was written
