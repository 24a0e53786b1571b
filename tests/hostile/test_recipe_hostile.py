"""Hostile recipes: alias bombs, deep nesting, huge files, unsafe tags and non-finite numbers are refused
with one line (exit 2) in bounded time and memory, before anything is written."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from curate.recipe import MAX_YAML_NODES, RecipeError, build_recipe, load_recipe
from curate.stage import load_builtin_steps
from tests.conftest import curate_inprocess

BOMB = "\n".join(
    [f'a0: &a0 [{", ".join(["lol"] * 9)}]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["name: bomb", "stages: [download]"]) + "\n"  # 9^9 = 387 million strings once expanded

HOSTILE = {
    "alias bomb": (BOMB, "after expanding aliases"),
    "deep nesting": ("name: deep\nstages: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    "deep mappings": ("name: deep\nstages: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", "nested deeper"),
    "python tag": ("name: !!python/object/apply:os.system ['touch /tmp/curate-pwned']\nstages: [download]\n",
                   "not valid YAML"),
    "not utf-8": (b"name: \xff\xfe\nstages: [download]\n", "not UTF-8"),
    "huge file": ("name: big\n" + "# padding\n" * 120_000 + "stages: [download]\n", "larger than"),
    "inf in a stage": ("name: x\nstages:\n  - download: {timeout_s: .inf}\n", "download.timeout_s: must be a finite"),
    "overflowing float": ("name: x\nstages:\n  - download: {timeout_s: 1e999}\n", "finite"),
    "nan scheduling": ("name: x\nstages:\n  - download: {num_cpus: .nan}\n", "finite"),
    "inf ray": ("name: x\nray: {object_store_memory_mb: .inf}\nstages: [download]\n", "ray.object_store_memory_mb"),
    "non-string section key": ("name: x\noutput: {1: 2}\nstages: [download]\n", "output"),
    "modality not a string": ("name: x\nmodality: [1, 2]\nstages: [download]\n", "recipe.modality"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_recipe_is_refused_in_one_line_fast_and_small(tmp_path, case):
    text, message = HOSTILE[case]
    path = tmp_path / "r.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    t = time.perf_counter()
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path), input_path="in.parquet", output_path=str(tmp_path / "out"))
    took = time.perf_counter() - t
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    # deep flow nesting costs PyYAML's scanner ~2.5 s whatever the depth (it looks 1024 characters ahead)
    assert took < 10.0, took
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_alias_bomb_memory_stays_small(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BOMB)
    tracemalloc.start()
    try:
        with pytest.raises(RecipeError, match="after expanding aliases"):
            load_recipe(str(path), output_path=str(tmp_path / "out"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # unbounded, it took 5.5 GB


def test_small_anchors_still_work(tmp_path):
    """Anchors that expand to a handful of values are ordinary YAML and stay allowed."""
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ndescription: &pats ['click here', 'image \\d+']\n"
                    "stages:\n  - download: {}\n  - caption_text: {boilerplate: *pats}\n")
    rec = load_recipe(str(path), input_path="in.parquet", output_path="o")
    assert rec.steps[1].boilerplate == ["click here", "image \\d+"]


def test_node_bound_counts_expanded_aliases_not_text_size(tmp_path):
    path = tmp_path / "r.yaml"
    # one anchor of 1,000 items used 200 times: tiny text, 200,000 values for whoever walks the result
    lines = ["name: x", "description:", "  - &big [" + ", ".join(["1"] * 1000) + "]"]
    lines += ["  - *big"] * (MAX_YAML_NODES // 1000 * 2)
    path.write_text("\n".join(lines + ["stages: [download]"]) + "\n")
    with pytest.raises(RecipeError, match="after expanding aliases"):
        load_recipe(str(path), output_path="o")


@pytest.mark.parametrize("value", ["inf", ".inf", "-.inf", ".nan", "nan", "Infinity", "1e999"])
def test_set_refuses_non_finite_numbers(value):
    with pytest.raises(RecipeError) as err:
        load_recipe("image_text", [f"download.timeout_s={value}"], input_path="u.parquet", output_path="out")
    assert "download.timeout_s" in str(err.value)


def _float_fields():
    required = {"model": "m", "base_url": "http://127.0.0.1:9"}
    for name, cls in sorted(load_builtin_steps().items()):
        for field, info in cls.model_fields.items():
            if "float" in str(info.annotation):
                need = {f: required[f] for f, i in cls.model_fields.items() if i.is_required()}
                yield name, field, need


@pytest.mark.parametrize("stage, field, need", list(_float_fields()), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_every_float_setting_of_every_stage_refuses_non_finite(stage, field, need, bad):
    data = {"name": "t", "input": {"path": "x"}, "output": {"path": "o"}, "stages": [{stage: {**need, field: bad}}]}
    with pytest.raises(RecipeError) as err:
        build_recipe(data)
    assert f"{stage}.{field}" in str(err.value), str(err.value)


def test_cli_exits_2_on_a_bomb_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    out = tmp_path / "out"
    proc = curate_inprocess("run", str(path), "-i", str(tmp_path / "in.parquet"), "-o", str(out), capsys=capsys)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "after expanding aliases" in proc.stderr, proc.stderr
    assert not out.exists()


def test_object_store_below_rays_minimum_is_a_recipe_error():
    """ray.init refuses under 75 MiB after a slow local start; the recipe says so at load time."""
    with pytest.raises(RecipeError, match="ray.object_store_memory_mb: .*75"):
        load_recipe("image_text", ["ray.object_store_memory_mb=64"], input_path="u.parquet", output_path="out")
    assert load_recipe("image_text", ["ray.object_store_memory_mb=75"], output_path="out").ray.object_store_memory_mb == 75
