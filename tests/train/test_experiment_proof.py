"""Proof helpers of curate experiment: attributes vs their baseline, parallel workers (--arms)."""
from __future__ import annotations

import pytest

from curate.train.stats import above_baseline


def test_learned_needs_the_whole_interval_above_the_baseline():
    assert above_baseline([0.41, 0.43, 0.40, 0.44, 0.42], 0.25)["learned"] is True
    # mean above the baseline but one seed below it and a wide spread: not called learned, nor "not learned"
    r = above_baseline([0.30, 0.22, 0.35, 0.20, 0.28], 0.25)
    assert r["mean"] == pytest.approx(0.27) and r["learned"] is None
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
    spec.seeds = 1  # a seed the experiment does not have matched no run, and "trained 0 run(s)" exited 0
    for bad in ("a@7", "a@1", "a@x", "a@-1"):
        with pytest.raises(TrainError, match=f"--arms {bad}: .* is not a seed of this experiment \\(seeds 0..0\\)"):
            run_experiment(spec, str(tmp_path / "out"), TrainConfig(shards=[], output=""), only=[bad])
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_at_or_below_chance_is_not_learned_with_any_number_of_seeds():
    from curate.train import stats

    assert above_baseline([0.015], 0.02)["learned"] is False  # one seed at/below chance: no interval needed
    r = above_baseline([0.33, 0.30, 0.35], 0.735)
    assert r["learned"] is False and r["below"] is True  # far under the majority baseline: flagged
    assert above_baseline([0.74, 0.70, 0.78], 0.735)["below"] is False
    # neither side above chance: "uninformative", never "no detectable difference", whatever the intervals
    wide = stats.paired_t_interval([0.020, 0.015], [0.016, 0.018])
    assert stats.verdict(wide, {"lo": -0.01, "hi": 0.01}, (False, False)) == stats.NOT_LEARNED
    assert stats.verdict(wide, {"lo": -0.01, "hi": 0.01}, (True, False)) == stats.NONE
    assert stats.verdict(wide, {"lo": -0.01, "hi": 0.01}) == stats.NONE  # no chance known: as before
    # two arms far above chance whose seed intervals merely reach it keep their paired verdict (they were
    # called "uninformative" and the headline said no arm learned)
    a, b = [0.6, 0.8, 0.95], [0.56, 0.75, 0.89]
    learned = tuple(above_baseline(v, 0.5)["learned"] for v in (a, b))
    assert learned == (None, None)
    t = stats.paired_t_interval(a, b)
    assert 0 < t["lo"] and stats.verdict(t, {"lo": 0.01, "hi": 0.09}, learned) == stats.BETTER
    # a t interval past the [-1, 1] a difference of accuracies can take is cut, and says so
    assert stats.clamp_interval(-1.793, 1.383) == (-1.0, 1.0, True)
    assert stats.clamp_interval(-0.2, 0.3) == (-0.2, 0.3, False)
    assert stats.clamp_interval(None, None) == (None, None, False)


def _runs(arms: dict[str, list[float]], attr: dict[str, list[float]], examples: int = 200) -> list[dict]:
    """Synthetic evaluated runs: per arm the per-seed zeroshot_top1, per-example hits that give it exactly."""
    import numpy as np

    runs = []
    for name, per_seed in arms.items():
        for seed, acc in enumerate(per_seed):
            hits = np.zeros(examples)
            hits[: round(acc * examples)] = 1
            rng = np.random.default_rng(seed + 10 * len(runs))
            rng.shuffle(hits)
            ev = {"zeroshot_top1": acc, "zeroshot_top5": acc * 5, "image_to_text_R@1": 0.01, "text_to_image_R@1": 0.01,
                  "image_to_text_R@5": 0.05, "text_to_image_R@5": 0.05,
                  "chance": {"zeroshot_top1": 0.02, "zeroshot_top5": 0.10, "image_to_text_R@1": 0.005,
                             "text_to_image_R@1": 0.005, "image_to_text_R@5": 0.025, "text_to_image_R@5": 0.025},
                  "attributes": {"shape": {"top1": attr[name][seed], "chance": 0.735}},
                  "per_example": {"zeroshot_top1": hits.tolist()}}
            runs.append({"set": name, "seed": seed, "eval": ev, "loss_curve": [(0, 4.0), (64, 3.9)],
                         "train": {"skipped_total": 0, "samples_per_s": 100.0, "final_loss": 3.9}})
    return runs


