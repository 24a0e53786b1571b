"""The public Python API (curate.Pipeline and the names curate exports) and user stages named by import
path or entry point, validated like shipped stages. Unit-level: no Ray (tests/api/test_custom_stage_e2e.py
runs the example package both ways on Ray)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest
import yaml

import curate
from curate import plugins
from curate.recipe import RecipeError, build_recipe, load_recipe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_stage"


def recipe(*stages, **sections) -> dict:
    return {"name": "t", "input": {"path": "x.parquet"}, "output": {"path": "out"}, "stages": list(stages), **sections}


@pytest.fixture
def example(monkeypatch):
    """The example plugin importable in this process (never installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from curate_watermark.filters import NoWatermark

    return NoWatermark


def package(root: Path, name: str, body: str) -> str:
    """A throwaway package `name` with module `stages` holding `body`; returns its module path."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "stages.py").write_text(textwrap.dedent(body))
    return f"{name}.stages"


SHORT = """
    from typing import ClassVar
    import pyarrow as pa
    from curate import Filter

    class Short(Filter):
        name: ClassVar[str] = "{name}"
        reads: ClassVar[tuple] = ("text",)
        reasons: ClassVar[dict] = {{"too_short_{name}": "fewer than min_chars characters"}}
        min_chars: int = 3

        def check(self, table: pa.Table):
            return [None if len(t or "") >= self.min_chars else "too_short_{name}" for t in table.column("text").to_pylist()]
    """


def test_import_curate_stays_light_and_exports_the_api():
    code = "import sys, curate; print(sorted(m for m in ('pyarrow', 'ray', 'torch', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from curate.io.rundir import RunDir
    from curate.pipeline import Pipeline
    from curate.stage import Filter, Job, Stage, register

    assert (curate.Pipeline, curate.RunDir, curate.Stage, curate.Filter, curate.Job, curate.register) == \
        (Pipeline, RunDir, Stage, Filter, Job, register)
    assert {"Pipeline", "RunDir", "Stage", "register"} <= set(dir(curate))
    with pytest.raises(AttributeError):
        curate.NoSuchThing


def test_stage_by_import_path_is_validated_like_a_shipped_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = package(tmp_path, "userpkg_a", SHORT.format(name="short_a"))
    rec = build_recipe(recipe({f"{mod}:Short": {"min_chars": 5}}))
    (step,) = rec.steps
    assert type(step).__name__ == "Short" and step.min_chars == 5 and curate.stage.REGISTRY["short_a"] is type(step)
    # the saved recipe names the class by import path, so another process (report, --resume) finds it
    assert rec.to_dict()["stages"] == [{f"{mod}:Short": {"min_chars": 5}}]
    assert build_recipe(recipe(*rec.to_dict()["stages"])).to_dict() == rec.to_dict()
    with pytest.raises(RecipeError, match=r"^stages\[0\] userpkg_a.stages:Short.min_char: unknown field \(did you mean 'min_chars'\?\)$"):
        build_recipe(recipe({f"{mod}:Short": {"min_chars": 1, "min_char": 2}}))
    with pytest.raises(RecipeError, match=r"stages\[0\] userpkg_a.stages:Short.min_chars: .*integer"):
        build_recipe(recipe({f"{mod}:Short": {"min_chars": "many"}}))
    with pytest.raises(RecipeError, match=r"stages\[0\] userpkg_a.stages:Short: .*infinite or NaN|finite number"):
        build_recipe(recipe({f"{mod}:Short": {"min_chars": float("inf")}}))


@pytest.mark.parametrize("key, body, message", [
    ("nosuchpkg_zz.filters:X", None, "cannot import 'nosuchpkg_zz.filters' (no module named 'nosuchpkg_zz'); install"),
    ("{mod}:Nope", SHORT.format(name="short_b"), "has no attribute 'Nope'"),
    ("{mod}:Short", "raise RuntimeError('broken\\nplugin')", "importing '{mod}' failed: RuntimeError: broken plugin"),
    ("{mod}:thing", "thing = 3", "is a int, not a subclass of curate.Stage"),
    ("{mod}:Plain", "class Plain: pass", "is class userpkg_{i}.stages.Plain, not a subclass"),
    ("{mod}:Short", SHORT.format(name="Bad Name"), "needs a snake_case `name`"),
    ("{mod}:Short", SHORT.format(name="download"), "stage name 'download' is already taken by class curate.download"),
    ("{mod}:Short", SHORT.format(name="short_c").replace("too_short_", "Too-Short-"), "reason code must be snake_case"),
    ("{mod}:Short.", None, "an import path looks like package.module:ClassName"),
    ("antigravity:Fly", None, "'antigravity' is a standard-library module, not a stage package"),
])
def test_import_failures_are_one_line(tmp_path, monkeypatch, key, body, message, request):
    i = abs(hash(request.node.name)) % 10**8  # a fresh package name per case (sys.modules keeps imports)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = package(tmp_path, f"userpkg_{i}", body) if body is not None else ""
    key, message = key.format(mod=mod), message.format(mod=mod, i=i)
    with pytest.raises(RecipeError) as err:
        build_recipe(recipe({key: {}}))
    assert message in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("stages[0]")


def test_a_user_stage_cannot_change_a_column_type():
    from curate.stage import Stage

    class Length(Stage):
        name: ClassVar[str] = "length_q"
        writes: ClassVar[dict] = {"text": pa.int32()}

    with pytest.raises(RecipeError, match=r"stages\[0\] length_q: writes column 'text' as int32, but the core schema "
                                          r"declares it as string"):
        curate.Pipeline([Length()])


def test_unknown_stage_names_the_ways_to_add_one():
    with pytest.raises(RecipeError, match="unknown stage 'no_such_stage_q'.*import path, module:Class.*'curate.stages'"):
        build_recipe(recipe({"no_such_stage_q": {}}))


def fake_distribution(site: Path, entry_points: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path (a .dist-info folder), without
    installing anything: what `pip install -e examples/custom_stage` records, entry points included."""
    info = site / "curate_watermark-0.1.0.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text("Metadata-Version: 2.1\nName: curate-watermark\nVersion: 0.1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    info.joinpath("entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\n{lines}")


def test_stage_by_entry_point_from_the_example_package(tmp_path, monkeypatch, example):
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]["curate.stages"]
    assert declared == {"no_watermark": "curate_watermark.filters:NoWatermark"}
    fake_distribution(tmp_path, {**declared, "misnamed": declared["no_watermark"],
                                 "broken_plugin": "curate_watermark.nothere:X"})
    monkeypatch.syspath_prepend(str(tmp_path))
    (step,) = build_recipe(recipe({"no_watermark": {"markers": ["alamy"]}})).steps
    assert isinstance(step, example) and step.markers == ("alamy",)
    with pytest.raises(RecipeError, match="entry point 'misnamed' .* whose name is 'no_watermark': the entry point's name must"):
        build_recipe(recipe("misnamed"))
    with pytest.raises(RecipeError, match=r"stage 'broken_plugin': loading entry point curate_watermark.nothere:X "
                                          r"from curate-watermark failed: ModuleNotFoundError"):
        build_recipe(recipe("broken_plugin"))


