"""Fixtures for the interleaved tests: a loopback server with a few images and HTML pages, and input tables."""
from __future__ import annotations

import base64

import pyarrow as pa
import pytest

from curate import schema
from curate.demo import images
from curate.demo.server import DemoServer


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Server root with files/images/{a,b,c}.jpg (c = a's bytes), tiny.jpg and pages/p.html; yields (server, files)."""
    root = tmp_path_factory.mktemp("served")
    d = root / "files" / "images"
    d.mkdir(parents=True)
    blobs = {}
    for name, seed, over in (("a", 1, {}), ("b", 2, {}), ("tiny", 3, {"width": 12, "height": 12})):
        img, _ = images.render(seed, **over)
        blobs[name] = images.encode(img)
        (d / f"{name}.jpg").write_bytes(blobs[name])
    (d / "c.jpg").write_bytes(blobs["a"])
    png = images.encode(images.render(4)[0], "png")
    blobs["data_url"] = "data:image/png;base64," + base64.b64encode(png).decode()
    with DemoServer(root) as server:
        yield server, blobs


def doc_table(n: int, **cols) -> pa.Table:
    """An input part as the reader makes it: core columns (status ok) plus the given input columns."""
    base = {"uid": [f"d{i:03d}" for i in range(n)], "source": ["t"] * n, "modality": ["interleaved"] * n,
            "part": pa.array([0] * n, pa.int32()), "row": pa.array(range(n), pa.int64()),
            "url": cols.pop("url", [f"http://example.org/{i}.html" for i in range(n)]),
            "text": pa.array([None] * n, pa.string()), "status": [schema.OK] * n}
    t = pa.table({**base, **cols})
    return schema.conform(t, schema.run_schema({}))
