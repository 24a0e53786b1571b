"""`curate experiment`: same model, same budget, several data sets (arms) and seeds; a verdict per metric.

Why: curation is only worth it if models trained on its output are better per unit of compute
(DataComp's protocol: fix the model and the samples seen, vary only the data). What makes the claim
trustworthy, and what this module enforces:
- controls: an arm may be a random subset of another arm with the size of a third
  (`random_subset_of: raw, size_of: curated`, drawn per seed), so "curated beats raw" is not just
  "smaller beats bigger"; a trusted-only arm (the filter's seed split) is an ordinary arm;
- seeds paired by seed (arm A seed s vs arm B seed s), 5 by default; per metric the paired
  difference gets a t interval over seeds AND a bootstrap interval over eval examples (per-example
  scores of both arms), and the verdict (better / worse / no detectable difference) comes from the
  intervals (curate.train.stats), never from std + std;
- primary metrics are named in the config before any run and marked in the report;
- settings are chosen on a validation split only: `sweep` trains each candidate and scores it on
  `validation_set`; the function that chooses never receives the eval set, and a validation set with
  the eval set's content is refused;
- a finished run is reused only when its config, the content fingerprint of its shards and of the
  eval set all match (curate.train.fingerprint); otherwise it is retrained or re-evaluated.

Output folder: runs/NAME/seedS/ (a `curate train` folder, eval.json with per-example scores,
fingerprints.json), subsets/NAME/seedS/ (random-subset controls), selection/ (the validation sweep),
results.json, report.md, report.html and the plots (loss.png, metrics.png).
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import re
import shutil
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from curate.io import storage
from curate.train import stats
from curate.train.data import DataError, expand_shards
from curate.train.evaluate import EvalError, evaluate, load_eval_meta
from curate.train.fingerprint import DigestCache, eval_fingerprint, shards_fingerprint
from curate.train.loop import TrainConfig, TrainError
from curate.train.ranks import lead_train, rank0_leads, rank_world
from curate.train.subsets import usable_keys, write_random_subset

METRICS = ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1",
           "image_to_text_R@5", "text_to_image_R@5")
PRIMARY = ("zeroshot_top1",)
DEFAULT_SEEDS = 5
SWEEP_SEED = 1000  # selection runs use their own seed, never one of the compared runs
SWEEPABLE = ("lr", "warmup", "weight_decay", "samples_seen", "batch_size", "beta2", "eps")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class Arm:
    """One data set: shards, or a random subset of arm `random_subset_of` with the size of arm `size_of`."""
    name: str
    shards: list[str] = field(default_factory=list)
    random_subset_of: str | None = None
    size_of: str | None = None
    overrides: dict = field(default_factory=dict)  # TrainConfig fields for this arm only (recaption_prob)


@dataclass
class ExperimentSpec:
    arms: dict[str, Arm]
    eval_set: str
    seeds: int = DEFAULT_SEEDS
    primary_metrics: list[str] = field(default_factory=lambda: list(PRIMARY))
    validation_set: str | None = None
    sweep: dict[str, list] = field(default_factory=dict)
    compare: list[tuple[str, str]] = field(default_factory=list)  # (a, b): a - b; default first vs each other
    ground_truth: str | None = None  # a demo corpus (corpus.parquet): report each arm's curation decisions against it

    def validate(self) -> None:
        if not self.arms:
            raise TrainError("give at least one NAME=SHARDS data set")
        for a in self.arms.values():
            if not NAME.fullmatch(a.name):
                raise TrainError(f"data set name {a.name!r}: use letters, digits, '_', '.', '-'")
            if a.random_subset_of is not None:
                for ref in (a.random_subset_of, a.size_of):
                    if ref not in self.arms or ref == a.name or self.arms[ref].random_subset_of is not None:
                        raise TrainError(f"{a.name}: random_subset_of / size_of must name another data set "
                                         f"with shards, not {ref!r}")
            elif not a.shards:
                raise TrainError(f"data set {a.name!r} has no shards")
        if self.seeds < 1:
            raise TrainError("--seeds must be at least 1")
        if not self.compare:
            names = list(self.arms)
            self.compare = [(names[0], n) for n in names[1:]]
        for a, b in self.compare:
            if a not in self.arms or b not in self.arms:
                raise TrainError(f"compare {a!r} with {b!r}: both must be data sets of this experiment")
        for k, vals in self.sweep.items():
            if k not in SWEEPABLE or not vals:
                raise TrainError(f"sweep {k!r}: only {', '.join(SWEEPABLE)} with at least one value")
        if self.ground_truth and not Path(self.ground_truth).exists():
            raise TrainError(f"--ground-truth {self.ground_truth}: no such demo corpus (folder or corpus.parquet)")
        if self.sweep and not self.validation_set:
            raise TrainError("a sweep chooses settings on a validation split: give --validation-set "
                             "(never the eval set)")

    def check_metrics(self, meta: dict) -> None:
        known = set(METRICS) | {f"attribute_{a['name']}" for a in meta.get("attributes") or []}
        bad = [m for m in self.primary_metrics if m not in known]
        if bad or not self.primary_metrics:
            raise TrainError(f"primary metric(s) {', '.join(bad) or '(none)'} unknown; choose from {', '.join(sorted(known))}")


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


def parse_subsets(specs: list[str]) -> list[Arm]:
    """NAME=OF:SIZE_OF arguments (--random-subset random=raw:curated) into subset arms."""
    out = []
    for s in specs:
        name, sep, rest = s.partition("=")
        of, sep2, size_of = rest.partition(":")
        if not (sep and sep2 and name and of and size_of):
            raise TrainError(f"--random-subset takes NAME=OF:SIZE_OF (e.g. random=raw:curated), not {s!r}")
        out.append(Arm(name, random_subset_of=of, size_of=size_of))
    return out


def parse_sweep(specs: list[str]) -> dict[str, list]:
    """KEY=V1,V2 arguments (--sweep lr=1e-3,2e-3) into {key: [values]} typed like TrainConfig's field."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, list] = {}
    for s in specs:
        key, sep, vals = s.partition("=")
        if not sep or key not in SWEEPABLE:
            raise TrainError(f"--sweep takes KEY=V1,V2 with KEY one of {', '.join(SWEEPABLE)}, not {s!r}")
        cast = int if types[key] in ("int", int) else float
        try:
            out[key] = [cast(v) for v in vals.split(",") if v]
        except ValueError:
            raise TrainError(f"--sweep {s!r}: values must be numbers") from None
    return out