def test_pipeline_from_objects_runs_the_example_filter_locally(example):
    from curate.filters.caption_text import CaptionText

    p = curate.Pipeline([(CaptionText(min_words=2), {"concurrency": 2}), example(markers=("shutterstock",))],
                        name="wm", input={"path": "in.parquet"})
    assert [s.name for s in p.stages] == ["caption_text", "no_watermark"]
    assert p.to_dict()["stages"][1] == {"curate_watermark.filters:NoWatermark": {"markers": ["shutterstock"], "max_chars": 2000}}
    assert p.to_dict()["stages"][0]["caption_text"]["concurrency"] == 2
    assert curate.Pipeline.from_dict(p.to_dict()).to_dict() == p.to_dict()
    assert "curate_watermark.filters:NoWatermark" in p.to_yaml()
    out = p.run_local(pa.table({"text": ["a red ball on grass", "photo by SHUTTERSTOCK inc", "ok", "x" * 5000 + " shutterstock"]}))
    got = [(r["uid"], r["status"], r["stage"], r["reason"]) for r in out.to_pylist()]
    assert got == [("0", "ok", None, None), ("1", "dropped", "no_watermark", "watermark_text"),
                   ("2", "dropped", "caption_text", out.column("reason")[2].as_py()),
                   ("3", "ok", None, None)]  # past max_chars: bounded, not searched
    with pytest.raises(RecipeError, match="stage object with a mapping of scheduling keys"):
        curate.Pipeline([(example(), "fast")])
    with pytest.raises(RecipeError, match=r"stages\[0\] no_watermark.concurrency: .*greater than or equal to 1"):
        curate.Pipeline([(example(), {"concurrency": 0})])


def test_user_packages_travel_to_ray_workers(example, tmp_path):
    from curate.filters.caption_text import CaptionText

    env = plugins.runtime_env_for([CaptionText(), example()], {"env_vars": {"A": "1"}})
    assert env == {"env_vars": {"A": "1"}, "py_modules": [str(EXAMPLE / "curate_watermark")]}
    assert plugins.runtime_env_for([CaptionText()]) is None  # shipped stages need nothing
    assert plugins.runtime_env_for([pa.table({})]) is None  # pyarrow: installed in site-packages


