"""curate.Pipeline: the Python face of a recipe, for notebooks, scripts and other tools.

A Pipeline is a validated recipe (curate/recipe.py) plus the two ways to execute it: `run` (Ray, into a run
directory, resumable; what `curate run` does) and `run_local` (a plain loop over one in-memory table, the
reference semantics, for trying a stage on a few rows). It adds no behaviour of its own, so a pipeline built
here and the same recipe run by the CLI produce the same run directory.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

import logging
import re
import sys

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curate import schema
from curate.io.rundir import RunDir
from curate.recipe import Recipe, absolute_local_path, build_recipe, load_recipe
from curate.stage import Step, run_local


log = logging.getLogger("curate")


def _warn_if_unshipped(runtime_env: dict | None) -> None:
    """A Ray this process initialised itself keeps its own runtime_env, so packages of user stages cannot be
    shipped to its workers: say which, and how, before a worker fails to unpickle a stage."""
    wanted = list((runtime_env or {}).get("py_modules") or [])
    ray = sys.modules.get("ray")
    if not wanted or ray is None or not ray.is_initialized():
        return
    # after ray.init its py_modules are upload URIs, not paths: any py_modules means the caller took care
    if not (ray.get_runtime_context().runtime_env or {}).get("py_modules"):
        log.warning("Ray was initialised before this run, so curate cannot ship %s to its workers; unless they can "
                    "import it already, pass runtime_env={'py_modules': %r} to your ray.init", ", ".join(wanted), wanted)


# The runner and the recipe loader word their hints for the CLI (`--resume`, `--output`, `--set`); a Python
# caller has keyword arguments instead. Applied in order, at the API boundary only, so the CLI keeps its words.
_PYTHON_WORDS = [
    (r"curate run --resume -o (\S+)", r"Pipeline.run(output='\1', resume=True)"),
    (r"--resume", "resume=True"),
    (r"--output DIR", "output=DIR"),
    (r"\b(an|another|a new|the) --output\b", r"\1 output folder"),
    (r"--output", "output="),
    (r"--input PATH", "input=PATH"),
    (r"--ray-address", "ray_address="),
    (r"--set expects", "an override expects"),
    (r"--set key must", "an override's key must"),
    (r"\(--set ([^)\s]+)\)", r"(overrides=['\1'])"),
    (r"add --set to", "add overrides to"),
    (r"--set ([^:\s]+):", r"override '\1':"),
    (r"--set", "overrides"),
]


def python_words(message: str) -> str:
    """A one-line CLI hint reworded for Python callers: `--resume` is `resume=True`, `--output DIR` the
    `output=` argument, `--set k=v` an entry of `overrides` (CLI-only commands such as --retry-failed stay)."""
    for pattern, repl in _PYTHON_WORDS:
        message = re.sub(pattern, repl, message)
    return message


@contextmanager
def _python_errors():
    """Re-raise curate's one-line errors (RunError, RecipeError and their subclasses) in Python words, same
    exception object and traceback, so `except curate.RunError` and attributes keep working."""
    from curate.recipe import RecipeError
    from curate.runner import RunError

    try:
        yield
    except (RunError, RecipeError) as err:
        if err.args and isinstance(err.args[0], str):
            err.args = (python_words(err.args[0]), *err.args[1:])
        raise


class Pipeline:
    """A list of stages with the input, output and Ray settings of a recipe, validated when built.

    `stages` holds stage objects (`CaptionText(min_words=2)` from curate.filters.caption_text, or a class of your
    own), optionally paired with scheduling keys (`(stage, {"concurrency": 2})`), and/or recipe-style
    entries (`"exact_dedup"`, `{"caption_text": {"min_words": 2}}`, `{"mypkg.filters:NoWatermark": {}}`).
    Every mistake a recipe can hold raises curate.RecipeError with a one-line message, before any work.
    """

    def __init__(self, stages: Iterable[Any], *, name: str = "pipeline", modality: str = "image-text",
                 input: dict | None = None, output: dict | None = None, ray: dict | None = None,
                 description: str | None = None):
        data = {"name": name, "modality": modality, "input": dict(input or {}), "output": dict(output or {}),
                "ray": dict(ray or {}), "stages": list(stages)}
        if description is not None:
            data["description"] = description
        with _python_errors():
            self.recipe: Recipe = build_recipe(data, source="<python>")

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "Pipeline":
        self = cls.__new__(cls)
        self.recipe = recipe
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "Pipeline":
        """A pipeline from a recipe already parsed into a dict (the YAML file's structure)."""
        with _python_errors():
            return cls.from_recipe(build_recipe(data))

    @classmethod
    def from_yaml(cls, ref: str | Path, overrides: Iterable[str] = ()) -> "Pipeline":
        """A pipeline from a recipe file or the name of a shipped recipe (`image_text`), with `--set`-style
        overrides (`"clip_threshold.min_score=0.3"`)."""
        if isinstance(overrides, str):  # one override as a bare string would be split into characters
            overrides = [overrides]
        with _python_errors():
            return cls.from_recipe(load_recipe(str(ref), tuple(overrides)))

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def stages(self) -> list[Step]:
        """The configured stage objects, in order (immutable: build a new Pipeline to change one)."""
        return list(self.recipe.steps)

    def to_dict(self) -> dict:
        """The resolved recipe (every default filled in), as `curate run` saves it into recipe.yaml."""
        return self.recipe.to_dict()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def run(self, input: str | Path | None = None, output: str | Path | None = None, *,
            ray_address: str | None = None, resume: bool = False, runtime_env: dict | None = None,
            on_progress: Callable[[str, int, int], None] | None = None) -> RunDir:
        """Run on Ray into the run directory `output` and return it (curate.RunDir).

        input/output default to the recipe's input.path/output.path. ray_address: a cluster (default
        RAY_ADDRESS, or a local Ray started for this run and stopped after it; a Ray this process already
        initialised is used as it is). resume: finish an interrupted run in `output`. runtime_env: extra Ray
        runtime_env for the workers; packages of your own stages that are not installed are added to its
        py_modules. on_progress(label, done, total) is called as parts complete. Raises curate.RunError
        (one-line message) when the run cannot start or stops.
        """
        from curate.runner import Runner  # Ray is imported only when a pipeline runs

        recipe = self.recipe
        if input is not None:  # a relative local one made absolute, as a recipe's (curate.recipe.build_recipe)
            path = absolute_local_path(str(input), maybe_name=False) or str(input)
            recipe = recipe.model_copy(update={"input": recipe.input.model_copy(update={"path": path})})
        if output is not None:
            recipe = recipe.model_copy(update={"output": recipe.output.model_copy(update={"path": str(output)})})
        with _python_errors():
            runner = Runner(recipe, ray_address=ray_address, on_progress=on_progress, runtime_env=runtime_env)
            _warn_if_unshipped(runner.runtime_env)
            runner.start(resume=resume)
        return runner.run

    def run_local(self, table: pa.Table) -> pa.Table:
        """Every stage over one in-memory table in a plain loop (no Ray, no run directory): each input row
        comes back once with status/stage/reason and the stages' columns. Rows need at least `text` (and
        what the first stage reads); missing core columns are filled (uid = row number, status ok)."""
        rs = schema.run_schema(self.recipe.stage_columns())
        t = schema.conform(table, rs)
        n = t.num_rows
        fill = {"uid": pa.array([str(i) for i in range(n)]), "status": pa.array([schema.OK] * n),
                "row": pa.array(range(n), pa.int64())}
        for col, default in fill.items():
            i = t.column_names.index(col)
            t = t.set_column(i, t.schema.field(i), pc.coalesce(t.column(col), default))
        return run_local(self.recipe.steps, t, rs)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stages=[{', '.join(s.name for s in self.recipe.steps)}])"
