"""Text that is not UTF-8, in every input kind: the row fails alone at input (`input_bad_text`) with where and
which byte; every other row is read and kept; nothing is decoded with U+FFFD.

Arrow's JSON reader and Parquet files let a latin-1 `caf\\xe9` into the input parts, where it raised
UnicodeDecodeError in the first stage that read the caption (stage_error) and in the report (a traceback);
a CSV with one such cell refused the whole run; tar members and caption files were decoded with U+FFFD
in the kept caption, silently. Each test here ran real `curate run`s (in process) or the real split.
"""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.io import reader

RECIPE = "name: t\nstages:\n  - caption_text: {min_words: 1}\n"
IMAGE_RECIPE = "name: t\nstages:\n  - load_image: {}\n  - caption_text: {min_words: 1}\n"
FIX = "re-encode it as UTF-8"


def jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def bad_parquet(path) -> None:
    """A Parquet file whose string column holds latin-1 bytes (pyarrow writes what a string array holds)."""
    raw = pa.array([b"a cat", b"caf\xe9 au lait", b"a dog"], pa.binary())
    caption = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    pq.write_table(pa.table({"url": [f"http://h/{i}.jpg" for i in range(3)], "caption": caption}), path)


def url_list(kind: str, tmp_path):
    """A 3-row URL list of `kind` whose second row's caption is latin-1; (path, where its error says it is)."""
    if kind == "jsonl":
        path = tmp_path / "u.jsonl"
        path.write_bytes(b'{"url": "http://h/0.jpg", "caption": "a cat"}\n'
                         b'{"url": "http://h/1.jpg", "caption": "caf\xe9 au lait"}\n\n'
                         b'{"url": "http://h/2.jpg", "caption": "a dog"}\n')
        return path, f"{path}:2: not UTF-8 text: byte 0xe9"
    if kind == "csv":
        path = tmp_path / "u.csv"
        path.write_bytes(b"url,caption\nhttp://h/0.jpg,a cat\nhttp://h/1.jpg,caf\xe9 au lait\nhttp://h/2.jpg,a dog\n")
    else:
        path = tmp_path / "u.parquet"
        bad_parquet(path)
    return path, f"{path}: record 2: column 'caption' is not UTF-8 text: byte 0xe9 at offset 3 (after 'caf')"


def run(cli_inprocess, tmp_path, recipe: str, path, *sets):
    (tmp_path / "r.yaml").write_text(recipe)
    out = tmp_path / "out"
    proc = cli_inprocess("run", str(tmp_path / "r.yaml"), "-i", str(path), "-o", str(out), *sets)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout  # the report read every row back
    manifest = json.loads((out / "manifest.json").read_text())
    meta = pq.read_table(out / "meta").to_pylist()  # every string in it is UTF-8 (to_pylist decodes them)
    return manifest["counts"], sorted(meta, key=lambda r: r["row"])


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_a_url_list_row_that_is_not_utf8_fails_alone(kind, tmp_path, cli_inprocess):
    """Before: jsonl and parquet ended the row as caption_text/stage_error (UnicodeDecodeError) with its
    bytes in the metadata and two report sections failing with a traceback; csv refused the whole run."""
    path, where = url_list(kind, tmp_path)
    counts, meta = run(cli_inprocess, tmp_path, RECIPE, path)
    assert counts["rows"] == 3 and counts["kept"] == 2 and counts["failed"] == {"input/input_bad_text": 1}, counts
    assert [(r["status"], r["text"]) for r in meta] == [("ok", "a cat"), ("failed", None), ("ok", "a dog")]
    assert (meta[1]["stage"], meta[1]["reason"]) == ("input", "input_bad_text")
    assert meta[1]["error"].startswith(where) and FIX in meta[1]["error"], meta[1]["error"]


