"""Load a YAML recipe into validated step objects before any work starts.

Everything a user can get wrong (unknown stage, unknown or mistyped field, a stage that needs a column no
earlier stage writes) is reported here as one line, so a run never dies halfway on a typo.

Recipes are passed around, so they are read as hostile: the file size, the YAML nesting depth and the
number of nodes after alias expansion are bounded (a "billion laughs" alias bomb took 5.5 GB), and
infinite or NaN numbers are refused in every setting, including through --set.
"""
from __future__ import annotations

import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate import crash_isolation, plugins, schema
from curate.io.reader import InputSpec
from curate.stage import Job, Step, load_builtin_steps

SCHEDULING_KEYS = ("num_cpus", "num_gpus", "concurrency", "call_timeout_s", "row_timeout_s")

# Limits on a recipe file: the shipped ones are a few KB, a few levels deep, a few hundred nodes.
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000  # counted after alias expansion: what a consumer of the loaded data walks


class RecipeError(Exception):
    """A recipe problem; the message is one line meant for the user."""


class _YamlLimit(yaml.YAMLError):
    """A YAML document over the recipe limits (depth, nodes after alias expansion)."""


class _YamlDuplicate(_YamlLimit):
    """A mapping with a repeated key."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nodes as a walker of the result would see them (an alias counts the whole
    subtree it points to) and refuses deep nesting, while composing, before anything is constructed."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_YAML_NODES:
            raise _YamlLimit(f"more than {MAX_YAML_NODES} values after expanding aliases (&anchor/*alias)")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:
                self._count(self._sizes.get(id(target), 1))
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1)
        self._sizes[id(node)] = self._nodes - before
        return node

    def construct_mapping(self, node, deep=False):
        """A key given twice in one mapping is an error (YAML would keep the last silently: two `threads:`
        lines, and the one the user meant may be the one dropped). `<<` merge keys are YAML's own."""
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _YamlDuplicate(f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                                         f"{key_node.start_mark.line + 1})")
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: SafeLoader reports it below
                pass
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """Parse recipe YAML (a file or a --set value) safely and within the recipe limits."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _non_finite(value, where: str = "") -> str | None:
    """The dotted path of the first infinite or NaN number in a (nested) setting value, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


def _refuse_non_finite(value, where: str) -> None:
    bad = _non_finite(value)
    if bad is not None:
        raise RecipeError(f"{where}.{bad}: must be a finite number (inf and nan are not settings)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputConfig(_Strict):
    path: str | None = None
    format: str = Field("auto", pattern="^(auto|parquet|csv|jsonl|json|warc|webdataset|images)$")
    url_col: str | None = "url"  # null: the input has no URL column (rows that carry their image or document)
    text_col: str | None = "caption"  # null for document inputs (their text comes from parse_documents)
    id_col: str | None = None
    source: str | None = None
    image_col: str | None = None  # Parquet column of image bytes (binary or HF {bytes, path}); auto-detected


class OutputConfig(_Strict):
    path: str | None = None
    samples_per_shard: int = Field(10000, ge=1, le=10_000_000)
    keep_work: bool = False
    # with a recaption stage: original | recaption | both (original .txt + synthetic .recap.txt)
    # | fuse (.txt = fused_caption from a fuse_captions stage)
    caption_policy: str = Field("both", pattern="^(original|recaption|both|fuse)$")
    # thumbnails kept (in thumbs/) of at most this many dropped rows per stage, reason and part, for the report
    dropped_thumbnails: int = Field(24, ge=0, le=1000)


class RayConfig(_Strict):
    num_cpus: int | None = Field(None, ge=1)
    # Ray refuses less than 75 MiB (78,643,200 bytes) at start-up: say so at recipe load instead
    object_store_memory_mb: int | None = Field(None, ge=75)
    # jobs over at most this many rows run in the driver (a Ray shuffle costs seconds of start-up);
    # larger ones run as a distributed group-by so no process holds the whole corpus
    job_local_max_rows: int = Field(100_000, ge=0)
    # deaths of a stage's worker process on one part (a native crash on some row, the OOM killer) before the
    # run stops: between tries the rows whose call killed it are narrowed down and fail alone
    # (`stage_crashed`), at about log2(part rows) + 1 deaths per such row (curate/crash_isolation.py)
    max_part_crashes: int = Field(48, ge=1, le=1000)
    # the time bound of one stage call (a batch given to a stage): row_timeout_s per row of the call, at
    # least call_timeout_s (0: no bound). A call past it has its worker stopped; the part is tried again and
    # split like a crash, and a row that hangs alone fails as `stage_timeout` (curate/crash_isolation.py).
    # A stage's own call_timeout_s / row_timeout_s override these.
    call_timeout_s: float = Field(crash_isolation.CALL_TIMEOUT_S, ge=0)
    row_timeout_s: float = Field(crash_isolation.ROW_TIMEOUT_S, ge=0)
    # near-dup jobs on Ray: connected components in one worker task while the edge list has at most this
    # many edges (the numpy pointer-jumping pass takes seconds for millions of edges; ~100 bytes per edge),
    # else as distributed large-star/small-star shuffle rounds, whose memory per worker is one bucket
    job_components_max_edges: int = Field(2_000_000, ge=0)
    # jobs with a key pre-pass (minhash_dedup): first shuffle only the keys, then full records only for keys
    # seen twice (6x fewer bytes). It costs one more shuffle, which only pays where bytes cross a network:
    # auto = on when the cluster has more than one node
    job_key_prepass: Literal["auto", "on", "off"] = "auto"
    # runs of at most this many input rows whose steps are all jobs and model-free filters, with no Ray
    # address given (argument or RAY_ADDRESS), run in this process without starting Ray: Ray's start-up
    # and shuffles cost more than such work (0: always Ray)
    in_process_max_rows: int = Field(2_000_000, ge=0)


class Scheduling(_Strict):
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1)
    call_timeout_s: float | None = Field(None, ge=0)  # None: the recipe's ray.call_timeout_s
    row_timeout_s: float | None = Field(None, ge=0)  # None: the recipe's ray.row_timeout_s