def test_cli_reports_a_broken_plugin_in_one_line(tmp_path, cli_inprocess):
    rec = tmp_path / "r.yaml"
    rec.write_text("name: t\ninput: {}\noutput: {}\nstages:\n  - nosuchpkg_cli.filters:Nope: {}\n")
    (tmp_path / "in.parquet").write_bytes(b"")
    res = cli_inprocess("run", str(rec), "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cannot import 'nosuchpkg_cli.filters' (no module named 'nosuchpkg_cli')" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_ray_initialised_by_the_caller_gets_a_warning_not_a_silent_failure(ray_address, caplog):
    from curate.pipeline import _warn_if_unshipped

    _warn_if_unshipped(None)
    assert not caplog.records
    _warn_if_unshipped({"py_modules": ["/src/mypkg"]})
    assert "cannot ship /src/mypkg" in caplog.text and "runtime_env={'py_modules': ['/src/mypkg']}" in caplog.text


CLI_FLAGS = r"--(resume|output|set|input|ray-address)\b"


def test_python_api_errors_name_the_python_arguments_not_cli_flags(tmp_path, cli_inprocess):
    """A notebook user has resume=True, output= and overrides=[...], not --resume, --output and --set."""
    import re

    from curate.runner import RunError

    p = curate.Pipeline.from_yaml("image_text")
    with pytest.raises(RecipeError) as err:
        curate.Pipeline.from_yaml("image_text", overrides=["caption_text.min_words=x"])
    assert str(err.value).startswith("override 'caption_text.min_words': ") and not re.search(CLI_FLAGS, str(err.value))
    with pytest.raises(RecipeError, match=r"^an override expects key=value, got 'nonsense'$"):
        curate.Pipeline.from_yaml("image_text", overrides="nonsense")  # one string is one override, not 8
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"is not empty and holds no run; choose another output folder$"):
        p.run(tmp_path / "in.parquet", busy)
    with pytest.raises(RunError, match=r"^no input: pass input=PATH or set input.path in the recipe$"):
        p.run(None, tmp_path / "o")
    # the CLI keeps its own words for the same mistakes
    res = cli_inprocess("run", "image_text", "-i", str(tmp_path / "in.parquet"), "-o", str(busy))
    assert res.returncode == 2 and "choose another --output" in res.stderr
    res = cli_inprocess("run", "image_text", "--set", "caption_text.min_words=x", "-o", str(tmp_path / "o2"))
    assert res.returncode == 2 and "--set caption_text.min_words: " in res.stderr


def test_every_cli_hint_the_runner_and_recipe_loader_raise_has_python_words():
    """Each message source that speaks CLI, line by line: after python_words no CLI flag of Pipeline.run's or
    from_yaml's knobs is left (a new hint with a new phrasing fails here, not in a user's notebook)."""
    import re

    from curate.pipeline import python_words

    root = Path(curate.__file__).parent
    lines = [line for f in ("runner.py", "recipe.py", "io/rundir.py", "io/atomic.py", "io/reader.py",
                            "environment_errors.py", "crash_isolation.py")
             for line in (root / f).read_text().splitlines() if re.search(CLI_FLAGS, line)]
    assert len(lines) > 20
    left = [python_words(line) for line in lines if re.search(CLI_FLAGS, python_words(line))]
    assert left == []
    assert python_words("x already holds a run (running); pass --resume to finish it, or choose another --output") \
        == "x already holds a run (running); pass resume=True to finish it, or choose another output folder"
    assert python_words("finish it with: curate run --resume -o s3://b/run") == \
        "finish it with: Pipeline.run(output='s3://b/run', resume=True)"


def test_set_reaches_a_stage_named_by_import_path_by_its_name(tmp_path, monkeypatch):
    # `--set short_s.min_chars=9` said "the recipe has no stage 'short_s'", and the import path itself cannot
    # be a --set key (its dots split it): a plugin stage's settings could not be overridden at all
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = package(tmp_path, "userpkg_s", SHORT.format(name="short_s"))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe({f"{mod}:Short": {"min_chars": 5}})))
    (step,) = load_recipe(str(path), ["short_s.min_chars=9", "short_s.num_cpus=2"]).steps
    assert step.min_chars == 9
    rec = load_recipe(str(path), ["short_s.min_chars=9", "short_s.num_cpus=2"])
    assert rec.to_dict()["stages"] == [{f"{mod}:Short": {"min_chars": 9, "num_cpus": 2.0}}]
    with pytest.raises(RecipeError, match=r"^--set short_s.min_char: unknown field \(did you mean 'min_chars'\?\)$"):
        load_recipe(str(path), ["short_s.min_char=9"])
    with pytest.raises(RecipeError, match="the recipe has no stage 'nothere'"):
        load_recipe(str(path), ["nothere.min_chars=9"])
