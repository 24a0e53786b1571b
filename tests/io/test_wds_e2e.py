"""Curate img2dataset's own output with no server left, then reshard and export it.

img2dataset runs for real (its reader, downloader, resizer and WebDataset writer) against a loopback HTTP
server; only its process pool is replaced by an in-process loop (spawning a pool re-imports img2dataset and
torch in a fresh interpreter: minutes on a shared 2-core CI machine). The server is then stopped, so any
URL the run fetched would fail: every sample must still end ok from the tar bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.demo.server import DemoServer
from curate.download.image import Download
from curate import schema
from curate.export import export
from curate.io.rundir import RunDir
from curate.recipe import build_recipe
from curate.reshard import OutputError, reshard
from curate.runner import Runner
from curate.validate import validate

N_GOOD = 24


def _inline_distributor(processes_count, downloader, reader, _subjob_size, _max_shard_retry):
    for shard in reader:  # what img2dataset's pool workers do, one shard at a time, here
        downloader(shard)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2d_corpus")
    (root / "files").mkdir()
    for i in range(N_GOOD):
        colour = (0, 0, 0) if i in (3, 17) else (i * 10, 255 - i * 10, (i * 37) % 256)  # 3 and 17: one image twice
        Image.new("RGB", (80, 60), colour).save(root / "files" / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def i2d_output(corpus, tmp_path_factory):
    import importlib

    i2d_main = importlib.import_module("img2dataset.main")  # the module (the package exports a function `main`)

    base = tmp_path_factory.mktemp("i2d")
    with DemoServer(corpus) as server:
        urls = [f"{server.url}/img/{i:03d}.jpg" for i in range(N_GOOD)]
        urls += [f"{server.url}/status/404/gone.jpg", f"{server.url}/img/missing.jpg"]
        pq.write_table(pa.table({"url": urls, "caption": [f"a photo number {i}" for i in range(len(urls))]}),
                       base / "urls.parquet")
        saved = i2d_main.multiprocessing_distributor
        i2d_main.multiprocessing_distributor = _inline_distributor
        try:
            i2d_main.download(url_list=str(base / "urls.parquet"), output_folder=str(base / "shards"),
                              processes_count=1, thread_count=4, image_size=64, resize_mode="center_crop",
                              output_format="webdataset", input_format="parquet", url_col="url",
                              caption_col="caption", number_sample_per_shard=8, timeout=5, retries=0,
                              enable_wandb=False)
        finally:
            i2d_main.multiprocessing_distributor = saved
    # the server is gone from here on
    members = {}
    for tar_path in sorted((base / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    members[m.name[:-4]] = tar.extractfile(m).read()
    assert len(members) == N_GOOD
    return base, members, len(urls)


@pytest.fixture(scope="module")
def curated(i2d_output, ray_address, tmp_path_factory):
    base, members, n_urls = i2d_output
    out = tmp_path_factory.mktemp("run") / "out"
    recipe = build_recipe({
        "name": "from-img2dataset",
        "input": {"path": str(base / "shards"), "format": "webdataset"},
        "output": {"path": str(out), "samples_per_shard": 10},
        "stages": [{"load_image": {}}, {"image_size": {"min_side": 32}}, {"exact_dedup": {"by": "image"}}],
    })
    manifest = Runner(recipe, ray_address=ray_address).start()
    return out, manifest, members, n_urls


def meta(out):
    return pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()


def test_img2dataset_output_is_curated_without_fetching(curated):
    out, manifest, members, n_urls = curated
    rows = meta(out)
    assert len(rows) == n_urls == manifest["counts"]["rows"]  # every URL img2dataset saw, once
    assert not any((r["reason"] or "").startswith("download") for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted((r["stage"], r["reason"]) for r in failed) == [("input", "input_missing_image")] * 2
    assert all(r["input_status"] == "failed_to_download" and r["error"] for r in failed)
    dropped = [r for r in rows if r["status"] == "dropped"]
    assert [(r["stage"], r["reason"]) for r in dropped] == [("exact_dedup", "duplicate_image")]
    kept = [r for r in rows if r["status"] == "ok"]
    assert len(kept) == N_GOOD - 1
    # the kept image is exactly img2dataset's tar member; its own sha256 survives as input_sha256
    got = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    got[m.name[:-4]] = tar.extractfile(m).read()
    for r in kept:
        assert got[r["key"]] == members[r["input_key"]]
        assert r["sha256"] == hashlib.sha256(members[r["input_key"]]).hexdigest()
        assert r["url"].endswith(".jpg") and r["text"].startswith("a photo number")
    assert validate(out)[0] == []
    # shards/ holds only tars (Hugging Face datasets and ray.data.read_webdataset list the folder)
    assert {p.suffix for p in (out / "shards").iterdir()} == {".tar"}
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == len(kept)


def _sha256sum_check(run_dir) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", "shards.sha256"], cwd=run_dir, capture_output=True, text=True)


def test_shard_checksums_are_standard_and_catch_an_edit_that_still_decodes(curated, tmp_path):
    """Each shard's SHA-256 is recorded when it is written: `sha256sum -c shards.sha256` checks a copy with
    standard tools, and `curate validate` finds a shard whose JPEG was changed but still decodes (before,
    it passed: the meta sha256 is of the downloaded bytes and the pixels still decoded)."""
    out = tmp_path / "copy"
    shutil.copytree(curated[0], out)
    listed = (out / "shards.sha256").read_text().splitlines()
    assert len(listed) == len(list((out / "shards").glob("*.tar"))) and _sha256sum_check(out).returncode == 0
    tar_path = sorted((out / "shards").glob("*.tar"))[0]
    with tarfile.open(tar_path) as tar:
        jpg = next(m for m in tar if m.name.endswith(".jpg"))
    data = bytearray(tar_path.read_bytes())
    at = jpg.offset_data + jpg.size // 2
    data[at:at + 60] = bytes(60)  # inside the entropy-coded data: the image still decodes, to other pixels
    tar_path.write_bytes(bytes(data))
    with tarfile.open(tar_path) as tar:
        from curate.images import decode
        decode(tar.extractfile(jpg.name).read())  # still decodes: only the checksum can tell
    problems = validate(out)[0]
    assert problems == [f"shards/{tar_path.name}: its bytes changed since it was written (SHA-256 differs from "
                        "the one its meta part recorded: bit rot, a partial copy or an edit)"]
    assert _sha256sum_check(out).returncode != 0


def test_reshard_keeps_every_row_and_validates(curated, tmp_path):
    out, manifest, _, _ = curated
    reshard(out, 7, tmp_path / "r")
    assert _sha256sum_check(tmp_path / "r").returncode == 0  # the new shards' own digests
    before, after = meta(out), meta(tmp_path / "r")
    assert sorted(r["uid"] for r in before) == sorted(r["uid"] for r in after)
    kept = [r for r in after if r["status"] == "ok"]
    assert sorted(json.loads((tmp_path / "r" / "sizes.json").read_text()).values()) == [2, 7, 7, 7]
    assert validate(tmp_path / "r")[0] == []
    with pytest.raises(OutputError, match="not an empty folder"):
        reshard(out, 7, tmp_path / "r")
    assert len(kept) == N_GOOD - 1


def test_exports_uids_parquet_and_hf_datasets(curated, tmp_path):
    out, _, members, _ = curated
    kept = [r for r in meta(out) if r["status"] == "ok"]
    info = export(out, "uids", tmp_path / "subset.npy")
    uids = np.load(tmp_path / "subset.npy")
    assert info["uids"] == len(kept) and list(uids) == sorted(r["uid"] for r in kept)

    export(out, "parquet", tmp_path / "pq")
    t = pads.dataset(str(tmp_path / "pq"), format="parquet").to_table()
    by_uid = {r["uid"]: r for r in kept}
    assert t.num_rows == len(kept)
    for r in t.to_pylist():
        assert r["image"]["bytes"] == members[by_uid[r["uid"]]["input_key"]]

    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("webdataset", data_dir=str(out / "shards"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(kept) and {"jpg", "txt", "json"} <= set(ds.column_names)


def test_datacomp_uids_export_as_u8_pairs(curated, tmp_path):
    out, _, _, _ = curated
    export(out, "uids", tmp_path / "s.npy", uid_col="input_sha256")  # 64 hex chars: not DataComp's, strings
    assert np.load(tmp_path / "s.npy").dtype.kind == "U"
    # DataComp's own uids are 128-bit hex: a copy of the run whose meta carries such a column exports them
    # as the structured u8,u8 array DataComp's resharder reads, sorted
    shutil.copytree(out, tmp_path / "dc")
    want = []
    for p in sorted((tmp_path / "dc" / "meta").glob("part-*.parquet")):
        t = pq.read_table(p)
        ids = [hashlib.md5(u.encode()).hexdigest() for u in t.column("uid").to_pylist()]
        want += [h for h, st in zip(ids, t.column("status").to_pylist()) if st == "ok"]
        pq.write_table(t.append_column("dc_uid", pa.array(ids)), p)
    export(tmp_path / "dc", "uids", tmp_path / "dc.npy", uid_col="dc_uid")
    arr = np.load(tmp_path / "dc.npy")
    assert arr.dtype == np.dtype("u8,u8")
    assert [tuple(x) for x in arr] == sorted((int(h[:16], 16), int(h[16:], 16)) for h in want)


def test_download_verify_hash(corpus):
    data = (corpus / "files" / "005.jpg").read_bytes()
    good = hashlib.sha256(data).hexdigest()
    with DemoServer(corpus) as server:
        url = f"{server.url}/img/005.jpg"
        t = pa.table({"url": [url, url, url], "status": [schema.OK] * 3, "input_sha256": [good.upper(), "0" * 64, None]})
        t = schema.conform(t, schema.run_schema({**Download.writes, "input_sha256": pa.string()}))
        rows = Download(verify_hash="sha256", image_size=32, threads=2).process(t).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["reason"] == "download_hash_mismatch" and rows[1]["image"] is None



def test_a_second_command_never_touches_another_ones_staging_folder(curated, tmp_path):
    """reshard, refilter and export build OUT2 in a hidden sibling folder (curate.io.atomic.staged_dir).
    With one fixed name, a second command writing the same OUT2 removed the first's folder and wrote into
    it, and the first then published a mix of both. Now each process stages in its own folder, and only a
    dead process's folder is cleaned up."""
    out, _, _, _ = curated
    live = subprocess.Popen(["sleep", "60"])  # a process still writing its OUT2
    try:
        theirs = tmp_path / f".r.reshard-tmp-{live.pid}-abcd1234"
        (theirs / "shards").mkdir(parents=True)
        (theirs / "shards" / "000000.tar").write_bytes(b"half written")
        dead = tmp_path / ".r.reshard-tmp-999999999-00000000"  # beyond any pid_max: that process is gone
        dead.mkdir()
        reshard(out, 7, tmp_path / "r")
        assert (theirs / "shards" / "000000.tar").read_bytes() == b"half written"  # the live one's, untouched
        assert not dead.exists()  # a killed command's leftovers go
        assert validate(tmp_path / "r")[0] == []
        assert sorted(p.name for p in tmp_path.glob(".r.reshard-tmp-*")) == [theirs.name]  # ours was renamed
    finally:
        live.kill()
        live.wait()



