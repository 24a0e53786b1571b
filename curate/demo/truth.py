"""Accuracy of every curation decision against a demo corpus' planted ground truth.

Why one module: `curate demo` and `curate experiment --ground-truth` both report, per dropping stage,
how many of the rows it dropped were planted noise (precision) and how many of each planted family
and grade that reached it it dropped (recall), plus the score distributions of planted vs clean rows
for every scoring stage. Both must use the same join, so the numbers mean the same in both reports.

Definitions (a "planted" row is one whose corpus `noise` is not "clean"; benign duplicates count as
planted, since a dedup stage is right to drop them):
- a row *reached* stage S when it was still in play there: kept, or dropped/failed at S or at a
  later stage of the recipe (stage order from the run's recipe.yaml);
- precision(S) = planted rows S dropped / rows S dropped;
- recall(S, family/grade) = rows of that family and grade S dropped / rows of it that reached S;
- end to end, per family and grade: rows, kept, and the stage that removed each of the others.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

CLEAN = "clean"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def load_truth(corpus: str | Path) -> dict[int, dict]:
    """{id: {"noise", "grade"}} from a demo corpus folder or its corpus.parquet (grade None when absent)."""
    path = Path(corpus)
    path = path / "corpus.parquet" if path.is_dir() else path
    names = pq.read_schema(path).names
    cols = ["id", "noise"] + (["grade"] if "grade" in names else [])
    t = pq.read_table(path, columns=cols).to_pydict()
    grades = t.get("grade") or [None] * len(t["id"])
    return {i: {"noise": n, "grade": g} for i, n, g in zip(t["id"], t["noise"], grades)}


def _label(row: dict) -> str:
    return row["noise"] if not row.get("grade") else f"{row['noise']}/{row['grade']}"


def join(meta: list[dict], truth: dict[int, dict]) -> list[dict]:
    """Meta rows (id, status, stage, scores...) with the planted family and grade of their corpus id."""
    out = []
    for r in meta:
        t = truth.get(r.get("id"))
        if t is None:
            continue
        out.append({**r, "noise": t["noise"], "grade": t["grade"], "label": _label(t)})
    return out


def _reached(row: dict, order: dict[str, int], stage: str) -> bool:
    if row["status"] == "ok":
        return True
    at = order.get(row.get("stage") or "")
    return at is not None and at >= order[stage]


def stage_accuracy(rows: list[dict], stages: list[str]) -> list[dict]:
    """Per dropping stage (recipe order): dropped, planted among them, precision, recall per family/grade."""
    order = {s: k for k, s in enumerate(stages)}
    dropping = [s for s in stages if any(r["status"] == "dropped" and r.get("stage") == s for r in rows)]
    out = []
    for s in dropping:
        reached = [r for r in rows if _reached(r, order, s)]
        dropped = [r for r in reached if r["status"] == "dropped" and r.get("stage") == s]
        planted = [r for r in dropped if r["noise"] != CLEAN]
        per: dict[str, dict] = {}
        for r in reached:
            d = per.setdefault(r["label"], {"reached": 0, "dropped": 0})
            d["reached"] += 1
            d["dropped"] += int(r["status"] == "dropped" and r.get("stage") == s)
        for d in per.values():
            d["rate"] = d["dropped"] / d["reached"]
        planted_reached = sum(1 for r in reached if r["noise"] != CLEAN)
        out.append({"stage": s, "reached": len(reached), "dropped": len(dropped), "planted_dropped": len(planted),
                    "precision": len(planted) / len(dropped) if dropped else None,
                    "recall": len(planted) / planted_reached if planted_reached else None,
                    "clean_dropped": len(dropped) - len(planted),
                    "reasons": dict(Counter(r.get("reason") for r in dropped)),
                    "per_label": dict(sorted(per.items(), key=lambda kv: (kv[0] != CLEAN, kv[0])))})
    return out


def end_to_end(rows: list[dict]) -> dict[str, dict]:
    """Per family/grade: rows, kept, and how many each stage removed (dropped or failed)."""
    per: dict[str, dict] = {}
    for r in rows:
        d = per.setdefault(r["label"], {"rows": 0, "kept": 0, "removed_by": Counter()})
        d["rows"] += 1
        if r["status"] == "ok":
            d["kept"] += 1
        else:
            d["removed_by"][r.get("stage") or r["status"]] += 1
    for d in per.values():
        d["kept_frac"] = d["kept"] / d["rows"]
        d["removed_by"] = dict(d["removed_by"])
    return dict(sorted(per.items(), key=lambda kv: (kv[0] != CLEAN, kv[0])))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(a clean row scores above a planted one), ties half: how well the score ranks, whatever the cut."""
    if not len(pos) or not len(neg):
        return None
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _summary(x: np.ndarray) -> dict:
    return {"n": int(len(x)), "mean": float(x.mean()) if len(x) else None,
            "quantiles": {str(q): float(np.quantile(x, q)) for q in QUANTILES} if len(x) else {}}


