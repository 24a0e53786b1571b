"""docs/stages.md is generated from the registry (curate/stage_docs.py) and must equal what the code says now."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa

from curate.stage import Filter
from curate.stage_docs import render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "stages.md"


def test_docs_stages_md_is_the_generated_text():
    expected = render_markdown()
    actual = DOC.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "docs/stages.md", "generated"))[:60])
        raise AssertionError("docs/stages.md is stale; regenerate with "
                             "`python -m curate.stage_docs > docs/stages.md`\n" + diff)


def test_every_registered_stage_and_reason_is_on_the_page():
    text = DOC.read_text(encoding="utf-8")
    from curate.stage_docs import shipped_steps

    for name, cls in shipped_steps().items():  # what tests register in this process is not shipped
        assert f"## `{name}`" in text, name
        for reason in cls.reasons:
            assert f"| `{reason}` |" in text, (name, reason)
    # rich would have eaten this bracketed text (issue 16: "lies in ."); plain Markdown keeps it
    assert "[min_motion, max_motion]" in text


class _Watermark(Filter):
    """Drop images with a visible watermark | a pipe in the summary.

    Second paragraph: implementation notes that stay out of the page."""

    name: ClassVar[str] = "watermark_test"
    reads: ClassVar[tuple[str, ...]] = ("image",)
    writes: ClassVar[dict] = {"watermark_score": pa.float32()}
    reasons: ClassVar[dict[str, str]] = {"watermarked": "score above max_score"}
    max_score: float = 0.5  # scores above this are watermarked
    mode: Literal["a", "b"] = "a"

    def check(self, row):  # never called: only rendered
        return None


def test_renderer_uses_docstring_summary_field_comments_and_escapes_pipes():
    text = render_markdown({"watermark_test": _Watermark})
    assert "Drop images with a visible watermark \\| a pipe in the summary." in text
    assert "Second paragraph" not in text
    assert "| `max_score` | `float` | `0.5` | scores above this are watermarked |" in text
    assert "| `mode` | `Literal['a', 'b']` | `'a'` |  |" in text
    assert "Writes: `watermark_score` (float)" in text
    assert "| `watermarked` | score above max_score |" in text
    assert "*filter (keeps or drops each row)*" in text


# Pages other branches add at the same time as this one (issue 16): linked from README before they land.
PAGES_ADDED_ELSEWHERE = {"install.md", "cli.md", "storage.md", "python_api.md"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_doc_pages_resolve():
    root = DOC.parents[1]
    pages = [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve()
            if not dest.exists():
                assert dest.name in PAGES_ADDED_ELSEWHERE, f"{page.name}: broken link {target}"
                continue
            if anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
                assert anchor in slugs, f"{page.name}: no heading #{anchor} in {path}"


def test_every_shipped_recipe_is_in_the_recipes_table():
    """issue 16: the README's "Shipped recipes" named 3 of 8. A new pipelines/*.yaml needs a row in docs/recipes.md."""
    root = DOC.parents[1]
    table = (root / "docs" / "recipes.md").read_text(encoding="utf-8")
    missing = [p.stem for p in sorted((root / "pipelines").glob("*.yaml")) if f"| `{p.stem}` |" not in table]
    assert not missing, f"add a row for {missing} to the Shipped recipes table in docs/recipes.md"
