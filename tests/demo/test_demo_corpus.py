"""The generated corpus plants every noise kind with ground truth that matches the bytes on disk."""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curate.demo import captions, images
from curate.demo.corpus import generate_corpus, write_url_list
from curate.demo.noise import DEFAULT_RATES, NOISE_KINDS, counts_for, expected_outcome

REASONS = {"download_http_404", "download_http_500", "download_timeout", "image_decode_error", "image_truncated",
           "image_too_small", "image_aspect_ratio", "caption_boilerplate", "duplicate_image", "near_duplicate_image"}


def _file(root: Path, row) -> Path:
    return root / "files" / row.path.rsplit("/img/", 1)[1]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"}


def test_every_noise_kind_is_planted(corpus, table):
    _, summary = corpus
    assert set(table.noise) == set(NOISE_KINDS)
    assert all(summary["counts"][k] >= 1 for k in NOISE_KINDS)
    assert list(table.id) == list(range(len(table)))
    assert summary["counts"] == table.noise.value_counts().to_dict()
    assert (table.noise == "clean").mean() > 0.5


def test_generation_is_deterministic(tmp_path):
    a = generate_corpus(tmp_path / "a", 200, seed=1, eval_n=50, seed_n=40)
    b = generate_corpus(tmp_path / "b", 200, seed=1, eval_n=50, seed_n=40, workers=2)  # pool gives same bytes
    c = generate_corpus(tmp_path / "c", 200, seed=2, eval_n=50, seed_n=40)
    assert a["counts"] == b["counts"] and all(v >= 1 for v in a["counts"].values())
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db
    assert da["corpus.parquet"] != dc["corpus.parquet"] and da["eval/000000.tar"] != dc["eval/000000.tar"]


def test_paths_follow_the_fault_grammar(corpus, table):
    root, summary = corpus
    prefix = {"http_404": "/status/404/img/", "http_500": "/status/500/img/", "flaky": "/flaky/1/img/",
              "slow_ok": f"/slow/{summary['slow_ms']}/img/", "timeout": f"/slow/{summary['timeout_ms']}/img/"}
    for row in table.itertuples():
        assert row.path.startswith(prefix.get(row.noise, "/img/")), row
        assert re.search(rf"/img/{row.id:06d}\.(jpg|png)$", row.path), row
        assert _file(root, row).exists() == (row.noise not in ("http_404", "http_500")), row
        assert (row.label is None) == (row.noise in ("http_404", "http_500", "corrupt_bytes"))
        if row.label is not None:
            assert row.label == f"{row.colour} {row.shape}"


def test_truncated_files_are_cut_jpegs(corpus, table):
    root, _ = corpus
    rows = table[table.noise == "truncated_bytes"]
    assert len(rows) >= 1
    for row in rows.itertuples():
        data = _file(root, row).read_bytes()
        assert data.startswith(b"\xff\xd8") and not data.endswith(b"\xff\xd9")
        img = Image.open(io.BytesIO(data))  # the header survives...
        assert img.size == (row.width, row.height)
        with pytest.raises(OSError):
            img.load()  # ...the pixels do not


def test_corrupt_files_do_not_decode(corpus, table):
    root, _ = corpus
    for row in table[table.noise == "corrupt_bytes"].itertuples():
        assert row.path.endswith(".jpg")
        with pytest.raises(Exception):
            Image.open(io.BytesIO(_file(root, row).read_bytes())).load()


def test_tiny_and_extreme_sizes(corpus, table):
    root, _ = corpus
    for row in table[table.noise.isin(["tiny_image", "extreme_aspect"])].itertuples():
        img = Image.open(_file(root, row))
        img.load()
        w, h = img.size
        assert (w, h) == (row.width, row.height)
        if row.noise == "tiny_image":
            assert min(w, h) < 32 and max(w, h) / min(w, h) < 4
        else:
            assert min(w, h) >= 32 and max(w, h) / min(w, h) >= 5


def test_images_that_should_survive_pass_size_checks_and_are_unique(corpus, table):
    root, _ = corpus
    keep = table[table.noise.isin(["clean", "mismatched_caption", "boilerplate_caption", "near_duplicate",
                                   "slow_ok", "timeout", "flaky"])]
    for row in keep.itertuples():
        data = _file(root, row).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == ("PNG" if row.format == "png" else "JPEG")
        assert min(img.size) >= 32 and max(img.size) / min(img.size) <= 4
    assert keep.sha256.is_unique


def test_exact_duplicates_copy_an_earlier_clean_image(corpus, table):
    root, _ = corpus
    rows = table[table.noise == "exact_duplicate"]
    assert len(rows) >= 1
    for row in rows.itertuples():
        orig = table.loc[int(row.dup_of)]
        assert orig.noise == "clean" and orig.id < row.id and orig.path != row.path
        assert _file(root, row).read_bytes() == _file(root, orig).read_bytes()
        assert row.label == orig.label
    assert table[~table.noise.isin(["exact_duplicate", "near_duplicate"])].dup_of.isna().all()


def _small(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((16, 16), Image.BILINEAR), float)


