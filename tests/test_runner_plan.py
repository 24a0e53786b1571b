"""The Ray Data plan the runner builds: a model stage must stay its own actor-pool operator."""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from curate.recipe import Scheduling
from curate.runner import Runner
from curate.stage import Stage


class _Fetch(Stage):  # stands in for download: a task stage
    name: ClassVar[str] = "t_fetch"

    def process(self, table: pa.Table) -> pa.Table:
        return table


class _Model(Stage):  # stands in for clip_score: a model stage
    name: ClassVar[str] = "t_model"
    uses_model: ClassVar[bool] = True

    def process(self, table: pa.Table) -> pa.Table:
        return table


def test_download_tasks_are_not_fused_into_the_model_actor(ray_address):
    """Ray Data fuses task -> actor maps with equal remote args; then every download would run inside the
    single model actor, serialised with the model. The physical plan must keep them apart."""
    import ray
    from ray.data._internal.util import explain_plan

    ds = ray.data.from_items([{"uid": "a"}])
    run_schema = pa.schema([("uid", pa.string())])
    ds = Runner._map_stage(ray, ds, _Fetch(), Scheduling(), run_schema)
    ds = Runner._map_stage(ray, ds, _Model(), Scheduling(), run_schema)
    physical = explain_plan(ds._logical_plan).split("Physical Plan (Optimized)")[1]
    ops = [line.strip("+- ").strip() for line in physical.splitlines() if "Operator[" in line]
    assert ops[0] == "ActorPoolMapOperator[MapBatches(_StageActor)]", physical
    assert any(op.startswith("TaskPoolMapOperator[") and "_run_stage_task" in op for op in ops[1:]), physical
