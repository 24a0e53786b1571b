"""examples/datacomp_small_protocol.py's CPU path at toy size: the same code a GPU run executes (arms curated,
raw and a random subset of raw with curated's size, paired seeds, intervals), with the per-run throughput and
data-wait record and the one-line error for bad input."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from .conftest import write_classes, write_colour_shards

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datacomp_small_protocol.py"


def _example():
    spec = importlib.util.spec_from_file_location("datacomp_small_protocol", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_tiny_protocol_end_to_end(tmp_path, capsys):
    ex = _example()
    write_colour_shards(tmp_path / "curated", 32, 2)
    write_colour_shards(tmp_path / "raw", 64, 2, seed=3)
    write_colour_shards(tmp_path / "eval", 24, 1, seed=1)
    write_classes(tmp_path / "eval")
    out = tmp_path / "out"
    p = ex.main(["--scale", "cpu-tiny", "--curated", str(tmp_path / "curated"), "--raw", str(tmp_path / "raw"),
                 "--eval-set", str(tmp_path / "eval"), "--seeds", "2", "--workers", "0", "-o", str(out)])
    assert json.loads((out / "protocol.json").read_text()) == p
    assert p["global_batch"] == 16 and p["settings"]["model"] == "curate-tiny-32"
    assert sorted((r["set"], r["seed"]) for r in p["runs"]) == sorted(
        (s, k) for s in ("curated", "raw", "random") for k in (0, 1))
    for r in p["runs"]:
        assert r["device"] == "cpu" and r["precision"] == "fp32" and r["samples_per_s"] > 0
        assert 0.0 <= r["data_wait_frac"] <= 1.0 and r["loader_bound"] == (r["data_wait_frac"] > ex.WAIT_FLAG)
    res = json.loads((out / "experiment" / "results.json").read_text())
    pairs = {(c["a"], c["b"]) for c in res["comparisons"] if c["primary"]}
    assert pairs == {("curated", "raw"), ("curated", "random")} and res["seeds"] == 2
    # two primary comparisons and the fewer-than-5-seeds note, after the "no arm learned" line when nothing was
    assert len(p["verdicts"]) == 3 + bool(res["nothing_learned"])  # (cpu-tiny is too short to learn much)
    assert p["verdicts"][0].startswith("NO ARM LEARNED") == (res["nothing_learned"] == ["zeroshot_top1"])
    assert "data_wait_frac" in capsys.readouterr().out


def test_scales_and_bad_input(tmp_path, capsys):
    ex = _example()
    big = ex.build(ex.parse(["--curated", "c", "--raw", "r", "--eval-set", "e"]), world=8)
    spec, base = big
    assert (base.model, base.samples_seen, base.batch_size * 8, base.precision) == ("ViT-B-32", 12_800_000, 4096, "auto")
    assert spec.seeds == 5 and set(spec.arms) == {"curated", "raw", "random"} and base.workers >= 1
    with pytest.raises(SystemExit) as err:
        ex.main(["--scale", "cpu-tiny", "--curated", str(tmp_path), "--raw", str(tmp_path),
                 "--eval-set", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip()
    assert msg.startswith("error: eval set not found") and "\n" not in msg
