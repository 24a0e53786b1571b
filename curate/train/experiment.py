"""`curate experiment`: same model, same budget, several data sets and seeds; report the difference.

Why: curation is only worth it if models trained on its output are better per unit of compute
(DataComp's protocol: fix the model and the samples seen, vary only the data). Seeds give the
spread, so a difference is called real only when it exceeds that spread.

Output folder: runs/NAME/seedS/ (a `curate train` folder plus eval.json), results.json,
report.md, report.html and the plots (loss.png, metrics.png). Finished runs are reused when the
command is repeated with the same settings, so an interrupted experiment continues.
"""
from __future__ import annotations

import base64
import html
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from curate.train.evaluate import evaluate, load_eval_meta
from curate.train.loop import TrainConfig, TrainError, train

METRICS = ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1",
           "image_to_text_R@5", "text_to_image_R@5")
PRIMARY = "zeroshot_top1"


def parse_sets(specs: list[str]) -> dict[str, list[str]]:
    """NAME=SHARDS[,SHARDS...] arguments into an ordered {name: [shards]}."""
    sets: dict[str, list[str]] = {}
    for s in specs:
        name, sep, shards = s.partition("=")
        if not sep or not name or not shards:
            raise TrainError(f"data sets are NAME=SHARDS (e.g. curated=out/shards), not {s!r}")
        if name in sets:
            raise TrainError(f"data set name {name!r} given twice")
        sets[name] = [x for x in shards.split(",") if x]
    if not sets:
        raise TrainError("give at least one NAME=SHARDS data set")
    return sets


def parse_set_options(specs: list[str], sets: dict, key: str) -> dict[str, dict]:
    """NAME=VALUE arguments (e.g. --recaption-prob mixed=0.5) into {name: {key: float(value)}}."""
    out: dict[str, dict] = {}
    for s in specs:
        name, sep, value = s.partition("=")
        if not sep or name not in sets:
            raise TrainError(f"--{key.replace('_', '-')} takes NAME=VALUE for a data set NAME given, not {s!r}")
        try:
            out[name] = {key: float(value)}
        except ValueError:
            raise TrainError(f"--{key.replace('_', '-')} {s!r}: {value!r} is not a number") from None
    return out


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_experiment(sets: dict[str, list[str]], eval_set: str, output: str, seeds: int, base: TrainConfig,
                   log: Callable[[str], None] = print, overrides: dict[str, dict] | None = None) -> dict:
    """Train and evaluate every set x seed; `overrides` sets per-set TrainConfig fields (recaption_prob)."""
    load_eval_meta(eval_set)  # fail before hours of training, not after
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, shards in sets.items():
        for seed in range(seeds):
            rdir = out / "runs" / name / f"seed{seed}"
            cfg = replace(base, shards=shards, output=str(rdir), seed=seed, **(overrides or {}).get(name, {}))
            ev_path = rdir / "eval.json"
            if (rdir / "summary.json").is_file() and ev_path.is_file():
                old = json.loads((rdir / "config.json").read_text())
                same = all(old.get(k) == v for k, v in asdict(cfg).items() if k not in ("extra", "output"))
                if same:
                    log(f"{name} seed {seed}: reusing {rdir}")
                    runs.append(_run_record(name, seed, rdir))
                    continue
                raise TrainError(f"{rdir} holds a run with other settings; use another --output")
            if rdir.exists() and (rdir / "checkpoint.pt").is_file():
                summary = train(cfg, resume=True)
            else:
                log(f"{name} seed {seed}: training {cfg.samples_seen} samples on {', '.join(shards)}")
                summary = train(cfg)
            ev = evaluate(str(rdir / "checkpoint.pt"), eval_set)
            ev_path.write_text(json.dumps(ev, indent=1))
            log(f"{name} seed {seed}: loss {summary['final_loss']:.3f}, zero-shot top1 {ev['zeroshot_top1']:.3f}, "
                f"i2t R@1 {ev['image_to_text_R@1']:.3f}, {summary['samples_per_s']:.0f} samples/s")
            runs.append(_run_record(name, seed, rdir))
    results = summarise(runs, sets, base, eval_set, seeds)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    return results


def _run_record(name: str, seed: int, rdir: Path) -> dict:
    summary = json.loads((rdir / "summary.json").read_text())
    ev = json.loads((rdir / "eval.json").read_text())
    curve = [json.loads(line) for line in (rdir / "log.jsonl").read_text().splitlines() if line.strip()]
    return {"set": name, "seed": seed, "dir": str(rdir), "train": summary, "eval": ev,
            "loss_curve": [(r["samples_seen"], r["loss"]) for r in curve]}


def summarise(runs: list[dict], sets: dict, base: TrainConfig, eval_set: str, seeds: int) -> dict:
    agg = {}
    for name in sets:
        rs = [r for r in runs if r["set"] == name]
        agg[name] = {m: dict(zip(("mean", "std"), _mean_std([r["eval"].get(m) for r in rs]))) for m in METRICS}
        attrs = rs[0]["eval"].get("attributes") or {}
        agg[name]["attributes"] = {a: dict(zip(("mean", "std"), _mean_std(
            [r["eval"]["attributes"][a]["top1"] for r in rs]))) for a in attrs}
        agg[name]["skipped_total"] = sum(r["train"]["skipped_total"] for r in rs)
        agg[name]["samples_per_s"] = _mean_std([r["train"]["samples_per_s"] for r in rs])[0]
        agg[name]["final_loss"] = dict(zip(("mean", "std"), _mean_std([r["train"]["final_loss"] for r in rs])))
    names = list(sets)
    comparisons = []
    for other in names[1:]:
        a, b = agg[names[0]], agg[other]
        for m in METRICS:
            diff = a[m]["mean"] - b[m]["mean"]
            spread = a[m]["std"] + b[m]["std"]
            comparisons.append({"a": names[0], "b": other, "metric": m, "diff": diff, "spread": spread,
                                "beyond_spread": bool(abs(diff) > spread and seeds > 1)})
    settings = {k: v for k, v in asdict(base).items() if k not in ("shards", "output", "seed", "extra")}
    return {"sets": sets, "eval_set": eval_set, "seeds": seeds, "settings": settings, "aggregate": agg,
            "comparisons": comparisons, "runs": runs, "primary_metric": PRIMARY}


