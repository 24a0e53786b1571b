"""`curate demo --noise held-out`: the real downloader and stages on noise they were not written against,
scored per stage against the planted labels (precision/recall lines and the report section)."""
from __future__ import annotations

from curate.demo import heldout


def test_demo_held_out_noise_reports_every_decision(ray_address, tmp_path, monkeypatch, cli_inprocess):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo-out"
    res = cli_inprocess("demo", "--noise", "held-out", "--samples", "200", "--output", str(out), "--no-clip-filter")
    assert res.returncode == 0, res.stderr
    assert (out / ".curate-demo").is_file()  # a demo run is marked: the next demo may replace it
    assert "image_size: dropped" in res.stdout and "precision" in res.stdout and "recall" in res.stdout
    page = (out / "report.html").read_text()
    assert "Decisions vs planted ground truth" in page and "Ground truth (demo)" not in page
    for family in heldout.RATES:
        assert family in page, family
    assert (tmp_path / "cache" / "demo" / "image-text-heldout-n200-s0" / "corpus.parquet").is_file()
    assert cli_inprocess("demo", "--noise", "nonsense", "--output", str(tmp_path / "x")).returncode == 2
