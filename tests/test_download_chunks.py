"""curate.download.image.RowChunks: the download stage's columns become Arrow a chunk of rows at a time, as soon as
every pending row of the chunk is done, so a part's images are not held as Python bytes and Arrow at once."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.download.image import RowChunks

TYPES = {"image": pa.binary(), "width": pa.int32()}


def test_chunks_are_built_when_their_last_pending_row_is_done_and_keep_row_order():
    pending = [0, 1, 2, 4, 5, 6]  # row 3 is not fetched (invalid URL / inactive): null, never waited for
    cols = RowChunks(7, TYPES, pending, size=3)
    for i in (5, 4, 1, 0):  # completion order is not row order
        cols.put(i, image=b"img%d" % i, width=i)
        cols.done(i)
    assert sorted(cols.chunks) == [1]  # rows 3-5 complete: built, its Python values let go
    assert cols.values["image"][3:6] == [None, None, None]
    cols.done(2)  # row 2 failed: done without values
    cols.put(6, image=b"img6", width=6)
    cols.done(6)
    image, width = cols.column("image"), cols.column("width")
    assert image.to_pylist() == [b"img0", b"img1", None, None, b"img4", b"img5", b"img6"]
    assert width.to_pylist() == [0, 1, None, None, 4, 5, 6]
    assert image.type == pa.binary() and width.type == pa.int32() and image.num_chunks == 3


def test_no_rows_and_rows_never_done():
    empty = RowChunks(0, TYPES, [])
    assert len(empty.column("image")) == 0
    cols = RowChunks(4, TYPES, [0, 1], size=2)
    cols.done(0)
    with pytest.raises(RuntimeError, match="never marked done"):
        cols.column("image")
