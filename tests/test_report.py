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
from curate.report.thumbs import dropped_thumbnails, pick_dropped, scan_members, write_dropped

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
        # as the runner's part writer does: thumbnails of dropped rows while their bytes exist, then meta
        write_dropped(root / "thumbs" / f"part-{part:06d}.parquet", pa.Table.from_pylist(
            [{**r, "image": _jpeg(colors[r["row"] % len(colors)]) if r["orig_width"] else None} for r in mine]))
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


def dropped_grids(page: str) -> dict[str, str]:
    """{stage: html of its grid} from the Dropped samples section."""
    return dict(re.findall(r'<h3 class="dropped-stage" data-stage="([^"]+)">.*?</h3>(<div class="grid">.*?)'
                           r'(?=<h3|</section>)', page))


def test_pick_dropped_is_bounded_reproducible_and_keeps_clusters():
    """Per (stage, reason) at most per_reason rows, chosen by uid hash (row order does not matter), and for
    duplicates the largest clusters first with at most per_cluster copies each; kept and imageless rows never."""
    rows = [{"uid": f"d{i}", "status": "dropped", "stage": "clip_threshold", "reason": "low", "dup_of": None,
             "has_image": True} for i in range(50)]
    rows += [{"uid": f"x{c}-{i}", "status": "dropped", "stage": "phash_dedup", "reason": "near_duplicate",
              "dup_of": f"k{c}", "has_image": True} for c, size in enumerate((6, 3, 2)) for i in range(size)]
    rows += [{"uid": "ok", "status": "ok", "stage": None, "reason": None, "dup_of": None, "has_image": True},
             {"uid": "noimg", "status": "dropped", "stage": "clip_threshold", "reason": "low", "dup_of": None,
              "has_image": False}]
    uids = lambda rs, idx: sorted(rs[i]["uid"] for i in idx)  # noqa: E731
    picked = uids(rows, pick_dropped(rows, per_reason=6, per_cluster=4))
    assert len([u for u in picked if u.startswith("d")]) == 6
    per_cluster = [sum(u.startswith(f"x{c}-") for u in picked) for c in range(3)]
    assert per_cluster == [4, 2, 0]  # 4 copies of the biggest cluster, then the next one's, up to 6
    assert "ok" not in picked and "noimg" not in picked
    shuffled = rows[::-1]
    assert uids(shuffled, pick_dropped(shuffled, per_reason=6, per_cluster=4)) == picked
    assert pick_dropped(rows, per_reason=0) == []
    # real bytes: an undecodable image is left out, the rest shrink to <= 160 px JPEGs
    t = pa.Table.from_pylist([{"uid": "a", "status": "dropped", "stage": "s", "reason": "r", "dup_of": None,
                               "image": _jpeg("red", (640, 320))},
                              {"uid": "b", "status": "dropped", "stage": "s", "reason": "r", "dup_of": None,
                               "image": b"not an image"}])
    out = dropped_thumbnails(t).to_pylist()
    assert [r["uid"] for r in out] == ["a"] and Image.open(io.BytesIO(out[0]["thumb"])).size == (160, 80)


