"""The interleaved steps in a plain loop: parse layouts and refusals, per-image download over loopback,
cross-document image dedup, image/document filters, and mmc4 placement on constructed embeddings."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate import schema
from curate.interleaved import _doc
from curate.interleaved.download import DocDownload
from curate.interleaved.filters import DocFilter, DocImageFilter
from curate.interleaved.image_dedup import DocImageDedup
from curate.interleaved.parse import ParseDocuments
from curate.interleaved.placement import assign, neighbours, sentence_layout, split_sentences
from curate.stage import run_local

from .conftest import doc_table


def _images(t, i):
    return t.column("doc_images")[i].as_py()


def test_parse_obelics_records_with_bad_rows_and_refused_urls():
    texts = [["Intro.", None, "After."], ["x", None], None, [None, None], ["t", None, None]]
    imgs = [[None, "pics/a.jpg", None], [None], [None], [None, None], [None, "javascript:alert(1)", "file:///etc/passwd"]]
    t = doc_table(5, texts=texts, images=imgs)
    out = ParseDocuments(max_images=10).process(t)
    rows = out.to_pylist()
    assert rows[0]["status"] == "ok" and rows[0]["text"] == "Intro.\n\nAfter."
    assert [s["type"] for s in rows[0]["segments"]] == ["text", "image", "text"]
    assert rows[0]["doc_images"][0]["url"] == "http://example.org/pics/a.jpg"  # relative -> page URL
    assert rows[0]["doc_images"][0]["segment"] == 1
    for i in (1, 2):  # misaligned lists, missing record
        assert (rows[i]["status"], rows[i]["reason"]) == ("failed", "doc_bad_record")
    assert (rows[3]["status"], rows[3]["reason"]) == ("failed", "doc_bad_record")  # neither set at a position
    refused = rows[4]["doc_images"]
    assert [(r["status"], r["reason"]) for r in refused] == [("failed", "image_url_refused")] * 2


def test_parse_html_caps_images_and_refuses_huge_pages():
    page = "<p>Some text here.</p>" + "".join(f"<img src='i{k}.jpg'>" for k in range(30))
    t = doc_table(3, html=[page, "x" * 2000, "<p></p>"])
    out = ParseDocuments(max_images=5, max_html_bytes=1000).process(t).to_pylist()
    recs = out[0]["doc_images"]
    assert len(recs) == 30 and [r["status"] for r in recs[:5]] == ["ok"] * 5
    assert {(r["status"], r["reason"]) for r in recs[5:]} == {("dropped", "image_over_cap")}
    assert (out[1]["status"], out[1]["reason"]) == ("failed", "html_too_large")
    assert (out[2]["status"], out[2]["reason"]) == ("dropped", "doc_empty")


def test_parse_fetches_pages_by_url(served):
    server, _ = served
    t = doc_table(2, url=[f"{server.url}/status/404/x.html", "ftp://nope/x.html"])
    out = ParseDocuments(layout="url").process(t).to_pylist()
    assert [(r["status"], r["reason"]) for r in out] == [("failed", "download_http_404"), ("failed", "download_invalid_url")]


def test_doc_download_records_per_image_status(served):
    server, blobs = served
    base = f"{server.url}/img/images"
    texts = [["t", None, None, None, None], ["u", None]]
    imgs = [[None, f"{base}/a.jpg", f"{base}/missing.jpg", f"{server.url}/status/500/x.jpg", blobs["data_url"]],
            [None, f"{server.url}/status/404/y.jpg"]]
    steps = [ParseDocuments(), DocDownload(image_size=32, timeout_s=5, on_all_failed="drop")]
    out = run_local(steps, doc_table(2, texts=texts, images=imgs))
    recs = _images(out, 0)
    assert [(r["status"], r["reason"]) for r in recs] == [
        ("ok", None), ("failed", "download_http_404"), ("failed", "download_http_500"), ("ok", None)]
    import hashlib

    assert recs[0]["sha256"] == hashlib.sha256(blobs["a"]).hexdigest()
    payload = out.column("doc_image_bytes")[0].as_py()
    assert payload[0][:3] == b"\xff\xd8\xff" and payload[1] is None and payload[3] is not None
    assert out.column("status")[0].as_py() == "ok"
    assert (out.column("status")[1].as_py(), out.column("reason")[1].as_py()) == ("dropped", "doc_all_images_failed")


def test_doc_download_has_no_hash_check_to_set():
    """Documents carry no per-image hash, so doc_download has no verify_hash/hash_col (it used to inherit them
    from download and ignore them): setting one is a one-line recipe error. The defaults older versions saved
    in every run's recipe.yaml still load, and are not written back."""
    from curate.recipe import RecipeError, build_recipe

    def recipe(cfg):
        return {"name": "t", "modality": "interleaved", "input": {"path": "x"}, "output": {"path": "y"},
                "stages": [{"parse_documents": {}}, {"doc_download": cfg}]}

    assert "verify_hash" not in DocDownload.model_fields and "hash_col" not in DocDownload.model_fields
    for cfg in ({"verify_hash": "sha256"}, {"hash_col": "image_sha256"}):
        with pytest.raises(RecipeError, match="doc_download has no (verify_hash|hash_col) setting") as err:
            build_recipe(recipe(cfg))
        assert "\n" not in str(err.value)
    saved = build_recipe(recipe({"verify_hash": None, "hash_col": "input_sha256", "timeout_s": 5}))
    assert saved.to_dict()["stages"][1]["doc_download"]["timeout_s"] == 5
    assert "verify_hash" not in saved.to_dict()["stages"][1]["doc_download"]


