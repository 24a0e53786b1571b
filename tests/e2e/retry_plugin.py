"""A text filter for the --retry-failed tests: rows whose caption says "flaky" fail (the stage raises on
them) until `fixed: true`; `broken: true` makes its setup fail as a model that no longer loads does."""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from curate import Filter, register
from curate.models.clip import ModelLoadError


@register
class Flaky(Filter):
    """Drop captions that say "drop"; raise on captions that say "flaky" unless `fixed`."""

    name: ClassVar[str] = "flaky"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    reasons: ClassVar[dict[str, str]] = {"says_drop": "the caption says drop (test filter)"}

    fixed: bool = False
    broken: bool = False

    def setup(self) -> None:
        if self.broken:
            raise ModelLoadError("flaky: cannot load weights from /nowhere/flaky.pt (test)")

    def check(self, table: pa.Table) -> list[str | None]:
        texts = table.column("text").to_pylist()
        if not self.fixed and any("flaky" in (t or "") for t in texts):
            raise RuntimeError("flaky row (test)")
        return ["says_drop" if "drop" in (t or "") else None for t in texts]