def score_distributions(rows: list[dict], columns: list[str]) -> dict[str, dict]:
    """Per score column: clean vs planted (all) and per family: n, mean, quantiles, AUC against clean."""
    out = {}
    for col in columns:
        scored = [r for r in rows if isinstance(r.get(col), (int, float)) and np.isfinite(r[col])]
        if not scored:
            continue
        clean = np.array([r[col] for r in scored if r["noise"] == CLEAN], float)
        by_family: dict[str, list] = defaultdict(list)
        for r in scored:
            if r["noise"] != CLEAN:
                by_family[r["noise"]].append(r[col])
        planted = np.array([v for vs in by_family.values() for v in vs], float)
        out[col] = {"clean": _summary(clean), "planted": {**_summary(planted), "auc_clean_above": _auc(clean, planted)},
                    "families": {f: {**_summary(np.array(v, float)), "auc_clean_above": _auc(clean, np.array(v, float))}
                                 for f, v in sorted(by_family.items())},
                    "values": {"clean": clean.round(5).tolist(),
                               **{f: np.round(v, 5).tolist() for f, v in sorted(by_family.items())}}}
    return out


def score_columns(names: list[str]) -> list[str]:
    """Columns a scoring stage wrote: clip_score and any other *_score column."""
    return [n for n in names if n.endswith("score")]


def recipe_stages(run_dir: Path) -> list[str]:
    """Step names in recipe order, from the run's recipe.yaml."""
    import yaml

    rec = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text()) or {}
    return [next(iter(s)) if isinstance(s, dict) else str(s) for s in rec.get("stages") or []]


def accuracy_report(run_dir: str | Path, corpus: str | Path) -> dict:
    """Stage precision/recall, end-to-end outcome per family/grade and score distributions of one run."""
    run_dir = Path(run_dir)
    table = pq.ParquetDataset(str(run_dir / "meta")).read()
    scores = score_columns(table.column_names)
    meta = table.select([c for c in ("id", "status", "stage", "reason", *scores) if c in table.column_names]).to_pylist()
    rows = join(meta, load_truth(corpus))
    stages = recipe_stages(run_dir)
    return {"run": str(run_dir), "corpus": str(corpus), "rows": len(rows), "meta_rows": len(meta),
            "planted": sum(r["noise"] != CLEAN for r in rows), "stages": stage_accuracy(rows, stages),
            "end_to_end": end_to_end(rows), "scores": score_distributions(rows, scores)}


def without_values(report: dict) -> dict:
    """The report without the raw score lists (kept for the plot, too long for results.json)."""
    return {**report, "scores": {c: {k: v for k, v in d.items() if k != "values"} for c, d in report["scores"].items()}}


def plot_scores(report: dict, out_png: Path, title: str = "") -> Path | None:
    """One histogram panel per score column: clean rows vs each planted family."""
    if not report["scores"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(report["scores"])
    fig, axes = plt.subplots(1, len(cols), figsize=(6.5 * len(cols), 3.6), squeeze=False)
    for ax, col in zip(axes[0], cols):
        vals = report["scores"][col]["values"]
        allv = np.concatenate([np.asarray(v, float) for v in vals.values() if len(v)])
        bins = np.linspace(allv.min(), allv.max(), 31)
        for name, v in vals.items():
            if len(v) >= 5:
                ax.hist(v, bins=bins, density=True, histtype="step" if name != CLEAN else "stepfilled",
                        alpha=0.35 if name == CLEAN else 0.9, label=f"{name} ({len(v)})")
        ax.set_xlabel(col)
        ax.set_ylabel("density")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.set_title(title or f"{col}: planted vs clean")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)


def pct(x) -> str:
    """A share as a whole percentage, "n/a" when undefined."""
    return "n/a" if x is None else f"{100 * x:.0f}%"


