"""`curate train / eval / experiment` through the console entry point: outputs, reports, one-line errors."""
from __future__ import annotations

import json

import pytest

from curate.train import stats


def test_experiment_end_to_end(colour_shards, colour_eval, tmp_path, cli_inprocess):
    """Two data sets + a random-subset control x two seeds, tiny budget: results.json with fingerprints and
    interval verdicts, report.md/.html with plots and verdicts; a repeat reuses every run.
    In-process through the console entry point (curate.cli.main): a fresh interpreter spends about 14 CPU-s
    importing torch, open_clip and matplotlib before any work."""
    out = tmp_path / "exp"
    shards = sorted(colour_shards.glob("*.tar"))
    args = ("experiment", f"half={shards[0]},{shards[1]}", f"all={colour_shards}", "--random-subset", "random=all:half",
            "--primary", "zeroshot_top1", "--primary", "image_to_text_R@1", "--eval-set", colour_eval,
            "--samples-seen", 32, "--batch-size", 32, "--seeds", 2, "--workers", 0, "--model", "curate-tiny-32",
            "--output", out)
    p = cli_inprocess(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert [r["set"] for r in res["runs"]] == ["half", "half", "all", "all", "random", "random"]
    assert res["primary_metrics"] == ["zeroshot_top1", "image_to_text_R@1"]
    assert res["fingerprints"]["eval"]["sha256"] and all(r["fingerprints"]["shards"]["sha256"] for r in res["runs"])
    # the control has the size of `half` (two of four shards: 192 samples), drawn per seed from `all`
    sub = [json.loads((out / "subsets" / "random" / f"seed{s}" / "subset.json").read_text()) for s in (0, 1)]
    assert [x["samples"] for x in sub] == [192, 192] and sub[0]["request"]["source_samples"] == 384
    assert res["runs"][4]["fingerprints"]["shards"] != res["runs"][5]["fingerprints"]["shards"]
    comps = {(c["b"], c["metric"]): c for c in res["comparisons"]}
    c = comps[("random", "zeroshot_top1")]
    assert c["primary"] and c["seeds"] == 2 and c["bootstrap_examples"] == 96
    assert c["verdict"] in ("better", "worse", "no detectable difference", stats.NOT_LEARNED) and None not in c["t_ci"]
    # 32 samples seen learn nothing: the console says so before any verdict
    assert ("NO ARM LEARNED" in p.stdout) == (set(res["nothing_learned"]) == {"zeroshot_top1", "image_to_text_R@1"})
    if "NO ARM LEARNED" in p.stdout:  # above the table, as in report.md
        assert p.stdout.index("NO ARM LEARNED") < p.stdout.index("|") and p.stdout.count("NO ARM LEARNED") == 1
    assert not comps[("all", "zeroshot_top5")]["primary"]
    assert res["chance"]["image_to_text_R@1"] == pytest.approx(1 / 96)
    for f in ("report.md", "report.html", "loss.png", "metrics.png"):
        assert (out / f).stat().st_size > 100
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "bootstrap CI" in html and c["verdict"] in html
    assert "half vs random on zeroshot_top1 (primary)" in p.stdout and "seed spread" not in p.stdout
    # repeating reuses the finished runs
    p2 = cli_inprocess(*args)
    assert p2.returncode == 0 and p2.stderr.count("reusing") == 6, p2.stderr[-2000:]


@pytest.mark.parametrize("args,msg", [
    (["train", "nowhere/*.tar", "--samples-seen", "10", "-o", "{tmp}/t"], "no shards match"),
    (["train", "{shards}", "--samples-seen", "10", "-o", "{tmp}/t", "--loss", "hinge"], "--loss must be"),
    (["eval", "{tmp}/missing.pt", "--eval-set", "{eval}"], "checkpoint not found"),
    (["eval", "{tmp}/missing.pt", "--eval-set", "{tmp}"], "classes.json"),
    (["experiment", "noequals", "--eval-set", "{eval}", "--samples-seen", "10"], "NAME=SHARDS"),
    (["train", "{tmp}", "--samples-seen", "10", "-o", "{tmp}/t"], "no .tar shards in folder"),
    (["train", "{shards}", "--samples-seen", "10", "-o", "{tmp}/t", "--resume"], "no checkpoint.pt"),
    (["eval", "{tmp}/missing.pt", "--eval-set", "{tmp}/nowhere"], "eval set not found"),
])
def test_user_errors_are_one_line(args, msg, colour_shards, colour_eval, tmp_path, cli_inprocess):
    args = [a.format(tmp=tmp_path, shards=colour_shards, eval=colour_eval) for a in args]
    p = cli_inprocess(*args)
    assert p.returncode != 0
    lines = [x for x in p.stderr.splitlines() if x.strip() and not x.startswith("WARNING")]
    assert len(lines) == 1 and msg in lines[0], p.stderr


def test_train_then_eval_cli(colour_shards, colour_eval, tmp_path, cli_inprocess):
    p = cli_inprocess("train", colour_shards, "--samples-seen", 64, "--batch-size", 32, "--workers", 1,
                      "-o", tmp_path / "r")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "skipped samples: none" in p.stdout and " at step 1 -> " in p.stdout and "at step 2 (single steps)" in p.stdout
    summary = (tmp_path / "r" / "summary.json").read_bytes()
    p = cli_inprocess("train", colour_shards, "--samples-seen", 64, "--batch-size", 32, "-o", tmp_path / "r", "--resume")
    assert p.returncode == 0 and "already complete" in p.stdout, p.stderr[-2000:]
    assert (tmp_path / "r" / "summary.json").read_bytes() == summary
    p = cli_inprocess("eval", tmp_path / "r" / "checkpoint.pt", "--eval-set", colour_eval, "-o", tmp_path / "m.json")
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["samples"] == 96 and 0 <= m["zeroshot_top1"] <= 1