def _plots(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(results["sets"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, name in enumerate(names):
        for j, r in enumerate(x for x in results["runs"] if x["set"] == name):
            xs, ys = zip(*r["loss_curve"]) if r["loss_curve"] else ((), ())
            ax.plot(xs, ys, color=colors[i % len(colors)], alpha=0.8, label=name if j == 0 else None)
    ax.set_xlabel("samples seen")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.set_title("loss curves (one line per seed)")
    fig.tight_layout()
    loss_png = out / "loss.png"
    fig.savefig(loss_png, dpi=100)
    plt.close(fig)

    agg = results["aggregate"]
    metrics = [m for m in METRICS if m.endswith("R@1") or m == PRIMARY]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [k + i * w for k in range(len(metrics))]
        ax.bar(xs, [agg[name][m]["mean"] for m in metrics], w, yerr=[agg[name][m]["std"] for m in metrics],
               capsize=3, label=name, color=colors[i % len(colors)])
        for m_i, m in enumerate(metrics):  # each seed as a dot
            vals = [r["eval"][m] for r in results["runs"] if r["set"] == name]
            ax.plot([xs[m_i]] * len(vals), vals, "k.", ms=4)
    ax.set_xticks([k + w * (len(names) - 1) / 2 for k in range(len(metrics))], metrics, fontsize=8)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    metrics_png = out / "metrics.png"
    fig.savefig(metrics_png, dpi=100)
    plt.close(fig)
    return [loss_png, metrics_png]


def _table_md(results: dict) -> str:
    names = list(results["sets"])
    agg = results["aggregate"]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in METRICS:
        lines.append(f"| {m} | " + " | ".join(f"{agg[n][m]['mean']:.3f} ± {agg[n][m]['std']:.3f}" for n in names) + " |")
    for a in agg[names[0]]["attributes"]:
        lines.append(f"| zero-shot {a} | " + " | ".join(
            f"{agg[n]['attributes'][a]['mean']:.3f} ± {agg[n]['attributes'][a]['std']:.3f}" for n in names) + " |")
    lines.append("| final train loss | " + " | ".join(
        f"{agg[n]['final_loss']['mean']:.3f} ± {agg[n]['final_loss']['std']:.3f}" for n in names) + " |")
    lines.append("| samples/s | " + " | ".join(f"{agg[n]['samples_per_s']:.0f}" for n in names) + " |")
    lines.append("| skipped samples (all seeds) | " + " | ".join(str(agg[n]["skipped_total"]) for n in names) + " |")
    return "\n".join(lines)


def _verdicts(results: dict) -> list[str]:
    out = []
    for c in results["comparisons"]:
        word = "beyond" if c["beyond_spread"] else "within"
        out.append(f"{c['a']} - {c['b']} on {c['metric']}: {c['diff']:+.3f} ({word} the seed spread "
                   f"{c['spread']:.3f} = std {c['a']} + std {c['b']})")
    return out


def write_report(results: dict, out: Path) -> None:
    pngs = _plots(results, out)
    s = results["settings"]
    head = (f"model {s['model']}, {s['samples_seen']} samples seen, batch {s['batch_size']}, lr {s['lr']} "
            f"(warmup {s['warmup']} steps, cosine), weight decay {s['weight_decay']}, loss {s['loss']}, "
            f"{results['seeds']} seeds; eval set {results['eval_set']}")
    sets = "\n".join(f"- **{n}**: {', '.join(v)}" for n, v in results["sets"].items())
    md = (f"# Experiment\n\n{head}\n\nData sets:\n{sets}\n\n{_table_md(results)}\n\n"
          + "\n".join(f"- {v}" for v in _verdicts(results))
          + "\n\n![loss](loss.png)\n\n![metrics](metrics.png)\n")
    (out / "report.md").write_text(md)
    imgs = "".join(f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs)
    names = list(results["sets"])
    agg = results["aggregate"]
    rows = "".join(f"<tr><td>{html.escape(m)}</td>" + "".join(
        f"<td>{agg[n][m]['mean']:.3f} ± {agg[n][m]['std']:.3f}</td>" for n in names) + "</tr>" for m in METRICS)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>curate experiment</title>"
            f"<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:2px 8px;"
            f"border-bottom:1px solid #ddd}}</style></head><body><h1>Experiment</h1><p>{html.escape(head)}</p>"
            f"<ul>{''.join(f'<li><b>{html.escape(n)}</b>: {html.escape(str(v))}</li>' for n, v in results['sets'].items())}</ul>"
            f"<table><tr><th>metric</th>{''.join(f'<th>{html.escape(n)}</th>' for n in names)}</tr>{rows}</table>"
            f"<ul>{''.join(f'<li>{html.escape(v)}</li>' for v in _verdicts(results))}</ul>{imgs}</body></html>")
    (out / "report.html").write_text(page)