def test_obelics_records_that_are_not_utf8_fail_alone(tmp_path):
    """An OBELICS line with a latin-1 byte in `texts` (Arrow read it, the parse stage raised on it) and one
    with a `\\ud800` escape (half a UTF-16 pair: Arrow refused the file, then pa.array raised
    UnicodeEncodeError, a traceback) each fail alone at input, with file:line; the others are read."""
    good = [{"texts": ["A page.", None], "images": [None, f"http://h/{i}.jpg"]} for i in range(3)]
    lines = [json.dumps(r).encode() for r in good]
    lines.insert(1, b'{"texts": ["Un caf\xe9.", null], "images": [null, "http://h/x.jpg"]}')
    lines.insert(3, b'{"texts": ["half \\ud800 pair", null], "images": [null, "http://h/y.jpg"]}')
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    from curate.recipe import load_recipe

    spec = load_recipe("interleaved", (), input_path=str(path), output_path=str(tmp_path / "out")).input_spec()
    assert reader.check_input(spec) is False
    out = tmp_path / "parts"
    sizes, _ = reader.split_parts(spec, 100, lambda k: out / f"part-{k:06d}.parquet")
    rows = pq.read_table(out / "part-000000.parquet").to_pylist()
    assert sizes == [5] and [r["reason"] for r in rows] == [None, "input_bad_text", None, "input_bad_text", None]
    assert rows[1]["error"].startswith(f"{path}:2: not UTF-8 text: byte 0xe9") and rows[1]["texts"] is None
    assert rows[3]["error"].startswith(f"{path}:4: not UTF-8 text: a \\ud800 escape is half of a UTF-16 pair")
    assert [r["texts"] for r in rows[::2]] == [["A page.", None]] * 3


def test_webdataset_text_members_that_are_not_utf8_fail_alone(tmp_path, cli_inprocess):
    """A .txt or .json member that is not UTF-8 was decoded with U+FFFD and the sample kept, its caption
    changed without a trace; now its sample fails alone (input_bad_text, tar and member named)."""
    tar_path = tmp_path / "s.tar"
    with tarfile.open(tar_path, "w") as tar:
        for k, (name, data) in enumerate([("txt", b"a red square"), ("txt", b"caf\xe9 au lait"),
                                          ("json", b'{"caption": "na\xefve"}'), ("txt", b"a blue square")]):
            add(tar, f"{k:03d}.jpg", jpeg((60 * k, 0, 0)))
            add(tar, f"{k:03d}.{name}", data)
    counts, meta = run(cli_inprocess, tmp_path, IMAGE_RECIPE, tar_path, "--set", "input.format=webdataset")
    assert counts["rows"] == 4 and counts["kept"] == 2 and counts["failed"] == {"input/input_bad_text": 2}, counts
    assert [(r["status"], r["text"]) for r in meta] == [("ok", "a red square"), ("failed", None), ("failed", None),
                                                        ("ok", "a blue square")]
    assert meta[1]["error"].startswith(f"{tar_path}: member 001.txt is not UTF-8 text: byte 0xe9 at offset 3")
    assert meta[2]["error"].startswith(f"{tar_path}: member 002.json is not UTF-8 text: byte 0xef")


def test_image_folder_captions_that_are_not_utf8_fail_alone(tmp_path, cli_inprocess):
    """A sidecar caption file that is not UTF-8 (was: U+FFFD in the kept caption) and a metadata.csv caption
    that is not (was: Arrow refused the whole input) each fail their image alone."""
    root = tmp_path / "imgs"
    root.mkdir()
    for k, cap in enumerate([b"a red square\n", b"caf\xe9 au lait\n", None, b"a blue square"]):
        (root / f"{k}.jpg").write_bytes(jpeg((0, 60 * k, 0)))
        if cap is not None:
            (root / f"{k}.txt").write_bytes(cap)
    (root / "metadata.csv").write_bytes(b"file_name,text\n2.jpg,na\xefve\n")
    counts, meta = run(cli_inprocess, tmp_path, IMAGE_RECIPE, root, "--set", "input.format=images")
    assert counts["rows"] == 4 and counts["kept"] == 2 and counts["failed"] == {"input/input_bad_text": 2}, counts
    by_key = {r["input_key"]: r for r in meta}
    assert [(k, by_key[k]["status"], by_key[k]["text"]) for k in sorted(by_key)] == [
        ("0.jpg", "ok", "a red square"), ("1.jpg", "failed", None), ("2.jpg", "failed", None),
        ("3.jpg", "ok", "a blue square")]
    assert by_key["1.jpg"]["error"].startswith(f"caption file {root}/1.txt is not UTF-8 text: byte 0xe9")
    assert by_key["2.jpg"]["error"].startswith(f"{root}/metadata.csv row 1: column 'text' is not UTF-8 text")