def test_report_says_plainly_when_no_arm_learned(tmp_path):
    """The new-user review's experiment: 3 arms x 2 seeds, zeroshot_top1 0.015-0.020 vs chance 0.020, shape at 0.33
    vs a 0.735 baseline. The report led with "no detectable difference"; it must say nothing was learned."""
    from curate.train.experiment import Arm, ExperimentSpec, _table_md, _verdicts, summarise, write_report
    from curate.train.loop import TrainConfig

    spec = ExperimentSpec(arms={n: Arm(n, shards=[f"{n}.tar"]) for n in ("curated", "raw", "random")},
                          eval_set="eval", seeds=2)
    spec.validate()
    runs = _runs({"curated": [0.020, 0.015], "raw": [0.015, 0.020], "random": [0.020, 0.020]},
                 {"curated": [0.33, 0.90], "raw": [0.735, 0.33], "random": [0.33, 0.34]})
    res = summarise(runs, spec, TrainConfig(shards=[], output=""), {}, {})
    assert res["nothing_learned"] == ["zeroshot_top1"]
    prim = [c for c in res["comparisons"] if c["primary"]]
    assert [c["verdict"] for c in prim] == ["uninformative (neither data set is above chance on this metric: "
                                            "nothing learned to compare)"] * 2
    shape = next(c for c in res["comparisons"] if c["metric"] == "attribute_shape" and c["b"] == "raw")
    assert shape["t_ci_clamped"] and shape["t_ci"] == [-1.0, 1.0] and shape["t_ci_raw"][0] < -1 < 1 < shape["t_ci_raw"][1]
    assert not prim[0]["t_ci_clamped"]
    lines = _verdicts(res)
    assert lines[0].startswith("NO ARM LEARNED: the comparison is uninformative (every arm is at or below chance: "
                               "zeroshot_top1 0.018–0.020 across arms vs chance 0.020)")
    assert "train longer" in lines[0]
    assert "0.020 across arms vs chance 0.020)" in lines[0]
    assert "no detectable difference" not in "\n".join(lines)
    table = _table_md(res)
    assert "[-1.000, +1.000]†" in table and "wider than [−1, +1]" in table
    write_report(res, tmp_path)
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert md.splitlines()[2].startswith("**NO ARM LEARNED: the comparison is uninformative")
    assert "| zeroshot_top1 | 0.020 | 0.018 | 0.018 | 0.020 |" in md  # primary metric beside chance, no ✓
    assert "| shape | 0.735 | 0.615 | 0.532 | 0.335 ✗ |" in md  # under the majority baseline: ✗
    assert "class='nothing-learned'" in page and "NO ARM LEARNED" in page and "wider than [−1, +1]" in page
    # once one arm learns, the headline goes and its comparisons get ordinary verdicts
    runs = _runs({"curated": [0.30, 0.32], "raw": [0.015, 0.020], "random": [0.020, 0.020]},
                 {"curated": [0.9, 0.9], "raw": [0.33, 0.33], "random": [0.735, 0.735]})
    res = summarise(runs, spec, TrainConfig(shards=[], output=""), {}, {})
    assert res["nothing_learned"] == [] and not _verdicts(res)[0].startswith("NO ARM")
    assert [c["verdict"] for c in res["comparisons"] if c["primary"]] == ["better", "better"]
