"""The example plugin (examples/custom_stage) end to end on Ray, both ways a user would: from Python
(curate.Pipeline with stage objects, the example's run_pipeline.py) and from a YAML recipe that names the
filter by import path (`curate run`). Nothing is installed: the package is on the drivers' PYTHONPATH only,
and the session's Ray workers (started without it) import it because the runner ships it as py_modules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.dataset as pads
import yaml


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_stage"


def outcomes(out: Path) -> dict[str, tuple]:
    t = pads.dataset(str(out / "meta"), format="parquet").to_table(columns=["uid", "text", "status", "stage", "reason"])
    return {r["uid"]: (r["text"], r["status"], r["stage"], r["reason"]) for r in t.to_pylist()}


def test_example_filter_from_python_and_from_yaml(ray_address, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "RAY_ADDRESS": ray_address,
           # a storage variable is forwarded to the cluster's workers too: it must not replace the py_modules
           "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    py_out, yaml_out, input_path = tmp_path / "python-run", tmp_path / "yaml-run", tmp_path / "input.parquet"
    # one driver process runs both (an interpreter start is seconds on a small machine): the example script as
    # `python run_pipeline.py WORK` would, then `curate run` through its console entry point
    driver = f"""
import runpy, sys
sys.argv = ["run_pipeline.py", {str(tmp_path)!r}]
runpy.run_path({str(EXAMPLE / "run_pipeline.py")!r}, run_name="__main__")
import curate, warnings
from curate.download.load_image import LoadImage
try:  # the same folder again: the error names Pipeline.run's own argument, not the CLI's --resume
    curate.Pipeline([LoadImage()]).run({str(input_path)!r}, {str(py_out)!r})
except curate.RunError as err:
    open("second.txt", "w").write(str(err))
with warnings.catch_warnings(record=True) as seen:  # concurrency 2 over one part: no Ray Data UserWarning
    warnings.simplefilter("always")
    curate.Pipeline([(LoadImage(), {{"concurrency": 2}})], input={{"text_col": "caption"}}).run({str(input_path)!r}, "conc")
open("warnings.txt", "w").write("\\n".join(str(w.message) for w in seen if issubclass(w.category, UserWarning)))
from curate.cli import main
sys.argv = ["curate", "run", {str(EXAMPLE / "recipe.yaml")!r}, "-i", {str(input_path)!r}, "-o", {str(yaml_out)!r}]
main()
"""
    proc = subprocess.run([sys.executable, "-c", driver], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[0])
    assert counts["rows"] == 8 and counts["kept"] == 5 and counts["dropped"] == {"no_watermark/watermark_text": 3}
    assert (yaml_out / "manifest.json").exists()
    assert (tmp_path / "second.txt").read_text() == (f"{py_out} already holds a run (complete); pass resume=True to "
                                                     "finish it, or choose another output folder")
    assert "concurrent" not in (tmp_path / "warnings.txt").read_text()
    assert (tmp_path / "conc" / "manifest.json").exists()

    got = outcomes(py_out)
    assert got == outcomes(yaml_out)  # same rows, same outcomes, either way
    dropped = sorted(text for text, status, stage, reason in got.values() if status == "dropped")
    assert dropped == sorted(["Red circle stock photo - Alamy", "Image 1234 by Shutterstock: green triangle",
                              "(c) 2024 All Rights Reserved, purple ring"])
    assert {(s, st, r) for _, s, st, r in got.values() if s == "dropped"} == {("dropped", "no_watermark", "watermark_text")}
    # kept samples are in the shards, with exactly the input's image bytes
    import pyarrow.parquet as pq

    source = {row["caption"]: row["image"] for row in pq.read_table(input_path).to_pylist()}
    members = {}
    for tar in sorted((yaml_out / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                members[m.name] = tf.extractfile(m).read()
    texts = {k.rsplit(".", 1)[0]: v.decode() for k, v in members.items() if k.endswith(".txt")}
    assert sorted(texts.values()) == sorted(t for t, s, _, _ in got.values() if s == "ok")
    for key, text in texts.items():
        image = next(v for k, v in members.items() if k.startswith(key + ".") and k.rsplit(".", 1)[1] in ("png", "jpg"))
        assert image == source[text]
    # the saved recipe names the class by import path, so report/--resume in another process find it
    saved = yaml.safe_load((yaml_out / "recipe.yaml").read_text())
    assert list(saved["stages"][1]) == ["curate_watermark.filters:NoWatermark"]
    assert list(yaml.safe_load((py_out / "recipe.yaml").read_text())["stages"][1]) == ["curate_watermark.filters:NoWatermark"]