def test_scan_members_settles_a_key_at_its_json_so_text_only_shards_are_not_read_to_the_end(tmp_path):
    """A curate shard writes each sample's json after its media, so the scan stops at the wanted keys' json
    members: a text-only shard is read only up to them, and an image shard still yields every image."""
    text = [{"key": f"t{i:04d}", "text": f"caption {i}", "uid": f"t{i:04d}"} for i in range(400)]
    write_tar(tmp_path / "text.tar", text)
    found, seen = scan_members(tmp_path / "text.tar", {"t0001", "t0003"})
    assert found == {} and seen == 8  # 2 members per sample: stopped at t0003.json, not at 800 headers
    assert scan_members(tmp_path / "text.tar", {"t0001"}, last_ext=None)[1] == 801  # all, and the end block
    imgs = [{"key": f"i{i}", "text": "x", "uid": f"i{i}", "image": _jpeg("red", (8, 8)), "image_format": "jpg"}
            for i in range(5)]
    write_tar(tmp_path / "img.tar", imgs[:2] + [dict(text[0])] + imgs[2:])
    found, _ = scan_members(tmp_path / "img.tar", {"i1", "t0000", "i4"})
    assert sorted(found) == ["i1", "i4"]


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
    assert _decode_all(c.images, "jpeg") >= 7 + 5 + 1  # kept samples, the 5 dropped rows' stored thumbs, a keeper
    assert "clip_score" in page and 'id="dup-clusters">1<' in page
    assert "a red square number 3 on grey" in page  # captions under thumbnails
    assert "HTTP Error 404" in page and "click here" in page  # dropped/failed examples
    # a grid per dropping stage, each tile with its stored image, reason and the score the stage decided on
    grids = dropped_grids(page)
    assert sorted(grids) == ["caption_text", "clip_threshold", "exact_dedup", "image_size"]
    assert all(g.count('class="thumb"') == g.count("<figure") >= 1 for g in grids.values())
    assert "clip_score_below_threshold · 200×150 · clip_score 0.12" in grids["clip_threshold"]
    assert "image_too_small · 12×9" in grids["image_size"]
    # the duplicates: the keeper (kept, image from its shard) beside both dropped copies (stored thumbnails)
    sets = re.findall(r'<div class="dupset">(.*?)(?=<div class="dupset">|<h\d|<p|</section>)', page)
    assert len(sets) == 1 and sets[0].count('class="thumb"') == 3
    assert "keeper u001 (ok)" in sets[0] and "copy u007" in sets[0] and "copy u008" in sets[0]
    # extra sections are appended verbatim and linked from the navigation
    assert "<p id='extra'>loss went down</p>" in page and 'href="#training-curves"' in page
    assert "sec-error" not in page.split("<style>")[1].split("</style>")[1]


def test_report_reads_no_shard_headers_when_the_manifest_says_no_part_holds_an_image(tmp_path, monkeypatch):
    """A text-only run's report skips the thumbnail scans (up to THUMB_HEADERS headers per section) on the
    manifest's per-part image counts; a run whose parts hold images, or whose manifest has no counts (an
    older run), still shows its kept samples' thumbnails."""
    import curate.report.report as report_mod

    out = make_run(tmp_path / "run")
    m = json.loads((out / "manifest.json").read_text())
    m["parts"] = {k: {**v, "committed": True, "kept": 3, "images": 3} for k, v in m["parts"].items()}
    (out / "manifest.json").write_text(json.dumps(m))
    kept_grid = lambda page: re.search(r"<h3>Kept samples.*?(?=<h3)", page, re.S).group(0)  # noqa: E731
    with_images = write_report(out, strict=True).read_text()
    assert kept_grid(with_images).count('class="thumb"') == 7
    for v in m["parts"].values():
        v["images"] = 0
    (out / "manifest.json").write_text(json.dumps(m))
    calls = []
    monkeypatch.setattr(report_mod, "read_thumbnails", lambda *a, **k: calls.append(a) or {})
    page = write_report(out, strict=True).read_text()
    assert calls == [] and "sec-error" not in page.split("</style>")[1]
    assert kept_grid(page).count("<figure") == 7 and 'class="thumb"' not in kept_grid(page)  # text-only tiles


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
    assert "data:image/png;base64" in page
    assert _decode_all(c.images, "jpeg") == 12  # no kept grid; every dropped row (all have images) is shown
    assert dropped_grids(page)["clip_threshold"].count('class="thumb"') == 8


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


