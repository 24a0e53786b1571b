"""Filters mark rows (never delete them) with declared reason codes, and only touch active rows."""
import pyarrow as pa

from curate import schema
from curate.filters.caption_text import CaptionText
from curate.filters.image_size import ImageSize


def rows(**cols):
    n = len(next(iter(cols.values())))
    base = {"uid": [str(i) for i in range(n)], "status": ["ok"] * n, "stage": [None] * n, "reason": [None] * n,
            "error": [None] * n}
    base.update(cols)
    t = pa.table(base)
    return schema.conform(t, schema.run_schema({"width": pa.int32(), "height": pa.int32(),
                                                 "orig_width": pa.int32(), "orig_height": pa.int32()}))


def test_image_size_uses_original_size():
    t = rows(orig_width=[16, 400, 100, None, 100], orig_height=[20, 40, 100, None, 90],
             width=[64, 64, 64, 64, 64], height=[64, 64, 64, 64, 64])
    out = ImageSize(min_side=32, max_aspect=4).process(t)
    assert out.column("reason").to_pylist() == ["image_too_small", "image_aspect_ratio", None, None, None]
    assert out.column("status").to_pylist() == ["dropped", "dropped", "ok", "ok", "ok"]
    assert out.column("stage").to_pylist()[:2] == ["image_size", "image_size"]
    assert out.num_rows == t.num_rows


def test_caption_text_reasons():
    texts = ["", "   ", "IMG_1234.jpg", "click here", "DSC_0042.JPG", "image", "red", "a red circle on grass",
             "a photo of a red circle", " ".join(["w"] * 300), None]
    t = rows(text=texts)
    out = CaptionText(min_words=2, max_words=256).process(t)
    assert out.column("reason").to_pylist() == [
        "caption_empty", "caption_empty", "caption_boilerplate", "caption_boilerplate", "caption_boilerplate",
        "caption_boilerplate", "caption_too_short", None, None, "caption_too_long", "caption_empty"]


def test_filters_leave_decided_rows_alone():
    t = rows(text=["click here", "fine caption here"])
    t = schema.mark(t, pa.array([True, False]), schema.FAILED, "download", "download_http_404")
    out = CaptionText().process(t)
    assert out.column("status").to_pylist() == ["failed", "ok"]
    assert out.column("reason").to_pylist() == ["download_http_404", None]


def test_unsafe_uids_get_safe_stable_keys():
    from curate.io.shard_writer import key_for

    assert key_for("3ffd15d56cade49f2ce2") == "3ffd15d56cade49f2ce2"
    for uid in ("img.001", "a/b", "x y", "ü"):
        k = key_for(uid)
        assert k == key_for(uid) and "." not in k and "/" not in k
    assert key_for("img.001") != key_for("img_001")