def test_doc_image_dedup_across_and_within_documents(served):
    server, _ = served
    base = f"{server.url}/img/images"
    texts = [["t", None, None], ["u", None, None]]
    imgs = [[None, f"{base}/b.jpg", f"{base}/c.jpg"], [None, f"{base}/a.jpg", f"{base}/b.jpg"]]
    steps = [ParseDocuments(), DocDownload(image_size=32), DocImageDedup()]
    out = run_local(steps, doc_table(2, texts=texts, images=imgs), schema.run_schema(
        {c: t for s in steps for c, t in s.writes.items()}))
    d0, d1 = _images(out, 0), _images(out, 1)
    assert [r["status"] for r in d0] == ["ok", "ok"]  # d000 comes first: its b and c (= a's bytes) are kept
    assert [(r["status"], r["reason"]) for r in d1] == [("dropped", "duplicate_image")] * 2
    assert out.column("image_dup_of")[1].as_py() == ["d000#1", "d000#0"]
    assert out.column("doc_image_bytes")[1].as_py() == [None, None]
    assert out.column("status").to_pylist() == ["ok", "ok"]  # documents stay; doc_filter decides
    # the first document in the input keeps its images, whatever the uids' order (uids are hashes)
    table = doc_table(2, texts=texts, images=imgs)
    table = table.set_column(table.column_names.index("uid"), "uid", pa.array(["z-first", "a-second"]))
    out = run_local(steps, table, schema.run_schema({c: t for s in steps for c, t in s.writes.items()}))
    assert [r["status"] for r in _images(out, 0)] == ["ok", "ok"]
    assert out.column("image_dup_of")[1].as_py() == ["z-first#1", "z-first#0"]


def _doc_with(recs, text="Some text.", payload=None, scores=None):
    t = doc_table(1)
    t = schema.put_column(t, "doc_images", [[{**_doc.image_record("http://x/i.jpg", None, 0), **r} for r in recs]], _doc.IMAGES_T)
    t = schema.put_column(t, "doc_image_bytes", [payload or [b"x"] * len(recs)], _doc.BYTES_T)
    t = schema.put_column(t, "image_clip_score", [scores], pa.list_(pa.float32()))
    return schema.set_rows(t, pa.array([True]), {"text": text})


def test_doc_image_filter_marks_images_not_documents():
    recs = [{"orig_width": 10, "orig_height": 100}, {"orig_width": 100, "orig_height": 500},
            {"orig_width": 100, "orig_height": 100}, {"orig_width": 100, "orig_height": 120}]
    out = DocImageFilter(min_side=32, max_aspect=4.0, min_clip_score=0.2).process(
        _doc_with(recs, scores=[0.9, 0.9, 0.1, 0.5]))
    got = [(r["status"], r["reason"]) for r in _images(out, 0)]
    assert got == [("dropped", "image_too_small"), ("dropped", "image_aspect_ratio"),
                   ("dropped", "image_unrelated_text"), ("ok", None)]
    assert out.column("doc_image_bytes")[0].as_py() == [None, None, None, b"x"]
    assert out.column("status")[0].as_py() == "ok"


@pytest.mark.parametrize("text,n_ok,cfg,reason", [
    ("", 1, {}, "doc_no_text"),
    ("short", 1, {"min_chars": 10}, "doc_text_too_short"),
    ("x" * 50, 1, {"max_chars": 20}, "doc_text_too_long"),
    ("enough text", 0, {"min_images": 1}, "doc_too_few_images"),
    ("enough text", 3, {"max_images": 2}, "doc_too_many_images"),
    ("ten chars!", 2, {"max_images_per_kchar": 100}, "doc_image_text_ratio"),
    ("enough text", 2, {"min_images": 1, "max_images": 2}, None),
])
def test_doc_filter(text, n_ok, cfg, reason):
    recs = [{}] * n_ok + [{"status": "failed", "reason": "download_http_404"}]
    out = DocFilter(**cfg).process(_doc_with(recs, text=text))
    assert out.column("reason")[0].as_py() == reason


def test_placement_recovers_a_known_assignment_from_noisy_embeddings():
    rng = np.random.default_rng(0)
    hits = total = 0
    for _ in range(50):
        n_sent, n_img = int(rng.integers(4, 12)), int(rng.integers(1, 4))
        sent = rng.normal(size=(n_sent, 32))
        truth = rng.choice(n_sent, n_img, replace=False)
        img = sent[truth] + rng.normal(scale=0.5, size=(n_img, 32))
        norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        placed = assign(norm(img) @ norm(sent).T)
        assert len(set(placed.tolist())) == n_img  # each sentence takes at most one image
        hits += int((placed == truth).sum())
        total += n_img
    assert hits / total > 0.95


def test_placement_prefers_the_joint_optimum_over_greedy():
    # image 0 is slightly closer to sentence 0 than image 1 is, but image 1 has nowhere else to go
    sim = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert assign(sim).tolist() == [1, 0]
    assert np.argmax(sim, axis=1).tolist() == [0, 0]  # greedy would collide


def test_placement_edge_cases():
    assert assign(np.zeros((3, 0))).tolist() == [-1, -1, -1]
    assert assign(np.zeros((0, 4))).tolist() == []
    many = assign(np.eye(2)[[0, 1, 0, 1, 0]])  # 5 images, 2 sentences: sentences repeat
    assert sorted(many.tolist()) == [0, 0, 0, 1, 1]


def test_sentences_and_neighbouring_text():
    assert split_sentences("One two. Three four!  Five? six") == ["One two.", "Three four!", "Five?", "six"]
    segs = [{"type": "text", "text": "A. B."}, {"type": "image"}, {"type": "image"}, {"type": "text", "text": "C."},
            {"type": "image"}]
    sentences, per = sentence_layout(segs)
    assert sentences == ["A.", "B.", "C."]
    assert neighbours(per, 1) == [0, 1, 2] and neighbours(per, 4) == [2]
