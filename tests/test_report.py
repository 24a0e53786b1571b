"""The HTML run report over hand-built run directories (no Ray, no network): funnel numbers, plots,
thumbnails from a real shard, and the degenerate runs (no score columns, nothing kept, no metadata)."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from curate.io.shard_writer import write_tar
from curate.report import ReportError, report_main, write_report

STAGES = ["download", "image_size", "caption_text", "exact_dedup", "clip_threshold"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _jpeg(color, size=(48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _rows(scores: bool = True, kept: bool = True) -> list[dict]:
    """15 rows: 7 kept, 5 dropped (3 reasons), 3 failed (2 reasons); part 0 holds rows 0-7, part 1 rows 8-14."""
    rows = []

    def add(status, stage=None, reason=None, error=None, dup_of=None, ow=200, oh=150, clip=0.3, text=None):
        i = len(rows)
        rows.append({"uid": f"u{i:03d}", "source": "urls", "modality": "image-text", "part": 0 if i < 8 else 1,
                     "row": i, "url": f"http://127.0.0.1/{i}.jpg",
                     "text": text if text is not None else f"a red square number {i} on grey",
                     "status": status, "stage": stage, "reason": reason, "error": error,
                     "shard": None, "key": None, "width": 64 if ow else None, "height": 64 if ow else None,
                     "orig_width": ow, "orig_height": oh, "sha256": f"{i:064x}" if ow else None,
                     "dup_of": dup_of, "clip_score": clip if ow else None})

    for i in range(7):
        add("ok" if kept else "dropped", None if kept else "clip_threshold",
            None if kept else "clip_score_below_threshold", ow=200 + 10 * i, clip=0.28 + 0.01 * i)
    add("dropped", "exact_dedup", "duplicate_image", dup_of="u001" if kept else None, clip=0.29)
    add("dropped", "exact_dedup", "duplicate_image", dup_of="u001" if kept else None, clip=0.29)
    add("dropped", "image_size", "image_too_small", ow=12, oh=9, clip=0.1)
    add("dropped", "caption_text", "caption_boilerplate", text="click here", clip=0.05)
    add("dropped", "clip_threshold", "clip_score_below_threshold", clip=0.12)
    add("failed", "download", "download_http_404", error="HTTP Error 404: Not Found", ow=None, oh=None)
    add("failed", "download", "download_http_404", error="HTTP Error 404: Not Found", ow=None, oh=None)
    add("failed", "download", "download_timeout", error="timed out after 10 s", ow=None, oh=None)
    if not scores:
        for r in rows:
            del r["clip_score"]
    return rows


def make_run(root: Path, scores: bool = True, kept: bool = True) -> Path:
    """A run directory as the runner leaves it: recipe, manifest, two meta parts, shards with the kept samples."""
    rows = _rows(scores, kept)
    (root / "meta").mkdir(parents=True)
    (root / "shards").mkdir()
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "cyan"]
    for part in (0, 1):
        mine = [r for r in rows if r["part"] == part]
        samples = []
        for r in mine:
            if r["status"] == "ok":
                r["shard"], r["key"] = f"shards/{part:06d}.tar", r["uid"]
                samples.append({"key": r["uid"], "uid": r["uid"], "text": r["text"], "image_format": "jpg",
                                "image": _jpeg(colors[r["row"] % len(colors)])})
        write_tar(root / "shards" / f"{part:06d}.tar", samples)
        pq.write_table(pa.Table.from_pylist(mine), root / "meta" / f"part-{part:06d}.parquet")
    stages = [{s: {}} for s in STAGES]
    (root / "recipe.yaml").write_text(yaml.safe_dump({"name": "fake-run", "modality": "image-text",
                                                      "input": {"path": "urls.parquet"}, "stages": stages}))
    dropped, failed = {}, {}
    for r in rows:
        if r["status"] != "ok":
            d = dropped if r["status"] == "dropped" else failed
            d[f"{r['stage']}/{r['reason']}"] = d.get(f"{r['stage']}/{r['reason']}", 0) + 1
    n_kept = sum(r["status"] == "ok" for r in rows)
    manifest = {"format": 1, "status": "complete", "name": "fake-run", "created": "2026-01-01T00:00:00+0000",
                "updated": "2026-01-01T00:01:00+0000", "versions": {"python": "3.11", "curate": "0.1.0"},
                "input": {"path": "urls.parquet", "rows": len(rows)}, "batches": [{"kind": "run", "status": "complete"}],
                "parts": {"0": {"rows": 8}, "1": {"rows": 7}},
                "timings": {"split": 0.01, "segment0": 2.5, "job0:exact_dedup": 1.25, "segment1": 0.75},
                "counts": {"rows": len(rows), "kept": n_kept, "dropped": dropped, "failed": failed}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


class _Checker(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
        else:
            self.stack.pop()


def check_html(page: str) -> _Checker:
    c = _Checker()
    c.feed(page)
    c.close()
    assert not c.errors, c.errors[:5]
    assert c.stack == [], c.stack
    return c


def _decode_all(srcs: list[str], kind: str) -> int:
    n = 0
    for src in srcs:
        if src.startswith(f"data:image/{kind};base64,"):
            Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
            n += 1
    return n


def test_report_full_run(tmp_path):
    out = make_run(tmp_path / "run")
    path = write_report(out, extra_sections=[("Training curves", "<p id='extra'>loss went down</p>")], strict=True)
    assert path == out / "report.html" and path.is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files left behind
    page = path.read_text()
    c = check_html(page)
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    # header and funnel numbers
    assert re.search(r'id="count-kept">7<', page)
    assert re.search(r'id="count-total">15<', page)
    assert 'data-stage="clip_threshold">7<' in page  # the funnel ends at the kept count
    assert 'data-stage="download">12<' in page  # 15 input - 3 failed downloads
    for code in ("duplicate_image", "image_too_small", "caption_boilerplate", "download_http_404",
                 "download_timeout", "clip_score_below_threshold"):
        assert code in page
    assert "job0:exact_dedup" in page and "fake-run" in page  # timings, name
    # plots and thumbnails
    assert _decode_all(c.images, "png") >= 5  # funnel, reasons, clip_score, size, caption length, dup clusters
    assert _decode_all(c.images, "jpeg") >= 7  # every kept sample plus the duplicates' kept copy
    assert "clip_score" in page and 'id="dup-clusters">1<' in page
    assert "a red square number 3 on grey" in page  # captions under thumbnails
    assert "HTTP Error 404" in page and "click here" in page  # dropped/failed examples, text only
    # extra sections are appended verbatim and linked from the navigation
    assert "<p id='extra'>loss went down</p>" in page and 'href="#training-curves"' in page
    assert "sec-error" not in page.split("<style>")[1].split("</style>")[1]


def test_report_without_scores(tmp_path):
    out = make_run(tmp_path / "run", scores=False)
    page = write_report(out, strict=True).read_text()
    check_html(page)
    assert "No score columns" in page
    assert re.search(r'id="count-kept">7<', page)
    assert "data:image/png;base64" in page


def test_report_nothing_kept(tmp_path):
    out = make_run(tmp_path / "run", kept=False)
    page = write_report(out, strict=True).read_text()
    c = check_html(page)
    assert re.search(r'id="count-kept">0<', page)
    assert "No sample was kept" in page
    assert 'data-stage="clip_threshold">0<' in page
    assert "data:image/png;base64" in page and _decode_all(c.images, "jpeg") == 0


def test_report_main_and_errors(tmp_path):
    with pytest.raises(ReportError):
        report_main(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError):
        report_main(tmp_path / "empty")
    # a run that has not committed a part yet still gets a page from its manifest
    out = make_run(tmp_path / "run")
    shutil.rmtree(out / "meta")
    path = report_main(str(out))
    assert path == out / "report.html"
    page = path.read_text()
    check_html(page)
    assert "no metadata parts yet" in page and "job0:exact_dedup" in page


def test_report_renders_in_chromium(tmp_path):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium installed")
    path = write_report(make_run(tmp_path / "run"), strict=True)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                           "--window-size=1280,2000", path.as_uri()], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 10_000
