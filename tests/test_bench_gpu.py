"""bench/gpu.py's CPU path at toy scale: every part (clip_score stage vs model-only, curate train vs
open_clip_train, recaption vs generate) runs its real code and yields numbers, and --record renders them.
The GPU numbers themselves come from a lent machine (bench/results/gpu-h200.json).

The clip part runs in this process; train and caption start the same subprocesses a GPU run starts
(curate train, open_clip_train, the CoCa child), which is most of their time: about a minute on a quiet
2-core machine, several on a loaded one (hence the longer timeout).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_tiny_clip_part_and_record(tmp_path, monkeypatch):
    from bench import _common, gpu

    r = gpu.main(["--device", "cpu", "--tiny", "--parts", "clip", "--work", str(tmp_path)])
    assert "clip_error" not in r, r.get("clip_error")
    c = r["clip"]
    assert c["model_only_ips"] > 0 and {x["device_preprocess"] for x in c["stage"]} == {True, False}
    assert all(x["ips"] > 0 for x in c["stage"] + c["decode_only"])
    assert c["device_preprocess_max_abs_score_diff"] == 0.0  # on CPU both paths run the full transform
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["clip"]["model_only_ips"] == c["model_only_ips"]

    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(_common, "RESULTS", results)
    gpu.record(saved, "results.json")
    text = results.read_text()
    assert "## gpu" in text and f"**{c['model_only_ips']:.0f} img/s**" in text


@pytest.mark.timeout(1500)
def test_tiny_train_and_caption_parts(tmp_path):
    from bench import gpu

    r = gpu.main(["--device", "cpu", "--tiny", "--parts", "train", "caption", "--work", str(tmp_path),
                  "--timeout", "600"])
    errors = {k: v for k, v in r.items() if k.endswith("_error")}
    assert not errors, errors
    t = r["train"]
    for tool in ("curate", "open_clip_train"):
        assert t[tool].get("samples_per_s", 0) > 0, t[tool]
    assert t["curate"]["steps"] == t["samples"] // t["batch_size"]
    cap = r["caption"]
    assert not cap.get("error"), cap.get("error")
    assert [x["backend"] for x in cap["backends"]] == ["coca beam3", "coca top-p"]
    assert all(x["model_caps_s"] > 0 and x["stage_caps_s"] > 0 for x in cap["backends"])
