"""The ground-truth join (curate.demo.truth) on a constructed run whose every number is known by hand."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curate.demo import truth

NOISE = ["clean"] * 5 + ["caption_one_wrong", "caption_one_wrong", "boilerplate_web", "low_resolution", "dup_benign"]
GRADE = [None] * 5 + ["colour", "colour", "social", "short_lt32", "exact"]
# (status, stage, clip_score) per id; clip_score only on rows that reached clip_score
OUTCOME = [("ok", None, 0.9), ("ok", None, 0.8), ("dropped", "caption_text", None),
           ("dropped", "clip_top_fraction", 0.2), ("ok", None, 0.7), ("dropped", "clip_top_fraction", 0.3),
           ("ok", None, 0.85), ("dropped", "caption_text", None), ("dropped", "image_size", None),
           ("dropped", "phash_dedup", None)]
STAGES = ["download", "image_size", "caption_text", "exact_dedup", "phash_dedup", "clip_score", "clip_top_fraction"]


@pytest.fixture
def run(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": list(range(10)), "noise": NOISE, "grade": GRADE}), corpus / "corpus.parquet")
    rd = tmp_path / "run"
    (rd / "meta").mkdir(parents=True)
    (rd / "shards").mkdir()
    pq.write_table(pa.table({
        "uid": [f"u{i}" for i in range(10)], "id": list(range(10)), "status": [o[0] for o in OUTCOME],
        "stage": [o[1] for o in OUTCOME], "reason": [None if o[1] is None else f"r_{o[1]}" for o in OUTCOME],
        "clip_score": pa.array([o[2] for o in OUTCOME], pa.float32())}), rd / "meta" / "part-0.parquet")
    (rd / "recipe.yaml").write_text(yaml.safe_dump({"stages": [{s: {}} for s in STAGES]}))
    return rd, corpus


def test_stage_precision_recall_and_reach(run):
    rep = truth.accuracy_report(*run)
    assert rep["rows"] == 10 and rep["planted"] == 5
    got = {s["stage"]: s for s in rep["stages"]}
    assert list(got) == ["image_size", "caption_text", "phash_dedup", "clip_top_fraction"]  # recipe order, droppers only
    want = {"image_size": (10, 1, 1.0, 1 / 5), "caption_text": (9, 2, 0.5, 1 / 4),
            "phash_dedup": (7, 1, 1.0, 1 / 3), "clip_top_fraction": (6, 2, 0.5, 1 / 2)}
    for stage, (reached, dropped, precision, recall) in want.items():
        s = got[stage]
        assert (s["reached"], s["dropped"]) == (reached, dropped), stage
        assert s["precision"] == pytest.approx(precision) and s["recall"] == pytest.approx(recall), stage
    assert got["clip_top_fraction"]["per_label"]["caption_one_wrong/colour"] == {"reached": 2, "dropped": 1, "rate": 0.5}
    assert got["caption_text"]["per_label"]["clean"]["dropped"] == 1
    e2e = rep["end_to_end"]
    assert e2e["clean"]["kept"] == 3 and e2e["clean"]["removed_by"] == {"caption_text": 1, "clip_top_fraction": 1}
    assert e2e["low_resolution/short_lt32"]["kept_frac"] == 0


def test_score_distributions_rank_planted_against_clean(run, tmp_path):
    rep = truth.accuracy_report(*run)
    d = rep["scores"]["clip_score"]
    assert d["clean"]["n"] == 4 and d["planted"]["n"] == 2
    # clean 0.9, 0.8, 0.2, 0.7 vs planted 0.3, 0.85: 4 of 8 pairs have the clean row above
    assert d["planted"]["auc_clean_above"] == pytest.approx(4 / 8)
    assert d["families"]["caption_one_wrong"]["quantiles"]["0.5"] == pytest.approx(0.575, abs=1e-6)
    md = truth.markdown(rep)
    assert "| clip_top_fraction | 6 | 2 | 1 (50%) | 50% |" in md
    assert "<table>" in truth.html_section(rep, tmp_path) and (tmp_path / "accuracy_scores.png").is_file()


def test_experiment_finds_the_run_behind_an_arm(run, tmp_path):
    rd, corpus = run
    acc = truth.experiment_accuracy({"curated": [str(rd / "shards")], "trusted": [str(tmp_path / "seed")]},
                                    str(corpus), tmp_path)
    assert list(acc) == ["curated"]  # the seed split was not made by a curate run
    assert acc["curated"]["plot"] == "accuracy_curated.png" and (tmp_path / acc["curated"]["plot"]).is_file()
    assert "values" not in acc["curated"]["scores"]["clip_score"]
    json.dumps(acc)  # goes into results.json as is
    assert "### curated:" in truth.experiment_markdown(acc)


def test_an_arm_made_from_another_url_list_says_nothing_matched(run, tmp_path, caplog):
    """`curate experiment --ground-truth CORPUS` with an arm whose run came from another URL list: the report
    said "(0 rows, 0 planted)" over tables with a broken header (`| family/grade | rows |  | kept |`)."""
    rd, corpus = run
    other = tmp_path / "other"
    (other / "meta").mkdir(parents=True)
    (other / "shards").mkdir()
    pq.write_table(pa.table({"uid": ["a", "b", "c"], "id": [100, 101, 102], "status": ["ok", "ok", "dropped"],
                             "stage": [None, None, "caption_text"], "reason": [None, None, "r"]}),
                   other / "meta" / "part-0.parquet")
    (other / "recipe.yaml").write_text(yaml.safe_dump({"stages": [{s: {}} for s in STAGES]}))
    with caplog.at_level("WARNING", logger="curate"):
        acc = truth.experiment_accuracy({"curated": [str(rd / "shards")], "raw": [str(other / "shards")]},
                                        str(corpus), tmp_path)
    md = truth.experiment_markdown(acc)
    raw = md[md.index("### raw:"):]
    assert raw.splitlines()[2] == (f"No row of this run matched the ground-truth corpus {corpus} (none of its 3 rows "
                                   "has an id of the corpus): it was not made from that corpus, so there is nothing "
                                   "to judge against its planted labels.")
    assert "|" not in raw  # no tables of nothing
    assert "--ground-truth, data set raw: No row of this run matched" in caplog.text and "curated" not in caplog.text
    assert "No row" not in md[:md.index("### raw:")]  # the arm made from the corpus is unchanged
    # some rows of the corpus, some not: said, and the numbers are over the matched rows only
    pq.write_table(pa.table({"uid": ["x"], "id": [999], "status": ["ok"], "stage": [None], "reason": [None]}),
                   rd / "meta" / "part-1.parquet")
    assert "Only 10 of this run's 11 rows matched" in truth.markdown(truth.accuracy_report(rd, corpus))


def test_a_run_where_no_stage_dropped_a_row_has_a_well_formed_table(run):
    rd, corpus = run
    pq.write_table(pa.table({"uid": [f"u{i}" for i in range(10)], "id": list(range(10)), "status": ["ok"] * 10,
                             "stage": pa.array([None] * 10, pa.string()), "reason": pa.array([None] * 10, pa.string())}),
                   rd / "meta" / "part-0.parquet")
    md = truth.markdown(truth.accuracy_report(rd, corpus))
    assert "| family/grade | rows | kept |\n|---|---|---|\n| clean | 5 | 100% |" in md and "|  |" not in md
