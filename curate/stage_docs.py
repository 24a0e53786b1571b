"""Render the stage registry as Markdown: every stage, its settings, the columns it reads and writes,
and the reason codes it sets.

docs/stages.md is this module's output, and a test compares the two, so the reference can never drift
from the code: a stage's description is its class docstring, a setting's is its pydantic Field
description, a reason's is the text in `reasons`. Edit those, then regenerate with
`python -m curate.stage_docs > docs/stages.md`. Plain Markdown only (no rich markup), so bracketed text
such as `[min_motion, max_motion]` survives.
"""
from __future__ import annotations

import inspect
import re
import sys
import typing

from curate.stage import Filter, Job, Step, load_builtin_steps

HEADER = """\
# Stages

Generated from the stage registry by `python -m curate.stage_docs` (do not edit by hand: a test
checks that this page equals the generated text). Each stage's description is its class docstring,
each setting's its Field description, each reason code's the text the stage declares. A recipe names
a stage by the name in the heading; besides its settings, every stage accepts the scheduling keys
`num_cpus`, `num_gpus`, `concurrency`, `call_timeout_s` and `row_timeout_s` (a call's time bound: see
[recipes.md](recipes.md)). Rows a stage drops end `dropped`, rows it fails end
`failed`, each with the stage's name and one of its reason codes (see
[run_directory.md](run_directory.md)).
"""


def kind_of(cls: type[Step]) -> str:
    """What a recipe author needs to know about how the step runs: per batch, per row, or whole-dataset."""
    if issubclass(cls, Job):
        kind = "job (sees the whole dataset)"
    elif issubclass(cls, Filter):
        kind = "filter (keeps or drops each row)"
    else:
        kind = "stage (one batch at a time)"
    extras = [label for flag, label in ((cls.uses_model, "loads a model: runs on an actor pool"),
                                        (cls.adds_rows, "adds rows"),
                                        (cls.min_row_timeout_s, f"time bound at least {cls.min_row_timeout_s:g} s "
                                                                "per row (min_row_timeout_s)")) if flag]
    return kind + ("; " + "; ".join(extras) if extras else "")


def type_name(annotation) -> str:
    """A short, stable spelling of a setting's type (no module paths, no typing. prefixes)."""
    if inspect.isclass(annotation) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation)
    text = re.sub(r"\b(typing|collections\.abc|pathlib|builtins)\.", "", text)
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("NoneType", "None")


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: str) -> str:
    """Inline code that survives backticks inside the value."""
    text = cell(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def summary(cls: type[Step]) -> str:
    """The docstring's first paragraph: what the stage does, in the author's words."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(doc.split("\n\n", 1)[0].split()) or "(no description)"


FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", re.M)


def field_comments(cls: type[Step]) -> dict[str, str]:
    """Trailing comments on setting lines in the class bodies (subclass first, settings mixins such as
    curate.models.clip_settings.ClipWeights included): where most stages explain a setting, so they document
    it without a second copy."""
    from pydantic import BaseModel

    notes: dict[str, str] = {}
    for klass in cls.__mro__:
        if klass in (Step, BaseModel, object) or not (isinstance(klass, type) and issubclass(klass, BaseModel)):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for field, comment in FIELD_COMMENT.findall(source):
            notes.setdefault(field, comment.strip())
    return notes


def default_text(value) -> str:
    """A default as code; long lists and dicts (boilerplate patterns, entry lists) as their size only."""
    text = repr(value)
    if len(text) > 100 and isinstance(value, (list, tuple, dict)):
        return f"{len(value)} {'entries' if isinstance(value, dict) else 'items'} (see `curate stages`)"
    return code(text)


def settings_in_order(cls: type[Step]) -> list:
    """(name, field) of a stage's settings as the docs list them: the stage's own first, then those of a
    mixin marked `settings_last` (an endpoint's client settings: secondary to the model and the server)."""
    last = {f for k in cls.__mro__ if k.__dict__.get("settings_last") for f in k.__dict__.get("__annotations__", {})}
    return sorted(cls.model_fields.items(), key=lambda kv: kv[0] in last)  # stable: declaration order kept


def render_stage(name: str, cls: type[Step]) -> str:
    """One stage's section."""
    out = [f"## `{name}`", "", f"*{kind_of(cls)}*; `{cls.__module__}.{cls.__name__}`", "", summary(cls), ""]
    fields, notes = settings_in_order(cls), field_comments(cls)
    if fields:
        out += ["| setting | type | default | description |", "|---|---|---|---|"]
        for field, info in fields:
            default = "(required)" if info.is_required() else default_text(info.get_default(call_default_factory=True))
            why = info.description or notes.get(field, "")
            out.append(f"| `{field}` | {code(type_name(info.annotation))} | {default} | {cell(why)} |")
        out.append("")
    else:
        out += ["No settings.", ""]
    if cls.reads:
        out += ["Reads: " + ", ".join(f"`{c}`" for c in cls.reads), ""]
    if cls.writes:
        out += ["Writes: " + ", ".join(f"`{c}` ({cell(str(t))})" for c, t in cls.writes.items()), ""]
    if cls.reasons:
        out += ["| reason | meaning |", "|---|---|"]
        out += [f"| `{code_}` | {cell(why)} |" for code_, why in cls.reasons.items()]
        out.append("")
    return "\n".join(out)


def shipped_steps() -> dict[str, type[Step]]:
    """The stages curate ships (not ones a user or a test registered in this process)."""
    from curate.stage import STEP_PACKAGES

    return {n: c for n, c in load_builtin_steps().items() if c.__module__.rpartition(".")[0] in STEP_PACKAGES}


def render_markdown(registry: dict[str, type[Step]] | None = None) -> str:
    """The whole page: an index table, then one section per stage (default: the shipped ones), sorted by name."""
    registry = shipped_steps() if registry is None else registry
    names = sorted(registry)
    index = ["| stage | kind | what it does |", "|---|---|---|"]
    index += [f"| [`{n}`](#{n}) | {kind_of(registry[n]).split(' ')[0]} | {cell(summary(registry[n]))} |"
              for n in names]
    return "\n".join([HEADER, *index, "", *(render_stage(n, registry[n]) for n in names)]).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