class Recipe(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    modality: str = "image-text"
    input: InputConfig
    output: OutputConfig
    ray: RayConfig
    steps: list[Step]
    scheduling: list[Scheduling]
    source: str = ""  # where the recipe came from

    def input_spec(self) -> InputSpec:
        # parse_documents reads a whole document from OBELICS lists or an html column, and a page URL only
        # to fetch the page (url layout) or to resolve relative image references: OBELICS records have no
        # `url` column, and requiring one refused them
        url_free = tuple(cols for step in self.steps if step.name == "parse_documents"
                         for cols in step.url_free_columns())
        return InputSpec(path=self.input.path or "", format=self.input.format, url_col=self.input.url_col,
                         text_col=self.input.text_col, id_col=self.input.id_col, source=self.input.source,
                         modality=self.modality, image_col=self.input.image_col, url_free_columns=url_free)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (all defaults filled in), as saved into the run directory."""
        stages = []
        for step, sched in zip(self.steps, self.scheduling):
            cfg = step.model_dump(mode="json")
            cfg.update(sched.model_dump(exclude_none=True))
            stages.append({plugins.ref_of(type(step)): cfg})
        return {"name": self.name, "modality": self.modality, "input": self.input.model_dump(),
                "output": self.output.model_dump(), "ray": self.ray.model_dump(exclude_none=True), "stages": stages}

    def setting_strings(self, steps=None):
        """Every non-empty string in the stage settings (of `steps`, default all), nested values included."""
        stages = self.to_dict()["stages"]
        todo = [stages[i] for i in (range(len(stages)) if steps is None else steps)]
        while todo:
            v = todo.pop()
            if isinstance(v, dict):
                todo.extend(v.values())
            elif isinstance(v, list):
                todo.extend(v)
            elif isinstance(v, str) and v:
                yield v

    def named_files(self, steps=None) -> list[str]:
        """Existing files the stage settings name (checkpoints, concept lists, prompt files...), and
        object-store URLs (s3://, gs://, hf://...: storage.FILE_SCHEMES) that may name one: a resumed run
        must see the same ones, or its parts would be scored by different models. steps: only these
        step indices (default: all)."""
        from curate.io.storage import FILE_SCHEMES, scheme

        found: list[str] = []
        for v in self.setting_strings(steps):
            if scheme(v) in FILE_SCHEMES:
                found.append(v)
            elif len(v) < 4096 and ("/" in v or "." in v):
                try:
                    p = Path(v).expanduser()
                    if p.is_file():
                        found.append(str(p.resolve()))
                except OSError:
                    pass
        return sorted(set(found))

    def stage_columns(self) -> dict:
        cols: dict = {}
        for step in self.steps:
            cols.update(step.writes)
        return cols


def shipped_recipes() -> dict[str, Path]:
    """Recipes that ship with curate (pipelines/*.yaml), by name."""
    folder = resources.files("curate.pipelines")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yaml", ".yml"))}


def find_recipe(ref: str):
    """The recipe file `ref` names: a local file, an object-store URL (a run's saved recipe.yaml, which
    `curate run --resume -o s3://...` reads back: Path() would collapse the `//` and never find it), or a
    shipped recipe's name."""
    from curate.io import storage

    storage.preflight(ref)  # a remote one: a missing bucket or bad credentials are one line
    path = storage.as_path(ref)  # a Path, or a UPath for s3://...
    if path.exists():
        return path
    shipped = shipped_recipes()
    if ref in shipped:
        return shipped[ref]
    raise RecipeError(f"no recipe file {ref!r} and no shipped recipe of that name (shipped: {', '.join(sorted(shipped))})")


def _one_line(err: ValidationError, where: str, known=()) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    msg = _message(first, known)
    if (where, loc) == ("ray", "address") and first["type"] == "extra_forbidden":  # as other tools' configs have
        msg += " (a recipe runs anywhere: give the cluster with --ray-address, RAY_ADDRESS or Pipeline.run(ray_address=))"
    return f"{where}.{loc}: {msg}{more}" if loc else f"{where}: {msg}{more}"


def _message(error: dict, known=()) -> str:
    """A pydantic error's text for the user ("unknown field" for a key the model forbids, with the closest
    known setting when there is one: `dely` -> did you mean 'delay'?)."""
    if error["type"] != "extra_forbidden":
        return error["msg"]
    import difflib

    close = difflib.get_close_matches(str(error["loc"][-1]), list(known), n=1, cutoff=0.6) if known else []
    return f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"


def _settings(cls) -> list[str]:
    """The setting names a stage (or section) accepts: its fields, and a stage's scheduling keys."""
    return [*getattr(cls, "model_fields", {}), *(SCHEDULING_KEYS if cls is not Scheduling else ())]


_INDEXED = re.compile(r"(?P<name>[^\[\]]+)\[(?P<index>\d+)\]")


def _step_name(ref: str) -> str | None:
    """The `name` of the step an import path (pkg.mod:Class) names, or None when it cannot be loaded (the
    recipe's own check then says why, in one line)."""
    try:
        return plugins.resolve(ref, load_builtin_steps()).name
    except Exception:  # noqa: BLE001 - reported where the recipe is built
        return None


def _apply_override(data: dict, item: str) -> tuple[dict, str, list[str], str] | None:
    """--set a.b=value: value parsed as YAML; `stage.field` addresses the stage of that name, `stage[i].field`
    the i-th (from 0) when the recipe has several (then the bare name is refused as ambiguous: changing only
    the first, silently, is how a user's setting went missing). Returns (stage entry, stage name, field
    path, the key as the user wrote it) for a stage setting, None for a section's."""
    if "=" not in item:
        raise RecipeError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw) if raw != "" else ""
    except _YamlLimit as err:
        raise RecipeError(f"--set {key}: {err}") from None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise RecipeError(f"--set key must look like section.field or stage.field, got {key!r}")
    head, rest = parts[0], parts[1:]
    if head in ("input", "output", "ray"):
        target = data.setdefault(head, {}) or {}
        data[head] = target
    else:
        indexed = _INDEXED.fullmatch(head)
        name = indexed["name"] if indexed else head
        entries = [e for e in data.get("stages") or [] if isinstance(e, dict)]
        found = [e for e in entries if name in e]
        if not found:  # a stage of one's own named by import path (pkg.mod:Class) is set by its `name`
            paths = [k for e in entries for k in e if isinstance(k, str) and ":" in k and _step_name(k) == name]
            found = [e for e in entries if any(k in e for k in paths)]
            name = paths[0] if paths and len(set(paths)) == 1 else name
        if not found:
            raise RecipeError(f"--set {key}: the recipe has no stage {name!r}")
        if indexed is None and len(found) > 1:
            raise RecipeError(f"--set {key}: the recipe has {len(found)} {name} stages; say which: "
                              + " or ".join(f"{name}[{i}].{'.'.join(rest)}" for i in range(len(found))))
        i = int(indexed["index"]) if indexed else 0
        if i >= len(found):
            raise RecipeError(f"--set {key}: the recipe has {len(found)} {name} stage(s) (indices 0-{len(found) - 1})")
        entry = found[i]
        if entry[name] is None:
            entry[name] = {}
        target = entry[name]
    for p in rest[:-1]:
        target = target.setdefault(p, {})
    target[rest[-1]] = value
    return (entry, name, rest, key.strip()) if head not in ("input", "output", "ray") else None


def _check_set_fields(done: list[tuple[dict, str, list[str], str]]) -> None:
    """A stage setting given with --set that its stage refuses is reported in the user's own spelling
    (`--set doc_filter[1].min_images: ...`): build_recipe counts stages over the whole recipe
    (`stages[7] doc_filter`), a position the user never wrote. Only errors in the field the flag set are
    claimed here; anything else wrong with the stage (a typo in the file) is build_recipe's, by position."""
    if not done:
        return
    registry = load_builtin_steps()
    for entry, name, rest, key in done:
        cfg = entry[name] if isinstance(entry[name], dict) else {}
        field = rest[0]
        if _non_finite(cfg.get(field)) is not None:
            raise RecipeError(f"--set {key}: must be a finite number (inf and nan are not settings)")
        try:
            cls = Scheduling if field in SCHEDULING_KEYS else plugins.resolve(name, registry)
            scheduling = cls is Scheduling
            cls(**{k: v for k, v in cfg.items() if (k in SCHEDULING_KEYS) == scheduling})
        except ValidationError as err:
            mine = [e for e in err.errors() if tuple(e["loc"][:1]) == (field,)]
            if mine:
                more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
                raise RecipeError(f"--set {key}: {_message(mine[0], _settings(cls))}{more}") from None
        except (plugins.StageLookupError, TypeError):
            pass  # an unknown stage, a key that is not a string: build_recipe's one line


def load_recipe(ref: str, overrides: list[str] | tuple[str, ...] = (), input_path: str | None = None,
                output_path: str | None = None) -> Recipe:
    path = find_recipe(ref)
    try:
        with path.open("rb") as f:  # a Path or, on an object store, a UPath
            raw = f.read(MAX_RECIPE_BYTES + 1)  # read() of a bounded size: /dev/zero or a FIFO cannot fill memory
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe {path} is larger than {MAX_RECIPE_BYTES // 1024} KB; recipes are small YAML files")
        data = load_yaml(raw.decode("utf-8"))
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path} is not UTF-8 text") from None
    except _YamlLimit as err:
        raise RecipeError(f"recipe {path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"recipe {path} is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping with name, input, output and stages")
    done = [_apply_override(data, item) for item in overrides]
    _check_set_fields([d for d in done if d is not None])
    if input_path is not None:
        data.setdefault("input", {})
        data["input"] = {**(data["input"] or {}), "path": input_path}
    if output_path is not None:
        data["output"] = {**(data.get("output") or {}), "path": output_path}
    return build_recipe(data, source=str(path))


def saved_recipe(path) -> dict[str, Any]:
    """A run's saved recipe.yaml, resolved through today's schema (to_dict shape).

    A run directory outlives the curate version that wrote it: settings added since (input.image_col, a new
    stage option) get their defaults here, so resuming compares what the recipes mean, not which keys the
    older version knew to write. Settings that no longer exist raise RecipeError."""
    try:
        # a local path, or the run directory's own path object (a UPath on an object store)
        data = load_yaml((path if hasattr(path, "read_text") else Path(path)).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, _YamlLimit) as err:
        raise RecipeError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path} is not a recipe mapping")
    return build_recipe(_random_init_as_run(data), source=str(path)).to_dict()


def _random_init_as_run(data: dict) -> dict:
    """A saved recipe with `random_init: true` set where the run used random weights before that setting existed.

    Why: clip_score, doc_clip and keyframe_clip_score once scored with a random-init model, silently, when
    given neither `pretrained` nor `checkpoint`; they now refuse that unless `random_init: true`. A run saved
    by such a version has no `random_init` key, so its recipe.yaml would no longer read back, and a resume
    given `--set STAGE.random_init=true` (what the refusal asks for) would be refused as "cannot be read by
    this version". Here it means what that run did. Only the comparison reads this: `curate run --resume`
    without the --set still loads recipe.yaml as a recipe and is refused, so the user opts in knowingly (or
    gives weights, a changed setting, accepted only for a stage no row has reached)."""
    entries = data.get("stages")
    if not isinstance(entries, list):
        return data
    registry = load_builtin_steps()
    out = []
    for entry in entries:
        if isinstance(entry, dict) and len(entry) == 1:
            (name, cfg), = entry.items()
            cls = registry.get(name) if isinstance(name, str) else None
            if (cls is not None and "random_init" in cls.model_fields and isinstance(cfg, dict)
                    and "random_init" not in cfg and not cfg.get("pretrained") and not cfg.get("checkpoint")):
                entry = {name: {**cfg, "random_init": True}}
        out.append(entry)
    return {**data, "stages": out}


def build_recipe(data: dict, source: str = "<dict>") -> Recipe:
    unknown = set(data) - {"name", "modality", "input", "output", "ray", "stages", "description"}
    if unknown:
        raise RecipeError(f"recipe: unknown section {sorted(unknown)[0]!r} (allowed: name, description, modality, input, output, ray, stages)")
    sections = {}
    for key, cls in (("input", InputConfig), ("output", OutputConfig), ("ray", RayConfig)):
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise RecipeError(f"recipe: `{key}` must be a mapping")
        try:
            sections[key] = cls(**value)
        except ValidationError as err:
            raise RecipeError(_one_line(err, key, list(cls.model_fields))) from None
        except TypeError as err:  # a non-string key: cls(**value) cannot even be called
            raise RecipeError(f"recipe: `{key}` keys must be strings ({err})") from None
    inp, out, ray_cfg = sections["input"], sections["output"], sections["ray"]
    if (absolute := absolute_local_path(inp.path, maybe_name=False)) is not None:
        # as the stages' files: a --resume from another folder reads the same input (recipe.yaml keeps it)
        inp = inp.model_copy(update={"path": absolute})
    registry = load_builtin_steps()
    entries = data.get("stages")
    if not isinstance(entries, list) or not entries:
        raise RecipeError("recipe: `stages` must be a non-empty list")
    steps, scheds = [], []
    available = set(schema.CORE_COLUMNS)
    declared = {col: (typ, "the core schema") for col, typ in schema.CORE_COLUMNS.items()}
    for i, entry in enumerate(entries):
        step, sch = _build_step(i, entry, registry)
        missing = [c for c in step.needs() if c not in available]
        if missing:
            writers = [n for n, c in registry.items() if missing[0] in c.writes]
            hint = f" (add {' or '.join(repr(w) for w in writers)} before it)" if writers else ""
            raise RecipeError(f"stages[{i}] {step.name}: needs column {missing[0]!r}, which no earlier stage writes{hint}")
        for col, typ in step.writes.items():  # one row schema: a column keeps its type (a user stage may clash)
            if declared.setdefault(col, (typ, step.name))[0] != typ:
                typ0, by = declared[col]
                raise RecipeError(f"stages[{i}] {step.name}: writes column {col!r} as {typ}, but {by} declares it "
                                  f"as {typ0}; a column keeps one type (name yours differently)")
        available |= set(step.writes)
        steps.append(step)
        scheds.append(sch)
    if out.caption_policy == "fuse" and not any(s.name == "fuse_captions" for s in steps):
        raise RecipeError("output.caption_policy fuse needs a fuse_captions stage (after recaption) to write fused_caption")
    name = data.get("name") or Path(source).stem
    try:
        return Recipe(name=str(name), modality=data.get("modality", "image-text"), input=inp, output=out,
                      ray=ray_cfg, steps=steps, scheduling=scheds, source=source)
    except ValidationError as err:
        raise RecipeError(_one_line(err, "recipe")) from None


def _build_step(i: int, entry, registry: dict) -> tuple[Step, Scheduling]:
    """One validated step and its scheduling from a `stages` entry: a name, a one-key mapping
    `{name or module:Class: settings}`, a Step object, or a (Step object, scheduling mapping) pair."""
    if isinstance(entry, Step) or (isinstance(entry, tuple) and entry and isinstance(entry[0], Step)):
        step, sched = (entry, {}) if isinstance(entry, Step) else (entry[0], entry[1] if len(entry) > 1 else {})
        if len(entry if isinstance(entry, tuple) else ()) > 2 or not isinstance(sched, dict):
            raise RecipeError(f"stages[{i}] {step.name}: pair a stage object with a mapping of scheduling keys only")
        try:
            plugins.checked(type(step), f"stages[{i}] {type(step).__qualname__}", keep=False)
        except plugins.StageLookupError as err:
            raise RecipeError(str(err)) from None
        _refuse_non_finite(step.model_dump(), f"stages[{i}] {step.name}")
        return _with_absolute_paths(step), _scheduling(i, step.name, sched)
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"stages[{i}]: each stage is a one-key mapping like `- download: {{timeout_s: 10}}`")
    (name, cfg), = entry.items()
    if not isinstance(name, str):
        raise RecipeError(f"stages[{i}]: stage name {name!r} is not a string")
    if cfg is not None and not isinstance(cfg, dict):
        raise RecipeError(f"stages[{i}] {name}: its settings must be a mapping, got {cfg!r}")
    cfg = dict(cfg or {})
    bad = [k for k in cfg if not isinstance(k, str)]
    if bad:
        raise RecipeError(f"stages[{i}] {name}: setting name {bad[0]!r} is not a string (quote YAML words like on/off/yes/no)")
    try:
        cls = plugins.resolve(name, registry)
    except plugins.StageLookupError as err:
        raise RecipeError(f"stages[{i}]: {err}") from None
    sched = {k: cfg.pop(k) for k in SCHEDULING_KEYS if k in cfg}
    _refuse_non_finite(cfg, f"stages[{i}] {name}")  # before the stage's own validators see it
    try:
        step = cls(**cfg)
    except ValidationError as err:
        raise RecipeError(_one_line(err, f"stages[{i}] {name}", _settings(cls))) from None
    _refuse_non_finite(step.model_dump(), f"stages[{i}] {name}")
    return _with_absolute_paths(step), _scheduling(i, name, sched)


# settings that take a name as well as a path (a hub id, an open_clip name or tag): a relative value is a
# path only when it looks like one or names something here, as transformers and open_clip decide
NAME_OR_PATH = ("model", "pretrained")


def absolute_local_path(value, maybe_name: bool = True) -> str | None:
    """The absolute form of a setting that names a relative local path, against the current working
    directory as --output is; None for anything else: an absolute path, a URL (s3://, hf-hub:...).
    `maybe_name`: the setting may hold a name instead (NAME_OR_PATH): only `./x`, `../x`, `~/x` or a file
    or folder that exists here is a path; `org/name` naming nothing here stays a hub id."""
    if not isinstance(value, str) or not value or "://" in value or value.startswith("hf-hub:"):
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path) if value.startswith("~") else None
    try:
        local = (not maybe_name or value.startswith(("./", "../")) or value in (".", "..")
                 or path.exists())
    except OSError:  # a name too long for a path
        return None
    return os.path.abspath(path) if local else None


def _with_absolute_paths(step: Step) -> Step:
    """`step` with its relative local path settings (Step.local_path_settings) made absolute, so every Ray
    worker and a --resume from another folder find the same files, and recipe.yaml records them whole."""
    update = {}
    for field in step.local_path_settings():
        absolute = absolute_local_path(getattr(step, field, None), maybe_name=field in NAME_OR_PATH)
        if absolute is not None:
            update[field] = absolute
    return step.model_copy(update=update) if update else step


def _scheduling(i: int, name: str, sched: dict) -> Scheduling:
    try:
        return Scheduling(**sched)
    except ValidationError as err:
        raise RecipeError(_one_line(err, f"stages[{i}] {name}")) from None
    except TypeError as err:
        raise RecipeError(f"stages[{i}] {name}: scheduling keys must be strings ({err})") from None


def segments(recipe: Recipe) -> tuple[list[list[int]], list[int]]:
    """Split step indices into streaming segments separated by jobs: ([[0,1],[3,4]], [2])."""
    segs: list[list[int]] = [[]]
    jobs: list[int] = []
    for i, step in enumerate(recipe.steps):
        if isinstance(step, Job):
            jobs.append(i)
            segs.append([])
        else:
            segs[-1].append(i)
    return segs, jobs