def load_config(path: str) -> dict:
    """An experiment config (YAML): arms, eval_set, validation_set, seeds, primary_metrics, sweep, compare, train."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise TrainError(f"experiment config not found: {path}")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise TrainError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise TrainError(f"{path}: an experiment config is a mapping")
    return doc


class _Strict(BaseModel):
    """A config section that refuses keys it does not know (a misspelt key must not fall back to a default)."""
    model_config = ConfigDict(extra="forbid")


class ArmConfig(_Strict):
    """arms.NAME: shards, or a random-subset control; `recaption_prob` is this arm's own caption mix."""
    shards: list[str] = []
    random_subset_of: Optional[str] = None
    size_of: Optional[str] = None
    recaption_prob: Optional[float] = None

    @field_validator("shards", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v


class TrainSection(_Strict):
    """train: the settings every run of the experiment shares (the CLI options of the same names)."""
    model: Optional[str] = None
    samples_seen: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    warmup: Optional[int] = None
    weight_decay: Optional[float] = None
    loss: Optional[str] = None
    video_frames: Optional[int] = None


class ExperimentConfig(_Strict):
    """The whole experiment YAML; every level refuses unknown keys, as recipes do."""
    arms: dict[str, ArmConfig] = {}
    eval_set: Optional[str] = None
    validation_set: Optional[str] = None
    seeds: int = DEFAULT_SEEDS
    primary_metrics: Optional[list[str]] = None
    sweep: dict[str, list] = {}
    compare: list[tuple[str, str]] = []
    ground_truth: Optional[str] = None
    train: TrainSection = TrainSection()

    @field_validator("arms", mode="before")
    @classmethod
    def _bare_shards(cls, v):
        """An arm may be just its shards (a path or a list of paths)."""
        if isinstance(v, dict):
            return {k: a if isinstance(a, dict) else {"shards": a} for k, a in v.items()}
        return v


def _config_error(err: ValidationError, where: str) -> str:
    """One line for the first problem: its key path and, for an unknown key, the keys that level takes."""
    first = err.errors()[0]
    loc = [str(x) for x in first["loc"]]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    if first["type"] != "extra_forbidden":
        return f"{where}: {'.'.join(loc)}: {first['msg']}{more}"
    section = {"train": TrainSection, "arms": ArmConfig}.get(loc[0], ExperimentConfig) if len(loc) > 1 else ExperimentConfig
    return (f"{where}: unknown key {'.'.join(loc)!r}; valid keys{' under ' + '.'.join(loc[:-1]) if len(loc) > 1 else ''}: "
            f"{', '.join(section.model_fields)}{more}")


def spec_from_config(doc: dict, where: str = "experiment config") -> tuple[ExperimentSpec, dict]:
    """(spec, train settings) from a config mapping; arms are {shards: [...]} or {random_subset_of, size_of}.

    Unknown keys at any level are refused (TrainError naming the key and the valid ones): a misspelt
    `seed:` or `learning_rate:` used to be ignored, and the experiment ran with the defaults."""
    try:
        c = ExperimentConfig.model_validate(doc)
    except ValidationError as err:
        raise TrainError(_config_error(err, where)) from None
    arms = {name: Arm(name, shards=list(a.shards), random_subset_of=a.random_subset_of, size_of=a.size_of,
                      overrides={} if a.recaption_prob is None else {"recaption_prob": a.recaption_prob})
            for name, a in c.arms.items()}
    spec = ExperimentSpec(arms=arms, eval_set=c.eval_set or "", seeds=c.seeds,
                          primary_metrics=list(c.primary_metrics or PRIMARY), validation_set=c.validation_set,
                          sweep={k: list(v) for k, v in c.sweep.items()}, compare=[tuple(x) for x in c.compare],
                          ground_truth=c.ground_truth)
    return spec, c.train.model_dump(exclude_none=True)


def _mean_std(xs: list) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def metric_value(ev: dict, m: str):
    if m.startswith("attribute_"):
        return (ev.get("attributes", {}).get(m[len("attribute_"):]) or {}).get("top1")
    return ev.get(m)


class _Runner:
    """Trains and evaluates one (arm, seed), reusing a finished run only for the same config and bytes."""

    def __init__(self, out: Path, log: Callable[[str], None], push: Callable[..., None] = lambda *paths: None):
        self.out, self.log, self.push = out, log, push  # push: upload finished files (an output on s3://...)
        self.cache = DigestCache(out / "fingerprint_cache.json")
        self.sizes: dict[str, int] = {}

    def shards_of(self, spec: ExperimentSpec, arm: Arm, seed: int) -> list[str]:
        if arm.random_subset_of is None:
            return list(arm.shards)
        src, ref = spec.arms[arm.random_subset_of], spec.arms[arm.size_of]
        try:
            return write_random_subset(src.shards, self.usable(ref), self.out / "subsets" / arm.name / f"seed{seed}",
                                       seed, min_tars=rank_world()[1])  # a tar per torchrun rank at least
        except ValueError as err:
            raise TrainError(f"{arm.name}: {err}") from None

    def usable(self, arm: Arm) -> int:
        """Usable samples (an image or video and a text) of an arm with shards, counted once per experiment."""
        if arm.name not in self.sizes:
            self.sizes[arm.name] = len(usable_keys(arm.shards))
        return self.sizes[arm.name]

    def fingerprint(self, shards: list[str]) -> dict:
        try:
            return shards_fingerprint(shards, self.cache)
        except DataError as err:
            raise TrainError(str(err)) from None

    def run(self, name: str, seed: int, shards: list[str], cfg: TrainConfig, rdir: Path,
            eval_dir: str, eval_fp: dict) -> dict:
        fp = self.fingerprint(shards)
        want = {"shards": fp, "eval": eval_fp}
        fp_path, ev_path = rdir / "fingerprints.json", rdir / "eval.json"
        have = json.loads(fp_path.read_text()) if fp_path.is_file() else {}
        same_cfg = (rdir / "config.json").is_file() and all(
            json.loads((rdir / "config.json").read_text()).get(k) == v
            for k, v in asdict(cfg).items() if k not in ("extra", "output"))
        same_data = have.get("shards", {}).get("sha256") == fp["sha256"]
        if rdir.exists() and not (same_cfg and same_data):
            why = "settings changed" if not same_cfg else "shard contents changed"
            self.log(f"{name} seed {seed}: retraining ({why} since {rdir} was trained)")
            shutil.rmtree(rdir)
        rdir.mkdir(parents=True, exist_ok=True)
        fp_path.write_text(json.dumps({**have, "shards": fp}, indent=1))
        if not (rdir / "summary.json").is_file():
            resume = (rdir / "checkpoint.pt").is_file()
            self.log(f"{name} seed {seed}: {'resuming' if resume else 'training'} {cfg.samples_seen} samples "
                     f"on {', '.join(shards[:3])}{' ...' if len(shards) > 3 else ''}")
            lead_train(cfg, resume=resume)  # every torchrun rank joins this run
            ev_path.unlink(missing_ok=True)
        ev = json.loads(ev_path.read_text()) if ev_path.is_file() else {}
        if ev.get("eval_fingerprint") != eval_fp["sha256"] or "per_example" not in ev:
            if ev:
                self.log(f"{name} seed {seed}: re-evaluating (the eval set changed since {ev_path} was written)")
            ev = evaluate(str(rdir / "checkpoint.pt"), eval_dir, per_example=True)
            ev["eval_fingerprint"] = eval_fp["sha256"]
            ev_path.write_text(json.dumps(ev))
        else:
            self.log(f"{name} seed {seed}: reusing {rdir} (same settings, shard and eval-set contents)")
        fp_path.write_text(json.dumps(want, indent=1))
        self.cache.save()
        self.push(rdir)
        return _run_record(name, seed, rdir, want)


def select_settings(spec: ExperimentSpec, base: TrainConfig, runner: _Runner, log: Callable[[str], None]) -> dict:
    """Train each sweep candidate on every arm (seed SWEEP_SEED) and keep the best on the VALIDATION set.

    Takes no eval set on purpose: settings are chosen where the reported metrics are not measured.
    The score of a candidate is its first primary metric averaged over the arms, so no arm is tuned for.
    """
    if not spec.sweep:
        return {"chosen": {}, "candidates": []}
    val_fp = eval_fingerprint(spec.validation_set, runner.cache)
    keys = list(spec.sweep)
    metric = spec.primary_metrics[0]
    cands = []
    for combo in itertools.product(*(spec.sweep[k] for k in keys)):
        setting = dict(zip(keys, combo))
        tag = "_".join(f"{k}{v}" for k, v in setting.items())
        scores = {}
        for arm in spec.arms.values():
            rdir = runner.out / "selection" / tag / arm.name
            cfg = replace(base, **setting, **arm.overrides, output=str(rdir), seed=SWEEP_SEED,
                          shards=runner.shards_of(spec, arm, SWEEP_SEED))
            rec = runner.run(f"selection {tag} {arm.name}", SWEEP_SEED, cfg.shards, cfg, rdir,
                             spec.validation_set, val_fp)
            scores[arm.name] = metric_value(rec["eval"], metric)
        mean = statistics.fmean(v for v in scores.values() if v is not None)
        cands.append({"setting": setting, "validation": scores, "mean": mean})
        log(f"selection {setting}: validation {metric} {mean:.4f} (mean over data sets)")
    best = max(cands, key=lambda c: c["mean"])
    log(f"selection: chose {best['setting']} on the validation set")
    return {"chosen": best["setting"], "metric": metric, "validation_set": spec.validation_set,
            "validation_fingerprint": val_fp, "candidates": cands}


def preflight(spec: ExperimentSpec, runner: _Runner) -> None:
    """Every check that can fail an arm, done before any run trains and before the output folder exists.

    Why: a missing shard folder used to surface at its arm's first run, after the earlier arms had
    trained (hours on a real budget), and left an empty output folder behind.
    An arm is refused when one of its tars has the same bytes (sha256, the digest the fingerprints
    already compute and cache) as a tar of the eval or validation set. Why file content and not sample
    content: hashing every sample's image would read all training bytes again on each experiment (the
    per-file digests are cached), while the leak seen in practice is an eval folder passed as an arm.
    Eval samples re-packed into other tars are not caught: decontaminate in the curation run.
    """
    held_out = {}  # file digest -> (which split, file) of the eval and validation sets
    for split, folder in (("validation set", spec.validation_set), ("eval set", spec.eval_set)):
        if folder:
            held_out.update({runner.cache.digest(f)[1]: (split, f) for f in expand_shards([folder])})
    for arm in spec.arms.values():
        if arm.random_subset_of is None:
            try:
                tars = expand_shards(arm.shards)
            except DataError as err:
                raise TrainError(f"data set {arm.name!r}: {err}") from None
            for tar in tars:  # hashed here once; the runs' fingerprints reuse the cached digests
                split, f = held_out.get(runner.cache.digest(tar)[1], (None, None))
                if split:
                    raise TrainError(f"data set {arm.name!r}: {tar} has the content of {split} file {f}: a model "
                                     f"trained on the {split} would be scored on its own training data")
    for arm in spec.arms.values():
        if arm.random_subset_of is not None:
            size, have = runner.usable(spec.arms[arm.size_of]), runner.usable(spec.arms[arm.random_subset_of])
            if size > have:
                raise TrainError(f"{arm.name}: a random subset of {arm.random_subset_of} ({have} usable samples) "
                                 f"with the size of {arm.size_of} ({size}) cannot be drawn; swap them "
                                 f"(--random-subset {arm.name}={arm.size_of}:{arm.random_subset_of})?")
            if size == 0:
                raise TrainError(f"{arm.name}: {arm.size_of} has no usable sample, so its random subset is empty")


def _check_only(only: list[str], spec: ExperimentSpec) -> None:
    """--arms entries must name data sets of this experiment and, with @SEED, one of its seeds.

    Why the seed: `curated@7` in a 1-seed experiment matched no run, and "trained 0 run(s)" exited 0."""
    unknown = sorted({o.split("@")[0] for o in only} - set(spec.arms))
    if unknown:
        raise TrainError(f"--arms {', '.join(unknown)}: not a data set of this experiment")
    for o in only:
        name, at, seed = o.partition("@")
        if at and not (seed.isdigit() and int(seed) < spec.seeds):
            raise TrainError(f"--arms {o}: {seed!r} is not a seed of this experiment (seeds 0..{spec.seeds - 1})")


# one fetch session for the whole experiment: every data set, seed, fingerprint and evaluation reads a remote
# file that has no version (an http server sending no validator) from one copy, downloaded once
@storage.fetch_session()
@rank0_leads  # under torchrun: rank 0 decides, writes and evaluates; the other ranks join each training
def run_experiment(spec: ExperimentSpec, output: str, base: TrainConfig,
                   log: Callable[[str], None] = print, only: list[str] | None = None) -> dict:
    """Choose settings on the validation set (if a sweep is given), then train and evaluate every arm x seed.

    `only`: train and evaluate just these arms (NAME) or runs (NAME@SEED) and return {"partial": True,
    "runs": [...]}, writing no results: parallel workers on one output folder; a final run without it
    reuses their runs (same settings and contents) and writes results.json and the report.
    """
    spec.validate()
    _check_only(only or [], spec)
    meta = load_eval_meta(spec.eval_set)  # fail before hours of training, not after
    spec.check_metrics(meta)
    mirror = storage.Mirror(output, stable=True)  # an output on s3://... is worked on locally and uploaded
    out = mirror.local
    # the experiment so far, for reuse and resume (intermediate checkpoints and subsets are not needed);
    # a remote output lands in a local work folder, a local output is `out` itself and nothing is copied
    mirror.pull("", tree=True, skip=lambda rel: "/checkpoints/" in rel or rel.startswith("subsets/"))
    runner = _Runner(out, log, mirror.push)
    try:
        eval_fp = eval_fingerprint(spec.eval_set, runner.cache)
        if spec.validation_set:
            load_eval_meta(spec.validation_set)
            if eval_fingerprint(spec.validation_set, runner.cache)["sha256"] == eval_fp["sha256"]:
                raise TrainError("the validation set has the eval set's content: settings chosen on it would be "
                                 "tuned on the numbers reported")
    except DataError as err:
        raise EvalError(str(err)) from None
    preflight(spec, runner)
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused experiment leaves no folder behind
    selection = select_settings(spec, base, runner, log)
    base = replace(base, **selection["chosen"])
    runs = []
    for arm in spec.arms.values():
        for seed in range(spec.seeds):
            if only and arm.name not in only and f"{arm.name}@{seed}" not in only:
                continue
            rdir = out / "runs" / arm.name / f"seed{seed}"
            shards = runner.shards_of(spec, arm, seed)
            cfg = replace(base, shards=shards, output=str(rdir), seed=seed, **arm.overrides)
            rec = runner.run(arm.name, seed, shards, cfg, rdir, spec.eval_set, eval_fp)
            rec["dir"] = mirror.url(rdir.relative_to(out).as_posix())  # where it is kept, not the work folder
            ev = rec["eval"]
            log(f"{arm.name} seed {seed}: loss {_num(rec['train'].get('final_loss'))}, zero-shot top1 "
                f"{ev['zeroshot_top1']:.3f}, i2t R@1 {ev['image_to_text_R@1']:.3f}, "
                f"{rec['train']['samples_per_s']:.0f} samples/s")
            runs.append(rec)
    if only:
        return {"partial": True, "runs": runs}
    results = summarise(runs, spec, base, eval_fp, selection)
    if spec.ground_truth:  # precision/recall of the curate runs that made the arms (curate.demo.truth)
        from curate.demo.truth import experiment_accuracy

        results["accuracy"] = experiment_accuracy({n: a.shards for n, a in spec.arms.items()}, spec.ground_truth, out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    mirror.push(*sorted((p for p in out.iterdir() if p.is_file()), key=lambda p: p.name == "results.json"))
    return results


def _run_record(name: str, seed: int, rdir: Path, fingerprints: dict) -> dict:
    summary = json.loads((rdir / "summary.json").read_text())
    ev = json.loads((rdir / "eval.json").read_text())
    curve = [json.loads(line) for line in (rdir / "log.jsonl").read_text().splitlines() if line.strip()]
    return {"set": name, "seed": seed, "dir": str(rdir), "train": summary, "eval": ev,
            "fingerprints": fingerprints, "loss_curve": [(r["samples_seen"], r["loss"]) for r in curve]}


def all_metrics(runs: list[dict]) -> list[str]:
    attrs = [f"attribute_{a}" for a in (runs[0]["eval"].get("attributes") or {})] if runs else []
    return list(METRICS) + attrs


def compare(runs: list[dict], a: str, b: str, metric: str, primary: bool, chance: float | None = None) -> dict:
    """Paired (by seed) difference a - b on one metric: t interval, bootstrap interval, verdict.

    With the metric's `chance`, the verdict says "uninformative" when neither arm is above it (nothing was
    learned, so any difference is noise around chance); a t interval wider than the [-1, +1] a difference of
    two accuracies can take is cut to it and flagged (`t_ci_clamped`, the interval itself in `t_ci_raw`)."""
    ra = {r["seed"]: r for r in runs if r["set"] == a}
    rb = {r["seed"]: r for r in runs if r["set"] == b}
    seeds = sorted(set(ra) & set(rb))
    va = [metric_value(ra[s]["eval"], metric) for s in seeds]
    vb = [metric_value(rb[s]["eval"], metric) for s in seeds]
    t = stats.paired_t_interval([np.nan if x is None else x for x in va], [np.nan if x is None else x for x in vb])
    pa = [ra[s]["eval"].get("per_example", {}).get(metric) for s in seeds]
    pb = [rb[s]["eval"].get("per_example", {}).get(metric) for s in seeds]
    if seeds and all(x is not None for x in pa + pb):
        boot = stats.bootstrap_interval(np.array(pa, dtype=float), np.array(pb, dtype=float))
    else:
        boot = {"lo": None, "hi": None, "examples": 0}
    learned = tuple(None if chance is None else stats.above_baseline(v, chance)["learned"] for v in (va, vb))
    lo, hi, cut = stats.clamp_interval(t["lo"], t["hi"])
    return {"a": a, "b": b, "metric": metric, "primary": primary, "seeds": len(seeds), "diff": t["diff"],
            "t_ci": [lo, hi], "t_ci_clamped": cut, **({"t_ci_raw": [t["lo"], t["hi"]]} if cut else {}),
            "bootstrap_ci": [boot["lo"], boot["hi"]], "bootstrap_examples": boot["examples"], "level": stats.LEVEL,
            "learned": list(learned), "verdict": stats.verdict(t, boot, learned)}


def summarise(runs: list[dict], spec: ExperimentSpec, base: TrainConfig, eval_fp: dict, selection: dict) -> dict:
    metrics = all_metrics(runs)
    agg = {}
    for name in spec.arms:
        rs = [r for r in runs if r["set"] == name]
        agg[name] = {m: dict(zip(("mean", "std"), _mean_std([metric_value(r["eval"], m) for r in rs])))
                     for m in metrics}
        agg[name]["skipped_total"] = sum(r["train"]["skipped_total"] for r in rs)
        agg[name]["samples_per_s"] = _mean_std([r["train"]["samples_per_s"] for r in rs])[0]
        agg[name]["final_loss"] = dict(zip(("mean", "std"), _mean_std([r["train"]["final_loss"] for r in rs])))
    first = runs[0]["eval"] if runs else {}
    chance = dict(first.get("chance") or {})
    chance.update({f"attribute_{a}": v.get("chance") for a, v in (first.get("attributes") or {}).items()})
    comparisons = [compare(runs, a, b, m, m in spec.primary_metrics, chance.get(m))
                   for a, b in spec.compare for m in metrics]
    settings = {k: v for k, v in asdict(base).items() if k not in ("shards", "output", "seed", "extra")}
    arms = {n: {"shards": a.shards, "random_subset_of": a.random_subset_of, "size_of": a.size_of,
                "overrides": a.overrides} for n, a in spec.arms.items()}
    slim = [{**r, "eval": {k: v for k, v in r["eval"].items() if k != "per_example"}} for r in runs]
    learned = {n: {m[len("attribute_"):]: stats.above_baseline(
        [metric_value(r["eval"], m) for r in runs if r["set"] == n], chance[m])
        for m in metrics if m.startswith("attribute_") and chance.get(m) is not None} for n in spec.arms}
    primary = {n: {m: stats.above_baseline([metric_value(r["eval"], m) for r in runs if r["set"] == n], chance[m])
                   for m in spec.primary_metrics if chance.get(m) is not None} for n in spec.arms}
    return {"sets": {n: a.shards or [f"random subset of {a.random_subset_of}, size of {a.size_of}"]
                     for n, a in spec.arms.items()},
            "arms": arms, "eval_set": spec.eval_set, "validation_set": spec.validation_set, "seeds": spec.seeds,
            "primary_metrics": spec.primary_metrics, "settings": settings, "selection": selection,
            "fingerprints": {"eval": eval_fp}, "chance": chance, "metrics": metrics, "aggregate": agg,
            "comparisons": comparisons, "attributes_vs_baseline": learned, "primary_vs_chance": primary,
            "nothing_learned": nothing_learned(primary), "verdict_rule": stats.__doc__.strip().splitlines()[-2:],
            "runs": slim}


def nothing_learned(primary: dict[str, dict[str, dict]]) -> list[str]:
    """The primary metrics on which no arm learned anything: every arm's `learned` is False (its mean over
    seeds at or below chance). Why: comparing arms that all sit at
    chance tells nothing about the data, yet reads as "no detectable difference" (equally good) unless said."""
    metrics = list(dict.fromkeys(m for v in primary.values() for m in v))
    return [m for m in metrics if primary and all(v.get(m, {}).get("learned") is False for v in primary.values())]


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
    metrics = list(dict.fromkeys([*results["primary_metrics"], *(m for m in METRICS if m.endswith("R@1"))]))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [k + i * w for k in range(len(metrics))]
        ax.bar(xs, [agg[name][m]["mean"] for m in metrics], w, yerr=[agg[name][m]["std"] for m in metrics],
               capsize=3, label=name, color=colors[i % len(colors)])
        for m_i, m in enumerate(metrics):  # each seed as a dot
            vals = [metric_value(r["eval"], m) for r in results["runs"] if r["set"] == name]
            ax.plot([xs[m_i]] * len(vals), vals, "k.", ms=4)
    ax.set_xticks([k + w * (len(names) - 1) / 2 for k in range(len(metrics))], metrics, fontsize=8)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    metrics_png = out / "metrics.png"
    fig.savefig(metrics_png, dpi=100)
    plt.close(fig)
    return [loss_png, metrics_png]


def _num(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _fmt_ci(ci) -> str:
    return "n/a" if ci[0] is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


CUT = "†"
CUT_NOTE = (f"{CUT} The 95% t interval over seeds was wider than [−1, +1], the range a difference of two accuracies "
            "can take, and is shown cut to it: too few seeds to bound the difference at all (the interval itself "
            "is t_ci_raw in results.json).")


def _fmt_t(c: dict) -> str:
    """A comparison's t interval, marked when it was cut to the possible range (see CUT_NOTE)."""
    return _fmt_ci(c["t_ci"]) + (CUT if c.get("t_ci_clamped") else "")


def headline(results: dict) -> str | None:
    """The line that must come before any verdict when no arm learned a primary metric (None otherwise).

    Why: arms that all sit at chance give "no detectable difference" on every comparison, which reads as
    "the data sets are equally good"; the truth is that the experiment measured nothing about the data."""
    none = results.get("nothing_learned") or []
    if not none:
        return None
    pv, chance = results.get("primary_vs_chance") or {}, results.get("chance") or {}
    parts, at_or_below = [], True
    for m in none:
        means = [v[m]["mean"] for v in pv.values() if v.get(m) and v[m]["mean"] is not None]
        at_or_below &= all(x <= chance[m] for x in means)
        parts.append(f"{m} {min(means):.3f}–{max(means):.3f} across arms vs chance {chance[m]:.3f}" if means else m)
    why = ("every arm is at or below chance" if at_or_below else
           "no arm is above chance with its 95% interval over seeds")
    every = set(none) >= {m for v in pv.values() for m in v}
    what = ("NO ARM LEARNED: the comparison is uninformative" if every else
            f"no arm learned {', '.join(none)}: its comparisons are uninformative")
    return (f"{what} ({why}: {'; '.join(parts)}); it cannot tell the data sets apart, whatever the verdicts say: "
            f"train longer (more samples seen) or with more seeds, and check the eval set")


def _table_md(results: dict) -> str:
    names = list(results["sets"])
    agg = results["aggregate"]
    chance = results.get("chance") or {}
    prim = set(results.get("primary_metrics") or ())
    lines = ["| metric | chance | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for m in results.get("metrics") or METRICS:
        c = chance.get(m)
        label = f"**{m}** (primary)" if m in prim else m
        lines.append(f"| {label} | {'' if c is None else f'{c:.3f}'} | " + " | ".join(
            f"{agg[n][m]['mean']:.3f} ± {agg[n][m]['std']:.3f}" for n in names) + " |")
    lines.append("| final train loss | | " + " | ".join(
        f"{agg[n]['final_loss']['mean']:.3f} ± {agg[n]['final_loss']['std']:.3f}" for n in names) + " |")
    lines.append("| samples/s | | " + " | ".join(f"{agg[n]['samples_per_s']:.0f}" for n in names) + " |")
    lines.append("| skipped samples (all seeds) | | " + " | ".join(str(agg[n]["skipped_total"]) for n in names) + " |")
    lines += ["", "| comparison | metric | diff (mean over seeds) | 95% t CI (seeds) | 95% bootstrap CI (eval examples) | verdict |",
              "|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        d = "n/a" if c["diff"] is None else f"{c['diff']:+.3f}"
        m = f"**{c['metric']}** (primary)" if c["primary"] else c["metric"]
        v = f"**{c['verdict']}**" if c["primary"] else c["verdict"]
        lines.append(f"| {c['a']} − {c['b']} | {m} | {d} | {_fmt_t(c)} | {_fmt_ci(c['bootstrap_ci'])} | {v} |")
    if any(c.get("t_ci_clamped") for c in results["comparisons"]):
        lines += ["", CUT_NOTE]
    return "\n".join(lines)


def _verdicts(results: dict, with_headline: bool = True) -> list[str]:
    """One line per primary metric and comparison (the claims the experiment was set up to test), after the
    "no arm learned" headline when there is one."""
    head = headline(results) if with_headline else None
    out = [head] if head else []
    for c in results["comparisons"]:
        if not c["primary"]:
            continue
        d = "n/a" if c["diff"] is None else f"{c['diff']:+.3f}"
        out.append(f"{c['a']} vs {c['b']} on {c['metric']} (primary): {c['verdict']}; difference {d}, "
                   f"95% t CI {_fmt_ci(c['t_ci'])}"
                   + (f" (cut to the possible range from {_fmt_ci(c['t_ci_raw'])})" if c.get("t_ci_clamped") else "")
                   + f" over {c['seeds']} paired seeds, 95% bootstrap CI "
                   f"{_fmt_ci(c['bootstrap_ci'])} over {c['bootstrap_examples']} eval examples")
    if results["seeds"] < DEFAULT_SEEDS:
        out.append(f"note: {results['seeds']} seed(s); the protocol asks for at least {DEFAULT_SEEDS}")
    return out


def _selection_md(results: dict) -> str:
    sel = results.get("selection") or {}
    if not sel.get("candidates"):
        return "Settings were fixed before the runs (no sweep); none was chosen on the eval set."
    rows = "\n".join(f"- {c['setting']}: validation {sel['metric']} {c['mean']:.4f}" for c in sel["candidates"])
    return (f"Settings chosen on the validation set {sel['validation_set']} (never the eval set): "
            f"{sel['chosen']}\n\n{rows}")


def _mark(r: dict) -> str:
    """✓ learned (interval above the baseline), ✗ under it (worse than always answering the majority class)."""
    return " ✓" if r.get("learned") else " ✗" if r.get("below") else ""


def _vs_baseline_md(learned: dict, names: list[str], title: str, key: str) -> str:
    """Mean over seeds of each arm beside the baseline, one row per metric or attribute, marked by _mark."""
    names = [n for n in names if learned.get(n)]
    if not names:
        return ""
    lines = [title, "", f"| {key} | baseline | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for a in learned[names[0]]:
        lines.append(f"| {a} | {learned[names[0]][a]['baseline']:.3f} | " + " | ".join(
            f"{_num(learned[n][a]['mean'])}{_mark(learned[n][a])}" for n in names) + " |")
    return "\n".join(lines)


def _learned_md(results: dict) -> str:
    """Per primary metric and per attribute and data set: mean over seeds beside its chance / baseline."""
    names = list(results["sets"])
    legend = ("✓ = the 95% t interval over seeds lies above it, ✗ = below it (worse than always answering the "
              "majority class), neither = not shown to be above it (not learned).")
    parts = [_vs_baseline_md(results.get("primary_vs_chance") or {}, names,
                             f"Primary metrics (mean over seeds) vs chance; {legend}", "metric"),
             _vs_baseline_md(results.get("attributes_vs_baseline") or {}, names,
                             f"Attributes: zero-shot accuracy (mean over seeds) vs the majority-class baseline; {legend}",
                             "attribute")]
    return "\n\n".join(p for p in parts if p)


def write_report(results: dict, out: Path) -> None:
    pngs = _plots(results, out)
    s = results["settings"]
    head = (f"model {s['model']}, {s['samples_seen']} samples seen, batch {s['batch_size']}, lr {s['lr']} "
            f"(warmup {s['warmup']} steps, cosine), weight decay {s['weight_decay']}, loss {s['loss']}, "
            f"{results['seeds']} seeds paired by seed; eval set {results['eval_set']}; primary metrics: "
            f"{', '.join(results['primary_metrics'])} (named before the runs)"
            + (f"; video clips as {s['video_frames']}-frame storyboards" if s.get("video_frames") else ""))
    rule = ("Verdict per metric: better / worse when the 95% t interval of the paired per-seed differences and "
            "the 95% bootstrap interval over eval examples both exclude zero on that side; otherwise no "
            "detectable difference; uninformative when neither data set is above chance on the metric (mean "
            "at or below it, or its 95% interval over seeds not above it).")
    sets = "\n".join(f"- **{n}**: {', '.join(v)}" for n, v in results["sets"].items())
    top = headline(results)
    md = (f"# Experiment\n\n" + (f"**{top}**\n\n" if top else "")
          + f"{head}\n\nData sets:\n{sets}\n\n{_selection_md(results)}\n\n{rule}\n\n"
          + "\n".join(f"- {v}" for v in _verdicts(results, with_headline=False))
          + f"\n\n{_table_md(results)}\n\n{_learned_md(results)}\n\n![loss](loss.png)\n\n![metrics](metrics.png)\n")
    if results.get("accuracy"):
        from curate.demo.truth import experiment_markdown

        md += "\n" + experiment_markdown(results["accuracy"]) + "\n"
    (out / "report.md").write_text(md)
    imgs = "".join(f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs)
    names = list(results["sets"])
    agg = results["aggregate"]
    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{_num(results['chance'].get(m))}</td>" + "".join(
        f"<td>{agg[n][m]['mean']:.3f} ± {agg[n][m]['std']:.3f}</td>" for n in names) + "</tr>" for m in results["metrics"])
    comp = "".join(
        f"<tr><td>{html.escape(c['a'])} − {html.escape(c['b'])}</td><td>{html.escape(c['metric'])}"
        f"{' (primary)' if c['primary'] else ''}</td><td>{_num(c['diff'], '+.3f')}</td>"
        f"<td>{_fmt_t(c)}</td><td>{_fmt_ci(c['bootstrap_ci'])}</td><td><b>{html.escape(c['verdict'])}</b></td></tr>"
        for c in results["comparisons"])
    cut = f"<p>{html.escape(CUT_NOTE)}</p>" if any(c.get("t_ci_clamped") for c in results["comparisons"]) else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>curate experiment</title>"
            f"<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;"
            f"border-bottom:1px solid #ddd}}</style></head><body><h1>Experiment</h1>"
            + (f"<p class='nothing-learned' style='border:2px solid #c00;padding:6px'><b>{html.escape(top)}</b></p>" if top else "")
            + f"<p>{html.escape(head)}</p>"
            f"<ul>{''.join(f'<li><b>{html.escape(n)}</b>: {html.escape(str(v))}</li>' for n, v in results['sets'].items())}</ul>"
            f"<p>{html.escape(_selection_md(results))}</p><p>{html.escape(rule)}</p>"
            f"<ul>{''.join(f'<li>{html.escape(v)}</li>' for v in _verdicts(results, with_headline=False))}</ul>"
            f"<table><tr><th>metric</th><th>chance</th>{''.join(f'<th>{html.escape(n)}</th>' for n in names)}</tr>{rows}</table>"
            f"<h2>Paired comparisons</h2><table><tr><th>comparison</th><th>metric</th><th>diff</th><th>95% t CI (seeds)</th>"
            f"<th>95% bootstrap CI (eval examples)</th><th>verdict</th></tr>{comp}</table>{cut}{imgs}</body></html>")
    (out / "report.html").write_text(page)
