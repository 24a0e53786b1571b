"""Pairs from interleaved document shards: placement (mmc4) vs nearest text in page order, on a constructed document."""
import io
import json
import tarfile

from PIL import Image

from curate.interleaved.pairs import document_pairs, main, nearest_text, write_pairs

# page order: title, image 0, paragraph A, paragraph B, image 1, image 2, paragraph C
SEGMENTS = [{"type": "text", "text": "Shape notes 7"}, {"type": "image", "image": 0},
            {"type": "text", "text": "Filler one. A red circle."}, {"type": "text", "text": "A blue square. Filler two."},
            {"type": "image", "image": 1}, {"type": "image", "image": 2}, {"type": "text", "text": "  "},
            {"type": "text", "text": "A green star."}]
DOC = {"uid": "d7", "doc_id": 7, "segments": SEGMENTS,
       "doc_images": [{"segment": 1, "url": "u0"}, {"segment": 4, "url": "u1"}, {"segment": 5, "url": "u2"}],
       "sentences": ["Shape notes 7", "Filler one.", "A red circle.", "A blue square.", "Filler two.", "A green star."],
       "image_sentence": [2, 3, None]}


def test_nearest_text_prefers_the_text_before_on_a_tie_and_skips_blank_text():
    assert nearest_text(SEGMENTS, 1) == 0          # title and paragraph A both one away: the one before
    assert nearest_text(SEGMENTS, 4) == 3          # paragraph B just before
    assert nearest_text(SEGMENTS, 5) == 3          # two before vs the blank segment (skipped) and C three after
    assert nearest_text([{"type": "image", "image": 0}], 0) is None


def test_placement_uses_the_assigned_sentence_and_page_order_the_nearest_paragraph():
    placed = list(document_pairs(DOC, "placement"))
    assert placed == [(0, "A red circle.", "pair"), (1, "A blue square.", "pair"), (2, None, "no_sentence")]
    page = list(document_pairs(DOC, "page_order"))
    assert page == [(0, "Shape notes 7", "pair"), (1, "A blue square. Filler two.", "pair"),
                    (2, "A blue square. Filler two.", "pair")]
    no_text = {**DOC, "segments": [s for s in SEGMENTS if s["type"] == "image"]}
    assert {r for _, _, r in document_pairs(no_text, "page_order")} == {"no_text"}


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_write_pairs_accounts_for_every_image(tmp_path):
    src = tmp_path / "shards"
    src.mkdir()
    members = {"d7.json": json.dumps(DOC).encode(), "d7.txt": b"text", "d7.000.jpg": _jpeg("red"),
               "d7.002.jpg": _jpeg("blue")}  # image 1 failed upstream: no member
    with tarfile.open(src / "000000.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s = write_pairs(tmp_path, tmp_path / "placed", "placement")
    assert s["pairs"] == 1 and s["outcomes"] == {"pair": 1, "image_not_in_shard": 1, "no_sentence": 1}
    with tarfile.open(tmp_path / "placed" / "000000.tar") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar}
    assert got["d7_000.txt"] == b"A red circle." and got["d7_000.jpg"] == members["d7.000.jpg"]
    assert json.loads(got["d7_000.json"])["doc_id"] == 7
    s = write_pairs(src, tmp_path / "page", "page_order", samples_per_shard=1)
    assert s["pairs"] == 2 and s["outcomes"] == {"pair": 2, "image_not_in_shard": 1}
    assert sorted(p.name for p in (tmp_path / "page").glob("*.tar")) == ["000000.tar", "000001.tar"]
    assert main([str(src / "000000.tar"), str(tmp_path / "cli"), "--mode", "page_order"]) == 0
    assert json.loads((tmp_path / "cli" / "pairs.json").read_text())["pairs"] == 2
    assert main([str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2   # a one-line error, exit 2
