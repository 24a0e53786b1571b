"""A stage for the fetch-session tests: every row records the sha256 of the file its worker read from
`url` through the fetch cache (storage.local_file), so a test sees which bytes each task read."""
from __future__ import annotations

import hashlib
from typing import ClassVar

import pyarrow as pa

from curate import Annotations, Stage, register
from curate.io import storage


@register
class ReadsUrl(Stage):
    """Read the file at `url` (fetched as a stage setting's file is) and record its digest per row."""

    name: ClassVar[str] = "reads_url"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {"read_sha256": pa.string()}

    url: str

    def annotate(self, active: pa.Table) -> Annotations:
        digest = hashlib.sha256(storage.local_file(self.url, "reads_url.url").read_bytes()).hexdigest()
        return Annotations(columns={"read_sha256": [digest] * active.num_rows})


@register
class ReadsUrlModel(Stage):
    """ReadsUrl as a model stage (a Ray actor): reads `url` in setup, as a model loads its weights, and
    again at each call (as a stage may reread a list); records both digests per row."""

    name: ClassVar[str] = "reads_url_model"
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {"weights_sha256": pa.string()}
    uses_model: ClassVar[bool] = True

    url: str

    def setup(self) -> None:
        self._digest = hashlib.sha256(storage.local_file(self.url, "reads_url_model.url").read_bytes()).hexdigest()

    def annotate(self, active: pa.Table) -> Annotations:
        now = hashlib.sha256(storage.local_file(self.url, "reads_url_model.url").read_bytes()).hexdigest()
        return Annotations(columns={"weights_sha256": [f"{self._digest} {now}"] * active.num_rows})
