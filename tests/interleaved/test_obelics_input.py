"""OBELICS records as OBELICS ships them (`texts` and `images` lists, no `url` column) through the shipped
`interleaved` recipe: the input check, the split and its first two stages, with the images fetched from a
loopback server. The recipe used to refuse such input ("input has no column 'url'"), and `--set
input.url_col=null` was refused too; its doc_download upscaled small images (96x80 became 307x256)."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate import schema
from curate.io import reader
from curate.recipe import load_recipe
from curate.stage import run_local


def _records(base: str) -> list[dict]:
    return [{"texts": ["A page about shapes.", None], "images": [None, f"{base}/img/images/a.jpg"]},
            {"texts": [None, "Another page."], "images": [f"{base}/img/images/b.jpg", None]}]


def test_obelics_records_without_a_url_column(served, tmp_path):
    server, blobs = served
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(server.url)))
    for overrides in ((), ("input.url_col=null",)):
        rec = load_recipe("interleaved", overrides, input_path=str(path), output_path=str(tmp_path / "out"))
        assert reader.check_input(rec.input_spec()) is False  # accepted: no image bytes, no url needed
    out = tmp_path / "parts"
    sizes, extras = reader.split_parts(rec.input_spec(), 10, lambda k: out / f"part-{k:06d}.parquet")
    assert sizes == [2] and {"texts", "images"} <= set(extras)
    part = pq.read_table(out / "part-000000.parquet")
    part = part.append_column("status", pa.array([schema.OK] * part.num_rows))  # as the runner starts each row
    steps = [s for s in rec.steps if s.name in ("parse_documents", "doc_download")]
    cols = {**extras, **{c: t for s in steps for c, t in s.writes.items()}}
    done = run_local(steps, part, schema.run_schema(cols)).to_pylist()
    assert [(d["status"], d["url"]) for d in done] == [("ok", None), ("ok", None)]
    sizes = {name: Image.open(io.BytesIO(blobs[name])).size for name in ("a", "b")}
    got = [(r["width"], r["height"], r["orig_width"], r["orig_height"]) for d in done for r in d["doc_images"]]
    assert all(r["status"] == "ok" for d in done for r in d["doc_images"])
    assert max(max(s) for s in sizes.values()) < 256  # small images: the recipe's image_size is 256
    assert got == [(*sizes["a"], *sizes["a"]), (*sizes["b"], *sizes["b"])]  # kept at their size, not upscaled


def test_a_bad_obelics_record_fails_alone(served, tmp_path):
    """A record with `"texts": [123, null], "images": [null, 456]` (or a line that is not JSON) made the
    whole input refused ("Column(/texts/[]) changed from string to number in row 13"); each now fails
    alone at input and the other records are parsed."""
    server, _ = served
    good = _records(server.url) * 7
    lines = [json.dumps(r) for r in good[:12]] + ['{"texts": [123, null], "images": [null, 456]}', '{"texts": ["cut'] + [
        json.dumps(r) for r in good[12:]]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rec = load_recipe("interleaved", (), input_path=str(path), output_path=str(tmp_path / "out"))
    assert reader.check_input(rec.input_spec()) is False
    out = tmp_path / "parts"
    sizes, extras = reader.split_parts(rec.input_spec(), 100, lambda k: out / f"part-{k:06d}.parquet")
    assert sizes == [len(lines)]
    part = pq.read_table(out / "part-000000.parquet")
    assert [r["reason"] for r in part.to_pylist()] == [None] * 12 + ["input_bad_record"] * 2 + [None] * 2
    part = part.set_column(part.schema.get_field_index("status"), "status",
                           pa.array([s or schema.OK for s in part.column("status").to_pylist()]))
    steps = [s for s in rec.steps if s.name == "parse_documents"]
    cols = {**extras, **{c: t for s in steps for c, t in s.writes.items()}}
    done = run_local(steps, part, schema.run_schema(cols)).to_pylist()
    assert [d["status"] for d in done] == ["ok"] * 12 + ["failed"] * 2 + ["ok"] * 2
    assert [d["text"] for d in done[12:14]] == [None, None] and f"{path}:13: field 'texts'" in done[12]["error"]
    assert done[12]["error"].endswith("Expected bytes, got a 'int' object") and ":14: not valid JSON" in done[13]["error"]


def test_docs_offline_command(ray_address, served, tmp_path, monkeypatch, cli_inprocess):
    """docs/interleaved.md's offline command, read from the page and run as it is, on a docs.jsonl of
    good records plus one with numbers in its lists and one line that is not JSON: they fail alone at
    input, the others are kept, every line is accounted for."""
    from pathlib import Path

    import shlex

    page = Path(__file__).resolve().parents[2] / "docs" / "interleaved.md"
    line = next(li for li in page.read_text().splitlines() if li.startswith("curate run interleaved") and "random_init" in li)
    server, _ = served
    lines = [json.dumps(r) for r in _records(server.url)] + ['{"texts": [123, null], "images": [null, 456]}', "{cut"]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    proc = cli_inprocess(*shlex.split(line)[1:])
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == 4 and manifest["counts"]["kept"] == 2, manifest["counts"]
    meta = pq.read_table(tmp_path / "out" / "meta").to_pylist()
    assert sorted((r["status"], r["stage"], r["reason"]) for r in meta if r["status"] != "ok") == [
        ("failed", "input", "input_bad_record")] * 2
