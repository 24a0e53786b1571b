"""examples/documents_pairs.py end to end at tiny scale (curated and raw interleaved runs on loopback, pairs,
placement truth, a one-seed experiment). The numbers at this size are noise; this checks the plumbing and
that every image and pair is accounted for."""
from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tar_pairs(folder: Path) -> int:
    n = 0
    for t in folder.glob("*.tar"):
        with tarfile.open(t) as tar:
            n += sum(1 for m in tar if m.name.endswith(".txt"))
    return n


def test_documents_pairs_tiny_path(tmp_path, ray_address, monkeypatch):
    example = _load(monkeypatch, "documents_pairs")
    res = example.main(["--out", str(tmp_path), "--docs", "30", "--placement-samples-seen", "32", "--seed-n", "32",
                        "--eval-n", "64", "--samples-seen", "32", "--batch-size", "16", "--seeds", "1", "--page-order-arm"])
    doc = res["documents"]
    for name in ("curated_run", "raw_run"):  # every document row accounted for in both runs
        assert pq.read_table(str(tmp_path / name / "meta")).num_rows == 30
    for name, counts in doc["pairs"].items():
        assert counts["pairs"] == _tar_pairs(tmp_path / "pairs" / name) == doc["pair_truth"][name]["pairs"] > 0
        assert counts["images"] == sum(counts["outcomes"].values())
    # the raw documents keep the duplicate, tiny and over-cap images the curated run drops
    assert doc["pairs"]["raw"]["pairs"] > doc["pairs"]["curated"]["pairs"]
    assert doc["placement"]["placed"] > 0 and 0 <= doc["placement"]["placement_accuracy"] <= 1
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {
        ("curated", "raw"), ("curated", "random"), ("curated", "curated_page_order")}
    saved = json.loads((tmp_path / "experiment" / "results.json").read_text())
    assert saved["documents"]["pair_truth"] == doc["pair_truth"]
    assert json.loads((tmp_path / "documents.json").read_text())["placement"] == doc["placement"]
    assert "Placement accuracy" in (tmp_path / "experiment" / "report.md").read_text()