def test_near_duplicates_differ_in_bytes_but_not_in_look(corpus, table):
    root, _ = corpus
    rows = table[table.noise == "near_duplicate"]
    clean = table[table.noise == "clean"]
    assert len(rows) >= 1
    for row in rows.itertuples():
        orig = table.loc[int(row.dup_of)]
        assert orig.noise == "clean" and orig.id < row.id and row.sha256 != orig.sha256
        near = np.abs(_small(_file(root, row)) - _small(_file(root, orig))).mean()
        other = clean[clean.label != orig.label].iloc[0]
        far = np.abs(_small(_file(root, other)) - _small(_file(root, orig))).mean()
        assert near < 12 and near < far / 2, (row.id, near, far)


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{word}(s|es)?\b", text) is not None


def test_captions_match_or_mismatch_as_labelled(corpus, table):
    truthful = table[table.noise.isin(["clean", "exact_duplicate", "near_duplicate", "tiny_image", "slow_ok"])]
    for row in truthful.itertuples():
        assert _mentions(row.caption, row.colour) and _mentions(row.caption, row.shape), row
    for row in table[table.noise == "mismatched_caption"].itertuples():
        assert not (_mentions(row.caption, row.colour) and _mentions(row.caption, row.shape)), row
    boiler = table.noise == "boilerplate_caption"
    assert table[boiler].caption.map(captions.is_boilerplate).all()
    assert not table[~boiler].caption.map(captions.is_boilerplate).any()


def test_expected_outcomes():
    for kind in NOISE_KINDS:
        status, reason = expected_outcome(kind)
        assert status in ("ok", "dropped", "failed")
        assert (reason is None) == (status == "ok") and (reason is None or reason in REASONS)
    assert expected_outcome("flaky") == ("failed", "download_http_500")
    assert expected_outcome("truncated_bytes") == ("failed", "image_truncated")
    assert expected_outcome("tiny_image") == ("dropped", "image_too_small")
    assert {expected_outcome(k)[1] for k in NOISE_KINDS} - {None} == REASONS
    with pytest.raises(ValueError):
        expected_outcome("cosmic_rays")


def test_expected_columns_match_expected_outcome(table):
    for row in table.itertuples():
        assert (row.expected_status, row.expected_reason) == expected_outcome(row.noise)


def test_rates_are_validated_and_forced():
    c = counts_for(200)
    assert all(v >= 1 for v in c.values()) and sum(c.values()) == 200
    assert counts_for(1000, {"flaky": 0.0})["flaky"] == 0
    with pytest.raises(ValueError):
        counts_for(100, {"gremlins": 0.1})
    with pytest.raises(ValueError):
        counts_for(100, {k: 0.2 for k in DEFAULT_RATES})


def _read_split(path: Path):
    ds = wds.WebDataset(str(path), shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json")
    return list(ds)


def test_eval_split_is_labelled_webdataset(corpus):
    root, summary = corpus
    classes = json.loads((root / "eval" / "classes.json").read_text())
    names = classes["classnames"]
    assert len(names) == len(images.COLOURS) * len(images.SHAPES) and "red circle" in names
    assert all("{}" in t for t in classes["templates"])
    samples = _read_split(root / "eval" / "000000.tar")
    assert len(samples) == summary["eval_n"] == 200
    seen = set()
    for img, txt, meta in samples:
        assert isinstance(img, Image.Image) and min(img.size) >= 96
        assert names[meta["label_id"]] == meta["label"] == f"{meta['colour']} {meta['shape']}"
        assert _mentions(txt, meta["colour"]) and _mentions(txt, meta["shape"])
        for task in classes["attributes"]:
            assert len(task["values"]) == len(task["classnames"]) and meta[task["name"]] in task["values"]
        seen.add(meta["label_id"])
    assert len(seen) == len(names)  # balanced: every class appears
    assert {t["name"] for t in classes["attributes"]} >= {"count", "position", "size", "texture"}


def test_seed_split_is_clean_and_sized(corpus, table):
    root, summary = corpus
    samples = _read_split(root / "seed" / "000000.tar")
    assert len(samples) == summary["seed_n"] == 150
    for img, txt, meta in samples:
        assert not captions.is_boilerplate(txt) and _mentions(txt, meta["colour"]) and _mentions(txt, meta["shape"])
    corpus_hashes = set(table.sha256.dropna())
    with open(root / "seed" / "000000.tar", "rb") as f:
        import tarfile

        with tarfile.open(fileobj=f) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    assert hashlib.sha256(tar.extractfile(m).read()).hexdigest() not in corpus_hashes


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_url_list(corpus, table, tmp_path, fmt):
    root, _ = corpus
    out = write_url_list(root, "http://127.0.0.1:9/", tmp_path / f"urls.{fmt}", fmt=fmt)
    df = {"parquet": pd.read_parquet, "csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](out)
    assert list(df.columns) == ["url", "caption", "id"]
    assert (df.url == "http://127.0.0.1:9" + table.path).all()
    assert (df.caption == table.caption).all() and (df.id == table.id).all()
    with pytest.raises(ValueError):
        write_url_list(root, "http://x", tmp_path / "u.xml", fmt="xml")


def test_corpus_parquet_schema(corpus):
    root, _ = corpus
    cols = pq.read_schema(root / "corpus.parquet").names
    for c in ["id", "path", "caption", "noise", "dup_of", "label", "shape", "colour", "count", "position", "size",
              "texture"]:
        assert c in cols
