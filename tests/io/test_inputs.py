"""Input that users already have: WebDataset tars, folders of images, Parquet with image bytes, long captions.

Unit level (no Ray): the reader's index and the load_image stage over real tar, image and Parquet files.
"""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate import schema
from curate.download.load_image import LoadImage
from curate.io import reader


def jpeg(colour, size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def split(spec, tmp_path, per=4):
    out = tmp_path / "parts"
    sizes, extras = reader.split_parts(spec, per, lambda k: out / f"part-{k:06d}.parquet")
    parts = [pq.read_table(out / f"part-{k:06d}.parquet") for k in range(len(sizes))]
    return sizes, extras, parts


def load(parts, extras, **cfg):
    """Run load_image over every part as the runner does (run schema, status filled in)."""
    stage = LoadImage(**cfg)
    cols = {**dict(stage.writes), **extras}
    run_schema = schema.run_schema(cols)
    rows = []
    for t in parts:
        t = schema.conform(t, run_schema)
        t = t.set_column(t.column_names.index("status"), "status",
                         pa.compute.fill_null(t.column("status"), schema.OK))
        rows += stage.process(t).to_pylist()
    return rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_5mb_caption_does_not_reject_csv_or_jsonl(tmp_path, fmt):
    big = "word " * (1024 * 1024)  # 5 MB in one field: Arrow's default 1 MB block refused the whole file
    rows = [{"url": "http://h/1.jpg", "caption": "short"}, {"url": "http://h/2.jpg", "caption": big}]
    path = tmp_path / f"u.{fmt}"
    if fmt == "csv":
        path.write_text("url,caption\n" + "".join(f"{r['url']},{r['caption']}\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes, _, parts = split(reader.InputSpec(path=str(path), source="s"), tmp_path)
    assert sizes == [2]
    assert parts[0].column("text").to_pylist()[1] == big


@pytest.fixture
def tars(tmp_path):
    """Two img2dataset-style shards (tar + per-shard parquet) and a damaged third one."""
    root = tmp_path / "wds"
    root.mkdir()
    images = {}
    for s in range(2):
        listing = []
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(3):
                key = f"{s:05d}{i:04d}"
                images[key] = jpeg((40 * i, 100 * s, 200))
                add(tar, f"{key}.jpg", images[key])
                add(tar, f"{key}.txt", f"caption {key}{chr(10) * (i % 2)}".encode())  # half end in a newline
                add(tar, f"{key}.json", json.dumps({"url": f"http://gone/{key}.jpg", "key": key}).encode())
                listing.append({"key": key, "url": f"http://gone/{key}.jpg", "caption": f"caption {key}",
                                "status": "success", "sha256": "x", "width": 24, "error_message": None})
        # a URL img2dataset failed on: listed in the parquet, absent from the tar
        listing.append({"key": f"{s:05d}0099", "url": "http://gone/404.jpg", "caption": "lost",
                        "status": "failed_to_download", "sha256": None, "width": None, "error_message": "HTTP 404"})
        pq.write_table(pa.Table.from_pylist(listing), root / f"{s:05d}.parquet")
    # shard 2: a good sample, a sample with no image, then a member cut short by truncation
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        images["000020000"] = jpeg((1, 2, 3))
        add(tar, "000020000.jpg", images["000020000"])
        add(tar, "000020001.txt", b"text only")
        add(tar, "000020002.jpg", jpeg((9, 9, 9), (200, 200)))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        cut = tar.getmember("000020002.jpg").offset_data + 100
    (root / "00002.tar").write_bytes(data[:cut])  # the last member is cut short
    return root, images


def test_webdataset_tars_by_brace_pattern_keep_every_sample(tars, tmp_path):
    root, images = tars
    spec = reader.InputSpec(path=str(root / "{00000..00002}.tar"), format="webdataset")
    assert reader.check_input(spec) is True
    sizes, extras, parts = split(spec, tmp_path)
    # 2 x (3 samples + 1 listed failure) + 3 samples of the cut tar + 1 row for what its cut lost
    assert sum(sizes) == 12
    # clashing parquet columns are kept under input_<name>, never overwritten by load_image's own
    assert {"input_status", "input_sha256", "input_width", "error_message", "input_key"} <= set(extras)
    rows = load(parts, extras)
    assert len({r["uid"] for r in rows}) == 12
    by_key = {r["input_key"]: r for r in rows}
    for key, data in images.items():
        r = by_key[key]
        assert r["status"] == "ok" and r["image"] == data  # exactly the bytes of the tar member
        assert (r["width"], r["height"]) == (24, 16) and r["image_format"] == "jpg"
    assert by_key["000000000"]["text"] == "caption 000000000"
    assert by_key["000000001"]["text"] == "caption 000000001"  # its member's trailing newline is not the caption
    assert by_key["000000000"]["url"] == "http://gone/000000000.jpg"
    assert json.loads(by_key["000000000"]["input_json"])["key"] == "000000000"
    assert by_key["000000000"]["input_status"] == "success" and by_key["000000000"]["sha256"] != "x"
    lost = by_key["000000099"]
    assert (lost["status"], lost["stage"], lost["reason"]) == ("failed", "input", "input_missing_image")
    assert lost["error"] == "HTTP 404"
    assert by_key["000020001"]["reason"] == "input_missing_image"
    assert by_key["000020002"]["reason"] == "input_truncated_tar"  # the sample the tar's cut runs through
    assert by_key["00002.tar#truncated"]["reason"] == "input_truncated_tar"
    assert all(r["reason"] for r in rows if r["status"] != "ok")


def test_a_tar_that_is_not_a_tar_is_one_failed_row(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    with tarfile.open(root / "a.tar", "w") as tar:
        add(tar, "k.jpg", jpeg((1, 1, 1)))
    (root / "b.tar").write_bytes(b"garbage" * 100)
    spec = reader.InputSpec(path=str(root))
    assert reader.resolve_format(spec) == "webdataset"
    sizes, extras, parts = split(spec, tmp_path)
    rows = load(parts, extras)
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[1]["reason"] == "input_tar_error" and "b.tar" in rows[1]["error"]


def test_a_key_that_comes_back_in_a_tar_is_a_new_sample_never_a_mixed_one(tmp_path):
    """WebDataset's rule: consecutive members with one key are a sample, and an extension the sample already
    has starts the next. Grouping by key over the whole tar paired the red image with the blue caption and
    lost the blue sample (k.jpg k.txt k.jpg k.txt: a writer that reused its counter; a.. b.. a..: two shards
    concatenated). Here each image keeps its own caption and every sample is a row, with its own uid, also
    when the shard's img2dataset parquet lists the key once."""
    root = tmp_path / "w"
    root.mkdir()
    red, blue, green, grey = jpeg((250, 0, 0)), jpeg((0, 0, 250)), jpeg((0, 250, 0)), jpeg((90, 90, 90))
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in [("k.jpg", red), ("k.txt", b"a red square"), ("k.jpg", blue), ("k.txt", b"a blue square"),
                           ("a.jpg", green), ("a.txt", b"a green square"), ("b.jpg", grey), ("b.txt", b"grey"),
                           ("a.txt", b"a lone caption"), ("a.jpg", grey)]:
            add(tar, name, data)
    pq.write_table(pa.table({"key": ["k", "a", "b"], "url": ["http://x/k", "http://x/a", "http://x/b"]}),
                   root / "00000.parquet")  # img2dataset's listing: one row per key
    sizes, extras, parts = split(reader.InputSpec(path=str(root), format="webdataset"), tmp_path, per=10)
    rows = load(parts, extras)
    got = [(r["input_key"], r["text"], r["image"]) for r in rows]
    assert got == [("k", "a red square", red), ("a", "a green square", green), ("b", "grey", grey),
                   ("k", "a blue square", blue), ("a", "a lone caption", grey)]
    assert sum(sizes) == 5 and len({r["uid"] for r in rows}) == 5 and all(r["status"] == "ok" for r in rows)


def test_a_member_without_a_key_is_a_failed_row_not_skipped(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    with tarfile.open(root / "a.tar", "w") as tar:
        add(tar, "k.jpg", jpeg((1, 1, 1)))
        add(tar, ".jpg", jpeg((2, 2, 2)))
        add(tar, "README", b"not a sample")
    sizes, extras, parts = split(reader.InputSpec(path=str(root / "a.tar")), tmp_path)
    rows = load(parts, extras)
    assert [(r["input_key"], r["status"], r["reason"]) for r in rows] == [
        ("k", "ok", None), (".jpg", "failed", "input_member_error"), ("README", "failed", "input_member_error")]
    assert "has no WebDataset key" in rows[1]["error"]


def test_corrupt_image_member_fails_its_row_only(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    good = jpeg((5, 5, 5))
    with tarfile.open(root / "a.tar", "w") as tar:
        add(tar, "a.jpg", good)
        add(tar, "b.jpg", good[:200])  # cut-off JPEG
        add(tar, "c.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND" + b"\0" * 8)  # not decodable
    sizes, extras, parts = split(reader.InputSpec(path=str(root / "a.tar")), tmp_path)
    rows = load(parts, extras)
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("ok", None), ("failed", "image_truncated"), ("failed", "image_decode_error")]
    assert rows[0]["image"] == good


def test_folder_of_images_with_sidecars_and_mapping(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    a, b, c = jpeg((1, 0, 0)), jpeg((0, 1, 0)), jpeg((0, 0, 1))
    (root / "a.jpg").write_bytes(a)
    (root / "a.txt").write_text("from a txt été\r\n")  # as editors and `echo` end a text file
    (root / "sub" / "b.jpg").write_bytes(b)
    (root / "sub" / "b.json").write_text(json.dumps({"caption": "from a json", "license": "cc"}))
    (root / "c.jpg").write_bytes(c)
    (root / "metadata.csv").write_text("file_name,caption,width\nc.jpg,from the mapping,7\n")
    spec = reader.InputSpec(path=str(root))
    assert reader.resolve_format(spec) == "images" and reader.check_input(spec)
    sizes, extras, parts = split(spec, tmp_path)
    rows = {r["input_key"]: r for r in load(parts, extras)}
    assert set(rows) == {"a.jpg", "sub/b.jpg", "c.jpg"}
    assert rows["a.jpg"]["text"] == "from a txt été" and rows["a.jpg"]["image"] == a  # the line ending is not the caption
    assert rows["sub/b.jpg"]["text"] == "from a json" and rows["sub/b.jpg"]["image"] == b
    assert rows["c.jpg"]["text"] == "from the mapping" and rows["c.jpg"]["input_width"] == 7
    assert all(r["status"] == "ok" for r in rows.values())


def test_parquet_with_hf_image_struct_is_used_not_refetched(tmp_path):
    imgs = [jpeg((i * 50, 0, 0)) for i in range(3)]
    t = pa.table({"image": pa.array([{"bytes": d, "path": f"{i}.jpg"} for i, d in enumerate(imgs)]),
                  "caption": ["a", "b", "c"], "height": [1, 2, 3]})
    pq.write_table(t, tmp_path / "hf.parquet")
    spec = reader.InputSpec(path=str(tmp_path / "hf.parquet"))
    assert reader.check_input(spec) is True  # no url column needed: the rows carry their images
    sizes, extras, parts = split(spec, tmp_path)
    assert "input_height" in extras and "input_image_bytes" in extras
    rows = load(parts, extras)
    assert [r["image"] for r in rows] == imgs and [r["input_height"] for r in rows] == [1, 2, 3]
    assert "input_image_bytes" not in schema.meta_schema(schema.run_schema(extras)).names


def test_uids_survive_renaming_and_moving_the_input(tmp_path):
    t = pa.table({"url": [f"http://h/{i}.jpg" for i in range(5)], "caption": ["same"] * 5})
    first = tmp_path / "a" / "urls.parquet"
    first.parent.mkdir()
    pq.write_table(t, first)
    _, _, before = split(reader.InputSpec(path=str(first)), tmp_path / "x")
    moved = tmp_path / "b" / "renamed.parquet"
    moved.parent.mkdir()
    first.rename(moved)
    _, _, after = split(reader.InputSpec(path=str(moved)), tmp_path / "y")
    assert before[0].column("uid") == after[0].column("uid")
    assert before[0].column("source")[0].as_py().startswith("in-")


def test_load_image_resizes_only_when_asked(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 99, 199)).save(buf, "PNG")
    png = buf.getvalue()
    (root / "a.png").write_bytes(png)
    sizes, extras, parts = split(reader.InputSpec(path=str(root)), tmp_path)
    kept = load(parts, extras)[0]
    assert kept["image"] == png and (kept["width"], kept["height"], kept["image_format"]) == (40, 30, "png")
    small = load(parts, extras, resize_mode="center_crop", image_size=16)[0]
    assert (small["width"], small["height"], small["orig_width"], small["image_format"]) == (16, 16, 40, "jpg")
    assert small["sha256"] == kept["sha256"]  # of the bytes as they came, like download's


def test_reshard_and_export_user_errors_are_one_line(tmp_path, cli_inprocess):
    for args in (["reshard", str(tmp_path), "--samples-per-shard", "5", "-o", str(tmp_path / "o")],
                 ["export", str(tmp_path), "--format", "uids", "-o", str(tmp_path / "x.npy")]):
        res = cli_inprocess(*args)
        assert res.returncode == 2 and "holds no run" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.npy").exists()


def test_binary_image_column_by_name_or_setting(tmp_path):
    data = jpeg((7, 7, 7))
    pq.write_table(pa.table({"url": ["http://h/a.jpg"], "thumb": [data]}), tmp_path / "t.parquet")
    assert reader.check_input(reader.InputSpec(path=str(tmp_path / "t.parquet"), text_col=None)) is False
    spec = reader.InputSpec(path=str(tmp_path / "t.parquet"), text_col=None, image_col="thumb")
    assert reader.check_input(spec) is True
    sizes, extras, parts = split(spec, tmp_path)
    assert load(parts, extras)[0]["image"] == data


def test_hf_imagefolder_text_column_listed_missing_files_and_orphan_captions(tmp_path, cli_inprocess):
    """A Hugging Face imagefolder (`file_name,text`): its `text` column is the caption (input.text_col, or by
    default when there is no `caption` column); a listed file that is not there and a caption file without
    an image are failed rows (input_missing_image), so every listed row and every file is accounted for."""
    root = tmp_path / "hfimg"
    (root / "train").mkdir(parents=True)
    img = jpeg((9, 90, 180))
    (root / "train" / "s00000.jpg").write_bytes(img)
    (root / "train" / "orphan.txt").write_text("a caption whose image is gone\n")
    (root / "metadata.csv").write_text('file_name,text,licence\ntrain/s00000.jpg,"a caption, with a comma",cc\n'
                                       "./train/missing.jpg,gone,by\n")
    for text_col in ("caption", "text"):  # the default finds HF's `text`; naming it does the same
        spec = reader.InputSpec(path=str(root), format="images", text_col=text_col)
        sizes, extras, parts = split(spec, tmp_path / text_col)
        rows = {r["input_key"]: r for r in load(parts, extras)}
        assert sum(sizes) == 3 and set(rows) == {"train/s00000.jpg", "train/missing.jpg", "train/orphan.txt"}
        kept = rows["train/s00000.jpg"]
        assert (kept["status"], kept["text"], kept["image"], kept["licence"]) == (
            "ok", "a caption, with a comma", img, "cc")
        gone = rows["train/missing.jpg"]
        assert (gone["status"], gone["stage"], gone["reason"], gone["text"], gone["licence"]) == (
            "failed", "input", "input_missing_image", "gone", "by")
        assert "metadata.csv row 2" in gone["error"]
        orphan = rows["train/orphan.txt"]
        assert (orphan["status"], orphan["reason"], orphan["text"]) == (
            "failed", "input_missing_image", "a caption whose image is gone")
        assert "input_text" not in extras  # the caption column is the caption, not an extra column too
    # a text_col the mapping lacks is one line, exit 2, not a run of empty captions
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: li\nstages:\n  - load_image: {}\n  - caption_text: {min_words: 2}\n")
    res = cli_inprocess("run", str(recipe), "-i", str(root), "-o", str(tmp_path / "bad"),
                        "--set", "input.format=images", "--set", "input.text_col=blurb")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        f"error: cannot read images input {root}: {root}/metadata.csv has no column 'blurb' (input.text_col); "
        "its columns are: file_name, text, licence"]
    # the user's repro, end to end: the caption reaches caption_text and every row is in the metadata
    out = tmp_path / "out"
    res = cli_inprocess("run", str(recipe), "-i", str(root), "-o", str(out), "--set", "input.format=images",
                        "--set", "input.text_col=text")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == 3 and manifest["counts"]["kept"] == 1
    assert manifest["counts"]["failed"] == {"input/input_missing_image": 2}


def test_gzipped_tar_shards_are_read_not_skipped(tmp_path):
    """`.tar.gz`/`.tgz` shards (WebDataset writes and reads them) are read, decompressed, byte-exact: a folder
    input used to skip them without a word and a glob of them found "no .tar files". A gzip stream cut
    short keeps the samples before the cut and is one failed row for what it lost, as a cut tar is."""
    import gzip

    root = tmp_path / "wds"
    root.mkdir()
    images = {}

    def shard(name, keys, gz=True):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for k in keys:
                images[k] = jpeg((len(images) * 30 % 255, 7, 9), size=(64, 48))
                add(tar, f"{k}.jpg", images[k])
                add(tar, f"{k}.txt", f"caption {k}\n".encode())
        data = buf.getvalue()
        (root / name).write_bytes(gzip.compress(data) if gz else data)

    shard("00000.tar", ["a0", "a1"], gz=False)
    shard("00001.tar.gz", ["b0", "b1", "b2"])
    shard("00002.tgz", ["c0"])
    pq.write_table(pa.table({"key": ["b0", "b1", "b2", "b3"], "url": [f"http://h/b{i}.jpg" for i in range(4)],
                             "error_message": [None, None, None, "HTTP 404"]}), root / "00001.parquet")
    spec = reader.InputSpec(path=str(root))
    assert reader.resolve_format(spec) == "webdataset" and reader.check_input(spec)
    sizes, extras, parts = split(spec, tmp_path / "all")
    rows = {r["input_key"]: r for r in load(parts, extras)}
    assert sum(sizes) == 7 and set(rows) == set(images) | {"b3"}
    for k, data in images.items():
        assert (rows[k]["status"], rows[k]["image"], rows[k]["text"]) == ("ok", data, f"caption {k}"), k
    assert rows["b1"]["url"] == "http://h/b1.jpg"  # the shard's parquet is found next to a .tar.gz too
    assert (rows["b3"]["reason"], rows["b3"]["error"]) == ("input_missing_image", "HTTP 404")
    # a glob or a single file of gzipped shards, format detected from the name
    for path, n in ((root / "*.tar.gz", 4), (root / "00002.tgz", 1)):
        spec = reader.InputSpec(path=str(path))
        assert reader.resolve_format(spec) == "webdataset"
        sizes, extras, parts = split(spec, tmp_path / path.name.replace("*", "glob"))
        assert sum(sizes) == n and all(r["status"] == "ok" for r in load(parts, extras) if r["input_key"] != "b3")
    # a gzip stream cut short: what decompressed is kept, the sample the cut runs through fails (its caption
    # may be what was lost: before, it was kept with none) and the rest is one input_truncated_tar row
    cut = tmp_path / "cut"
    cut.mkdir()
    whole = (root / "00001.tar.gz").read_bytes()
    (cut / "00001.tar.gz").write_bytes(whole[:len(whole) * 3 // 4])
    sizes, extras, parts = split(reader.InputSpec(path=str(cut)), tmp_path / "cut-parts")
    rows = load(parts, extras)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["image"] == images[r["input_key"]] and r["text"] for r in ok)
    assert rows[-2]["reason"] == "input_truncated_tar" and rows[-2]["input_key"] in images
    assert rows[-1]["reason"] == "input_truncated_tar" and rows[-1]["input_key"] == "00001.tar.gz#truncated"
    assert all(r["reason"] for r in rows if r["status"] != "ok") and len(rows) < 5
    # a shard cut after it was indexed (changed under a run): its unreadable rows fail input_read_error
    # (gzip's EOFError is not an OSError), and the stage goes on
    late = tmp_path / "late"
    late.mkdir()
    (late / "00001.tar.gz").write_bytes(whole)
    sizes, extras, parts = split(reader.InputSpec(path=str(late)), tmp_path / "late-parts")
    (late / "00001.tar.gz").write_bytes(whole[:len(whole) // 2])
    rows = load(parts, extras)
    assert len(rows) == 3 and any(r["status"] == "failed" for r in rows)
    assert {r["reason"] for r in rows if r["status"] != "ok"} == {"input_read_error"}


def test_an_image_listed_twice_in_the_mapping_is_a_sample_per_caption(tmp_path):
    """COCO-style captions (one image, several metadata rows): each row is a sample of that image with its
    own caption and uid. Before, the last row won and the others were in no shard and no metadata row."""
    root = tmp_path / "coco"
    root.mkdir()
    img, other = jpeg((10, 200, 10)), jpeg((200, 10, 10))
    (root / "a.jpg").write_bytes(img)
    (root / "b.jpg").write_bytes(other)
    (root / "metadata.csv").write_text("file_name,text\na.jpg,a green square\nb.jpg,a red one\na.jpg,\"green, again\"\n")
    sizes, extras, parts = split(reader.InputSpec(path=str(root), format="images", text_col="text"), tmp_path)
    rows = load(parts, extras)
    got = sorted((r["input_key"], r["text"], r["status"]) for r in rows)
    assert got == [("a.jpg", "a green square", "ok"), ("a.jpg", "green, again", "ok"), ("b.jpg", "a red one", "ok")]
    assert sum(sizes) == 3 and len({r["uid"] for r in rows}) == 3
    assert all(r["image"] == img for r in rows if r["input_key"] == "a.jpg")
    # a sidecar caption would give both samples of a.jpg the same text: each listing keeps its own
    (root / "a.txt").write_text("the sidecar of a")
    (root / "b.txt").write_text("the sidecar of b")
    sizes, extras, parts = split(reader.InputSpec(path=str(root), format="images", text_col="text"), tmp_path / "2")
    got = sorted((r["input_key"], r["text"]) for r in load(parts, extras))
    assert got == [("a.jpg", "a green square"), ("a.jpg", "green, again"), ("b.jpg", "the sidecar of b")]


@pytest.mark.parametrize("gz", [False, True])
def test_indexing_reads_a_shard_once_and_fails_a_member_cut_short(tmp_path, monkeypatch, gz):
    """Indexing a shard opens (for a .tar.gz: decompresses) it once; it used to decompress it a first time
    only to learn its length. A member whose data the file cuts off fails its sample ("cut short"), and the
    samples before it keep their exact bytes, gzipped or not."""
    import gzip

    from curate.io import inputfs, wds_input

    buf = io.BytesIO()
    images = {k: jpeg((i * 60, 9, 9), size=(64, 64)) for i, k in enumerate(["a", "b", "c"])}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for k, data in images.items():
            add(tar, f"{k}.jpg", data)
            add(tar, f"{k}.txt", k.encode())
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        cut = tar.getmember("c.jpg").offset_data + 100
    data = buf.getvalue()[:cut]
    path = tmp_path / ("s.tar.gz" if gz else "s.tar")
    path.write_bytes(gzip.compress(data) if gz else data)
    opened = []
    real_open = inputfs.open_read
    monkeypatch.setattr(inputfs, "open_read", lambda p, raw=False: opened.append(p) or real_open(p, raw))
    rows = {r["input_key"]: r for r in wds_input.index_tar(str(path))}
    assert opened == [str(path)]
    assert rows["c"]["_reason"] == "input_truncated_tar" and "c.jpg is cut short (100 of" in rows["c"]["_error"]
    for k in "ab":
        member, offset, length = rows[k]["input_member"], rows[k]["input_offset"], rows[k]["input_length"]
        with real_open(str(path)) as f:
            f.seek(offset)
            assert (member, f.read(length)) == (f"{k}.jpg", images[k])
