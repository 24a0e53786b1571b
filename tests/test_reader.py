"""URL lists in Parquet, CSV and JSONL split into the same parts with the same stable uids."""
import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from curate.io import reader
from curate.io.uids import Uids, row_uid


def write_all(tmp_path, table):
    pq.write_table(table, tmp_path / "u.parquet")
    pcsv.write_csv(table, tmp_path / "u.csv")
    with open(tmp_path / "u.jsonl", "w") as f:
        for r in table.to_pylist():
            f.write(json.dumps(r) + "\n")
    return [tmp_path / "u.parquet", tmp_path / "u.csv", tmp_path / "u.jsonl"]


def split(path, tmp_path, per=4, **kw):
    out = tmp_path / f"parts-{path.suffix[1:]}"
    spec = reader.InputSpec(path=str(path), source="s", **kw)
    sizes, extras = reader.split_parts(spec, per, lambda k: out / f"part-{k:06d}.parquet")
    return sizes, extras, pa.concat_tables([pq.read_table(out / f"part-{k:06d}.parquet") for k in range(len(sizes))])


def test_formats_agree_and_duplicates_get_distinct_uids(tmp_path):
    t = pa.table({"url": [f"http://h/{i % 7}.jpg" for i in range(10)], "caption": [f"c{i % 7}" for i in range(10)],
                  "extra": list(range(10))})
    results = [split(p, tmp_path) for p in write_all(tmp_path, t)]
    for sizes, extras, parts in results:
        assert sizes == [4, 4, 2]
        assert parts.column("row").to_pylist() == list(range(10))
        assert len(set(parts.column("uid").to_pylist())) == 10  # rows 7-9 repeat rows 0-2: still unique
        assert "extra" in extras
    assert results[0][2].column("uid") == results[1][2].column("uid") == results[2][2].column("uid")


def test_id_column_and_clashing_names(tmp_path):
    t = pa.table({"link": ["http://h/1", "http://h/2"], "alt": ["a", "b"], "key": ["k1", "k2"], "status": [1, 2]})
    pq.write_table(t, tmp_path / "x.parquet")
    sizes, extras, parts = split(tmp_path / "x.parquet", tmp_path, url_col="link", text_col="alt", id_col="key")
    assert parts.column("uid").to_pylist() == ["k1", "k2"]
    assert "input_status" in extras and "status" not in parts.column_names
    pq.write_table(pa.table({"url": ["a", "b"], "caption": ["x", "y"], "id": [1, 1]}), tmp_path / "d.parquet")
    with pytest.raises(reader.InputError, match="repeated value"):
        split(tmp_path / "d.parquet", tmp_path, id_col="id")