def test_two_commands_writing_one_output_never_mix_and_the_later_one_is_refused(curated, tmp_path, monkeypatch):
    """A second reshard to the same OUT2 runs (here: in full) while the first is about to publish. Before,
    the second removed the first's staging folder, and the first died of a FileNotFoundError; now the
    second publishes a valid run and the first is refused in one line, leaving it alone."""
    out, _, _, _ = curated
    finalize, raced = RunDir.finalize, []

    def finalize_then_race(self, manifest, report=True, extra_sections=None):
        result = finalize(self, manifest, report, extra_sections)
        if not raced:  # the first command's finalize: the second command runs to the end now
            raced.append(True)
            reshard(out, 5, tmp_path / "r")
        return result

    monkeypatch.setattr(RunDir, "finalize", finalize_then_race)
    with pytest.raises(OutputError, match="was written by another process while this one ran"):
        reshard(out, 7, tmp_path / "r")
    assert validate(tmp_path / "r")[0] == []  # the second command's run, whole
    assert sorted(json.loads((tmp_path / "r" / "sizes.json").read_text()).values()) == [3, 5, 5, 5, 5]
    assert not list(tmp_path.glob(".r.reshard-tmp-*"))  # neither staging folder is left


def test_an_input_samples_other_members_reach_the_output_whole(ray_address, tmp_path):
    """A class label, a mask, a second image and a second caption of an input sample were dropped without a
    word (only the image, the .txt and a new .json were written). They now ride along byte for byte; the
    ones whose extension the writer uses itself come as .input.<ext>; validate checks they are all there,
    and reshard keeps them."""
    import io as _io

    from PIL import Image

    def png(colour, size, fmt="PNG"):
        buf = _io.BytesIO()
        Image.new("RGB", size, colour).save(buf, fmt)
        return buf.getvalue()

    root = tmp_path / "wds"
    root.mkdir()
    image, mask, second = png((200, 10, 10), (32, 24), "JPEG"), png((1, 1, 1), (32, 24)), png((5, 200, 5), (8, 8))
    other = {"cls": b"7", "seg.png": mask, "png": second, "caption": b"an older caption", "npy": bytes(range(256)),
             "input.png": b"the input's own .input.png", "Mask.PNG": mask + b"x"}
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in [("s1.caption", other["caption"]), ("s1.jpg", image), ("s1.txt", b"a red square"),
                           ("s1.cls", other["cls"]), ("s1.seg.png", mask), ("s1.png", second),
                           ("s1.input.png", other["input.png"]), ("s1.Mask.PNG", other["Mask.PNG"]),
                           ("s1.npy", other["npy"]), ("s2.jpg", image), ("s2.txt", b"plain")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    recipe = build_recipe({"name": "extras", "input": {"path": str(root), "format": "webdataset"},
                           "output": {"path": str(out), "samples_per_shard": 10}, "stages": [{"load_image": {}}]})
    Runner(recipe, ray_address=ray_address).start()
    rows = {r["input_key"]: r for r in meta(out)}
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 2
    with tarfile.open(out / "shards" / "000000.tar") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    k1, k2 = rows["s1"]["key"], rows["s2"]["key"]
    assert got[f"{k1}.jpg"] == image and got[f"{k1}.txt"] == b"a red square"
    # png is the writer's own extension: input.png; the input's own input.png then becomes input.input.png
    # (never two members of one name); an extension keeps its case
    renamed = {"png": "input.png", "input.png": "input.input.png"}
    for ext, data in other.items():
        name = f"{k1}.{renamed.get(ext, ext)}"
        assert got[name] == data, name
    with tarfile.open(out / "shards" / "000000.tar") as tar:
        names = [m.name for m in tar]
    assert len(names) == len(set(names))
    assert sorted(n for n in got if n.startswith(k2)) == [f"{k2}.jpg", f"{k2}.json", f"{k2}.txt"]
    assert validate(out)[0] == []
    reshard(out, 1, tmp_path / "r")  # one sample per shard: s1's members move whole
    assert validate(tmp_path / "r")[0] == []
    export(out, "parquet", tmp_path / "pq")  # and a Parquet export carries them as a column, in input order
    exported = {r["input_key"]: r for r in pads.dataset(str(tmp_path / "pq"), format="parquet").to_table().to_pylist()}
    assert [(e["ext"], e["data"]) for e in exported["s1"]["extra_members"]] == [
        ("caption", other["caption"]), ("cls", b"7"), ("seg.png", mask), ("png", second),
        ("input.png", other["input.png"]), ("Mask.PNG", other["Mask.PNG"]), ("npy", other["npy"])]
    assert exported["s2"]["extra_members"] is None and exported["s1"]["image"]["bytes"] == image
    # a member lost on the way is a finding
    with tarfile.open(out / "shards" / "000000.tar") as src, tarfile.open(tmp_path / "cut.tar", "w") as dst:
        for m in src:
            if m.name != f"{k1}.cls":
                dst.addfile(m, src.extractfile(m))
    shutil.copy(tmp_path / "cut.tar", out / "shards" / "000000.tar")
    assert f"shards/000000.tar/{k1}: no .cls member (the input sample's .cls)" in validate(out)[0]