def unmatched_line(report: dict) -> str | None:
    """Why a report has no tables, or which rows it leaves out: a run's metadata rows join the corpus by id,
    so a run made from another URL list matches none (or only some) and its numbers would be empty or partial."""
    total, rows = report.get("meta_rows"), report["rows"]
    if rows == 0:
        return (f"No row of this run matched the ground-truth corpus {report['corpus']}"
                + (f" (none of its {total} rows has an id of the corpus)" if total else "")
                + ": it was not made from that corpus, so there is nothing to judge against its planted labels.")
    if total and rows < total:
        return (f"Only {rows} of this run's {total} rows matched the ground-truth corpus {report['corpus']} by id; "
                "the other rows are left out of these numbers.")
    return None


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(report: dict, heading: str = "###") -> str:
    """Tables: per dropping stage precision/recall, per stage and label drop rates, end to end per label."""
    note = unmatched_line(report)
    title = f"{heading} Decisions vs planted ground truth ({report['rows']} rows, {report['planted']} planted)"
    if report["rows"] == 0:
        return f"{title}\n\n{note}"
    lines = [title, "", *([note, ""] if note else []),
             "| stage | reached | dropped | planted among dropped (precision) | planted reaching it dropped (recall) |",
             "|---|---|---|---|---|"]
    for s in report["stages"]:
        lines.append(f"| {s['stage']} | {s['reached']} | {s['dropped']} | {s['planted_dropped']} "
                     f"({pct(s['precision'])}) | {pct(s['recall'])} |")
    labels = list(report["end_to_end"])
    names = [s["stage"] for s in report["stages"]]
    head = ["family/grade", "rows", *names, "kept"]  # no dropping stage: no stage columns, not an empty one
    lines += ["", "Drop rate per stage among the rows of each family/grade that reached it, and the share kept end to end:",
              "", _row(head), "|" + "---|" * len(head)]
    for lab in labels:
        e = report["end_to_end"][lab]
        cells = []
        for s in report["stages"]:
            d = s["per_label"].get(lab)
            cells.append("–" if not d else f"{pct(d['rate'])} ({d['dropped']}/{d['reached']})")
        lines.append(_row([lab, e["rows"], *cells, pct(e["kept_frac"])]))
    for col, d in report["scores"].items():
        lines += ["", f"Score `{col}`: clean median {d['clean']['quantiles'].get('0.5', float('nan')):.3f} "
                  f"(n={d['clean']['n']}); planted median {d['planted']['quantiles'].get('0.5', float('nan')):.3f} "
                  f"(n={d['planted']['n']}), P(clean scores above planted) = "
                  f"{'n/a' if d['planted']['auc_clean_above'] is None else format(d['planted']['auc_clean_above'], '.3f')}", "",
                  "| family | n | median | P(clean above) |", "|---|---|---|---|"]
        for f, fd in d["families"].items():
            auc = fd["auc_clean_above"]
            lines.append(f"| {f} | {fd['n']} | {fd['quantiles'].get('0.5', float('nan')):.3f} | "
                         f"{'n/a' if auc is None else format(auc, '.3f')} |")
    return "\n".join(lines)


def run_dir_of(shards: list[str]) -> Path | None:
    """The curate run folder that wrote these shards (its meta/ and recipe.yaml), or None (e.g. a seed split)."""
    if len(shards) != 1:
        return None
    p = Path(shards[0])
    for cand in (p, p.parent):
        if (cand / "meta").is_dir() and (cand / "recipe.yaml").is_file():
            return cand
    return None


def experiment_accuracy(arms: dict[str, list[str]], corpus: str, out: Path) -> dict[str, dict]:
    """Accuracy report of every arm whose shards a curate run wrote (saved plot: accuracy_<arm>.png)."""
    res = {}
    for name, shards in arms.items():
        run = run_dir_of(shards)
        if run is None:
            continue
        rep = accuracy_report(run, corpus)
        if unmatched_line(rep):  # said in the report too; here so a console user sees it without opening it
            logging.getLogger("curate").warning("--ground-truth, data set %s: %s", name, unmatched_line(rep))
        png = plot_scores(rep, Path(out) / f"accuracy_{name}.png", title=f"{name}: score of planted vs clean rows")
        res[name] = {**without_values(rep), "plot": png.name if png else None}
    return res


def experiment_markdown(acc: dict[str, dict]) -> str:
    """The report section: per arm, the decisions of the run that made it against the planted labels."""
    parts = ["## Curation decisions vs planted ground truth", "",
             "Per data set made by a curate run: what each dropping stage removed, against the corpus' planted "
             "labels (curate.demo.truth has the definitions)."]
    for name, rep in acc.items():
        parts += ["", markdown(rep, heading=f"### {name}:")]
        if rep.get("plot"):
            parts += ["", f"![{name} scores]({rep['plot']})"]
    return "\n".join(parts)


def html_section(report: dict, out: Path) -> str:
    """The accuracy tables as HTML (for the run report), with the score plot inline."""
    import base64
    import html

    parts, table = [], []

    def flush():
        if table:
            head, *body = [[html.escape(c.strip()).replace("**", "") for c in line.strip("|").split("|")] for line in table
                           if not set(line) <= set("|-")]
            parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in markdown(report, heading="").splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            parts.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    png = plot_scores(report, Path(out) / "accuracy_scores.png")
    if png:
        parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">')
    return "".join(parts)


def main(argv: list[str] | None = None) -> None:
    """python -m curate.demo.truth CORPUS NAME=RUN_DIR [NAME=RUN_DIR ...] --out DIR: accuracy.json + accuracy.md."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("corpus")
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR: a curate run of the corpus' URL list")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    acc = experiment_accuracy(dict((n, [r]) for n, _, r in (x.partition("=") for x in a.runs)), a.corpus, out)
    (out / "accuracy.json").write_text(json.dumps(acc, indent=1))
    (out / "accuracy.md").write_text(experiment_markdown(acc) + "\n")
    print(out / "accuracy.md")


if __name__ == "__main__":
    main()