def test_missing_column_message(tmp_path):
    pq.write_table(pa.table({"u": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(reader.InputError, match="no column 'url'.*columns are: u"):
        split(tmp_path / "x.parquet", tmp_path)


def _reference_uids(source, rows):
    """The uid rule spelled out row by row (curate.io.uids' docstring): SHA-1 of source, url (with the
    input_key), text and the row's occurrence among earlier rows with the same url, text and key, all as
    Python formats them (None and 'None' are one value: they give one SHA-1 input)."""
    seen, out = {}, []
    for u, t, k in rows:
        ident = f"{u}\0{t}" if k is None else f"{u}\0{t}\0{k}"
        occ = seen.get(ident, 0)
        seen[ident] = occ + 1
        out.append(row_uid(source, u, t, occ, k))
    return out


def test_column_uids_are_the_row_rule_on_hostile_values():
    """DuckDB computes uids a batch at a time; they must be the row rule's, value for value: None vs the
    string 'None', NUL bytes, non-ASCII, repeats inside a batch and across batches, keyed and unkeyed rows."""
    urls = ["http://a", None, "None", "x\0y", "ü/é", "http://a", None, "", "http://a", "x\0y", "http://a"]
    texts = ["t", "t", "t", "z", None, "t", "t", "", "t", "z", "None"]
    keys = [None, None, None, "k", None, "k", None, "", None, "k", None]
    for keyed in (False, True):
        ks = keys if keyed else [None] * len(urls)
        rows = list(zip(urls, texts, ks)) * 2  # the second copy repeats every row in a later batch
        want = _reference_uids("src", rows)
        uids, got = Uids("src"), []
        for lo in (0, 4, 11, 15):
            hi = {0: 4, 4: 11, 11: 15, 15: 22}[lo]
            u, t, k = (list(c) for c in zip(*rows[lo:hi]))
            got += uids.of_batch(pa.array(u, pa.string()), pa.array(t, pa.string()),
                                 pa.array(k, pa.string()) if keyed else None).to_pylist()
        assert got == want, keyed
        assert len(set(got)) == len(got)
    ints = Uids("src").of_batch(pa.array(["a", "a"]), pa.array(["t", "t"]), pa.array([1, 1]))  # Python path
    assert ints.to_pylist() == _reference_uids("src", [("a", "t", 1), ("a", "t", 1)])


def test_a_bad_jsonl_line_fails_alone(tmp_path):
    """One record with a number where the others hold text, or one line that is not JSON, made Arrow refuse
    the whole input ("changed from string to number in row 13"). Each is now a row failed at input; every
    other line is read, in order, with the types the good records give (counts in == counts out)."""
    good = [{"url": f"http://h/{i}.jpg", "caption": f"c{i}", "n": i} for i in range(6)]
    lines = [json.dumps(r) for r in good[:3]] + ['{"url": 5, "caption": "x", "n": 1}', '{"url": "http://h/x', "[1, 2]",
                                                   ""] + [json.dumps(r) for r in good[3:]]
    path = tmp_path / "u.jsonl"
    path.write_text("\n".join(lines) + "\n")
    spec = reader.InputSpec(path=str(path), source="s")
    assert reader.check_input(spec) is False
    sizes, extras, parts = split(path, tmp_path, per=4)
    assert sizes == [4, 4, 1] and extras == {"n": pa.int64()}  # the blank line is no record
    rows = parts.to_pylist()
    assert [r["url"] for r in rows] == [f"http://h/{i}.jpg" for i in range(3)] + [None] * 3 + [
        f"http://h/{i}.jpg" for i in range(3, 6)]
    bad = rows[3:6]
    assert {(r["status"], r["stage"], r["reason"]) for r in bad} == {("failed", "input", "input_bad_record")}
    assert bad[0]["error"].startswith(f"{path}:4: field 'url' is not string")
    assert bad[1]["error"].startswith(f"{path}:5: not valid JSON") and "not a JSON object" in bad[2]["error"]
    assert all(r["status"] is None for r in rows[:3] + rows[6:])


def test_a_jsonl_file_without_one_record_is_one_line_error(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text("url,caption\nhttp://h/a.jpg,a\n")  # a CSV named .jsonl
    with pytest.raises(reader.InputError, match=r"^cannot read .*u\.jsonl as json: ") as err:
        reader.check_input(reader.InputSpec(path=str(path), source="s"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_folder_of_files_whose_types_differ_splits_as_one_dataset(tmp_path, fmt):
    """Files read one by one (so a bad row is named by its file) must still read with the dataset's schema:
    `w` int32 in one Parquet file and int64 in the other refused the input ("Unable to merge: Field w has
    incompatible types"), and a column only the second file has went into some parts only (their schemas
    differed)."""
    folder = tmp_path / "in"
    folder.mkdir()
    a = pa.table({"url": ["http://h/a.jpg", "http://h/b.jpg"], "caption": ["a", "b"], "w": pa.array([1, 2], pa.int32())})
    b = pa.table({"url": ["http://h/c.jpg"], "caption": ["c"], "w": pa.array([3], pa.int64()), "only_b": ["x"]})
    if fmt == "parquet":
        pq.write_table(a, folder / "a.parquet")
        pq.write_table(b, folder / "b.parquet")
    else:
        pcsv.write_csv(a, folder / "a.csv")
        pcsv.write_csv(b, folder / "b.csv")
    sizes, extras, parts = split(folder, tmp_path, per=2, format=fmt)
    assert sizes == [2, 1] and parts.column("text").to_pylist() == ["a", "b", "c"]
    assert pq.read_schema(tmp_path / "parts-/part-000000.parquet") == pq.read_schema(tmp_path / "parts-/part-000001.parquet")


def test_a_field_seen_late_in_a_refused_jsonl_file_is_read(tmp_path, monkeypatch):
    """The line-by-line reader took its columns from the first SAMPLE records: a field first seen after them
    (an optional `license`) or null until then (`px`) failed every later record that had it."""
    from curate.io import jsonlines

    monkeypatch.setattr(jsonlines, "SAMPLE", 3)
    lines = ['{"url": "http://h/0.jpg", "caption": "c0", "px": null}', "not json"]
    lines += [json.dumps({"url": f"http://h/{i}.jpg", "caption": f"c{i}", "px": None}) for i in range(1, 4)]
    lines += ['{"url": "http://h/8.jpg", "caption": "c8", "px": 640}', '{"url": "http://h/9.jpg", "caption": "c9", "license": "cc"}']
    path = tmp_path / "u.jsonl"
    path.write_text("\n".join(lines) + "\n")
    sizes, extras, parts = split(path, tmp_path, per=10)
    rows = parts.to_pylist()
    assert sizes == [7] and [r["reason"] for r in rows].count("input_bad_record") == 1
    assert extras == {"px": pa.int64(), "license": pa.string()}
    assert (rows[5]["px"], rows[6]["license"]) == (640, "cc") and rows[5]["status"] is rows[6]["status"] is None
