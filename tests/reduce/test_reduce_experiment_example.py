"""examples/reduce_experiment.py end to end at tiny scale: full and reduced runs from the shipped reduce recipe
(loopback server, Ray), then a one-seed experiment with the random-subset control. The numbers at this
size are noise; this checks the plumbing, the exact quarter and the accounting."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_reduce_experiment_tiny_path(tmp_path, ray_address, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("reduce_experiment", EXAMPLES / "reduce_experiment.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    res = example.main(["--out", str(tmp_path), "--samples", "120", "--corpus", str(tmp_path / "corpus"),
                        "--eval-n", "64", "--filter-samples-seen", "32", "--samples-seen", "32", "--batch-size", "16",
                        "--seeds", "1"])
    runs = res["reduce"]["runs"]
    for name in ("full", "reduced"):  # every input row accounted for
        assert pq.read_table(str(tmp_path / f"{name}_run" / "meta")).num_rows == 120
    reduced, not_selected = runs["reduced"]["kept"], runs["reduced"]["not_kept"]["dropped/reduce/reduce_not_selected"]
    assert reduced == int((reduced + not_selected) * 0.25 + 0.5)  # exactly a quarter of the rows reaching reduce
    assert runs["full"]["kept"] >= reduced + not_selected - 3  # the same recipe up to reduce (flaky URLs aside)
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("reduced", "full"), ("reduced", "random"),
                                                              ("full", "random")}
    assert (tmp_path / "experiment" / "report.md").is_file()
