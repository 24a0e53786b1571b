"""The reduce job through the real runner: the in-driver path and the Ray shuffle path keep the same rows."""
from __future__ import annotations

import json
import sys
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.recipe import build_recipe
from curate.runner import Runner
from curate.scorers.clip_score import EMBEDDING, IMAGE_EMBEDDING
from curate.stage import REGISTRY, Annotations, Stage, register

from .test_job import mixture


class VectorFromCaption(Stage):
    """Test stage: the caption holds the row's vector as comma-separated floats (an empty caption: none).
    It stands in for clip_score so the job sees known vectors; the recipe refuses input columns a job needs."""

    name: ClassVar[str] = "test_vector_from_caption"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {IMAGE_EMBEDDING: EMBEDDING}

    def annotate(self, active: pa.Table) -> Annotations:
        vecs = [[float(v) for v in t.split(",")] if t else None for t in active.column("text").to_pylist()]
        return Annotations(columns={IMAGE_EMBEDDING: vecs})


@pytest.fixture
def registered_vectors():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    register(VectorFromCaption)
    yield
    REGISTRY.pop(VectorFromCaption.name, None)
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _run(tmp_path, name, local_max, per_shard):
    src = tmp_path / "in.parquet"
    if not src.exists():
        x, _ = mixture(sizes=[300, 120, 40, 12], dim=16, seed=7)
        n = len(x)
        text = ["" if i % 50 == 0 else ",".join(f"{f:.6f}" for f in v) for i, v in enumerate(x)]  # 10 without
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(n)], "caption": text}), src)
    recipe = build_recipe({"name": "t", "input": {"path": str(src)},
                           "output": {"path": str(tmp_path / name), "samples_per_shard": per_shard},
                           "ray": {"job_local_max_rows": local_max},
                           "stages": [{"test_vector_from_caption": {}},
                                      {"reduce": {"fraction": 0.3, "clusters": 4, "allocation": "sqrt"}}]})
    manifest = Runner(recipe).start()
    t = pq.read_table(str(tmp_path / name / "meta"))
    return {r["uid"]: (r["status"], r["stage"], r["reason"], r["reduce_cluster"], r["reduce_rank"])
            for r in t.to_pylist()}, manifest


def test_local_and_ray_paths_agree(tmp_path, ray_address, registered_vectors):
    local, m1 = _run(tmp_path, "local", 10**6, 1000)  # one part, decided in the driver
    on_ray, m2 = _run(tmp_path, "ray", 0, 160)  # three parts, grouped by a Ray shuffle
    assert m1.jobs["job0:reduce"]["path"] == "driver" and m2.jobs["job0:reduce"]["path"] == "ray"
    assert local == on_ray
    assert len(local) == 472  # every input row accounted for
    kept = [v for v in local.values() if v[0] == "ok"]
    assert len(kept) == int(np.floor(0.3 * 472 + 0.5))
    assert m2.counts.kept == len(kept)
    dropped = [v for v in local.values() if v[0] != "ok"]
    assert all(v[1:3] == ("reduce", "reduce_not_selected") for v in dropped)
    assert {v[3] for v in kept} == {-1, 0, 1, 2, 3}  # every cluster (and the no-vector rows) is represented
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["status"] == "complete"