def test_report_is_refused_while_another_process_writes_the_run(tmp_path, cli_inprocess):
    """`curate report OUT` writes OUT/report.html, so a run writing OUT (it holds OUT/.curate.lock, as here
    a second process does) refuses it in one line, and the page already there is left as it was; once the
    writer is gone the report is written. Before, it drew the half-written run over the run's own page."""
    import os
    import sys

    out = make_run(tmp_path / "run")
    (out / "report.html").write_text("the run's own page")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom curate.io.rundir import RunDir\n"
                               "with RunDir(sys.argv[1]).writer_lock():\n    print('held', flush=True)\n"
                               "    time.sleep(120)\n", str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline() == "held\n"
        res = cli_inprocess("report", str(out))
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr == (f"error: {out} is being written by another curate process (pid {holder.pid}); run "
                              "curate report when it has finished (a run writes report.html itself when it "
                              "completes)\n")
        assert (out / "report.html").read_text() == "the run's own page"
    finally:
        holder.kill()
        holder.wait()
    res = cli_inprocess("report", str(out))
    assert res.returncode == 0 and res.stdout.startswith("wrote "), res.stderr
    assert "<html" in (out / "report.html").read_text()
    (tmp_path / "plain").mkdir()
    assert cli_inprocess("report", str(tmp_path / "plain")).returncode == 2
    assert list((tmp_path / "plain").iterdir()) == []  # not a run: no lock file left behind


# Injected into a copy of the page: records script errors and images that fail to load (capture phase: an
# <img> error does not bubble), then, after load, writes what it found into <body data-check> for --dump-dom.
CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener("error", e => __errors.push(e.target && e.target.tagName === "IMG" ? "img failed"
  : String(e.message)), true);
window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-check", JSON.stringify({images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
    unseen: imgs.filter(i => i.getBoundingClientRect().width === 0).length, errors: __errors}));
});
</script>"""


def test_report_renders_in_chromium(tmp_path):
    """The report in headless Chromium: every image (plots, kept and dropped thumbnails) decodes and is laid
    out with a width, and no script error occurs."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium installed (make setup-dev installs Debian's chromium when run as root)")
    page = write_report(make_run(tmp_path / "run"), strict=True).read_text()
    n_img = page.count("<img ")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + CHECK_SCRIPT, 1))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
                           "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-check="([^"]*)"', proc.stdout)
    assert found, proc.stdout[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check == {"images": n_img, "broken": 0, "unseen": 0, "errors": []}, check
    assert n_img >= 20  # plots, 7 kept, 5 dropped, the keeper and its 2 copies


def test_size_plot_is_a_2d_histogram_of_every_row_above_the_scatter_limit(tmp_path):
    """100,000 sized rows: the size plot bins all of them in SQL (no sample, nothing overplotted) and draws one
    panel per outcome; a run under the limit keeps the scatter of every point."""
    import duckdb

    from curate.io.rundir import RunDir
    from curate.report import data, plots
    from curate.report.report import _Run, _size_plot

    con = duckdb.connect()
    con.execute("CREATE VIEW samples AS SELECT CASE WHEN i % 10 = 0 THEN 'dropped' WHEN i % 97 = 0 THEN 'failed' "
                "ELSE 'ok' END AS status, (64 + (hash(i) % 4000))::INTEGER AS orig_width, "
                "(32 + (hash(i * 7) % 3000))::INTEGER AS orig_height, i::VARCHAR AS uid FROM range(100000) t(i)")
    g = data.size_grid(con, "orig_width", "orig_height", bins=32)
    per_status = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY status").fetchall())
    assert {s: int(c.sum()) for s, c in g.counts.items()} == per_status and list(g.counts) == ["ok", "dropped", "failed"]
    assert g.x_edges[0] < 64 and g.x_edges[-1] > 4063 and g.y_edges[0] < 32 and g.counts["ok"].shape == (32, 32)
    png = plots.size_density(g.x_edges, g.y_edges, g.counts)
    assert Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).size[0] > 900  # three panels
    r = _Run(run=RunDir(tmp_path), manifest={}, recipe={}, stages=[], con=con)
    assert "size-density" in _size_plot(r, "orig_width", "orig_height")
    # one size only: still a drawable grid; and a run this small keeps its scatter
    con.execute("CREATE OR REPLACE VIEW samples AS SELECT 'ok' AS status, 64 AS orig_width, 64 AS orig_height, "
                "'u' AS uid")
    one = data.size_grid(con, "orig_width", "orig_height")
    assert one.counts["ok"].sum() == 1 and one.x_edges[0] < 64 < one.x_edges[-1]
    assert "size-scatter" in _size_plot(r, "orig_width", "orig_height")
