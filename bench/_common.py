"""Helpers shared by the bench scripts: process-tree memory sampling, machine description, RESULTS.md."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"

# Nothing in a benchmark may leave the machine: Ray's usage stats and albumentations' version check
# (imported by img2dataset.resizer) both phone home unless told not to.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled",
             "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}


# Where the bench keeps Python bytecode (see bench_env).
PYCACHE = BENCH / "out" / "pycache"


def bench_env(bytecode_cache: bool = True, **extra: str) -> dict[str, str]:
    """The environment every measured subprocess gets.

    With bytecode_cache (the default), PYTHONDONTWRITEBYTECODE is dropped and bytecode goes to
    bench/out/pycache (PYTHONPYCACHEPREFIX, so the venv is not touched): with no .pyc anywhere every Ray
    helper process, Ray worker and img2dataset worker compiles ray/torch/img2dataset from source at import,
    which is not what a user's installed environment does and costs both tools tens of CPU seconds per run.
    """
    env = dict(os.environ)
    env.update(QUIET_ENV)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env


def process_label(p: psutil.Process) -> str:
    """A short name for a process of a benchmark's tree (Ray helpers by role, workers by title)."""
    try:
        cmd = p.cmdline()
        name = p.name()
    except psutil.Error:
        return "?"
    line = " ".join(cmd)
    exe = os.path.basename(cmd[0]) if cmd else name
    if exe in ("gcs_server", "raylet"):
        return f"ray {exe}"
    if line.startswith("ray::") or name.startswith("ray::"):
        title = (line or name).split()[0]
        if title in ("ray::DashboardAgent", "ray::RuntimeEnvAgent"):
            return f"ray {title[5:]}"
        if title == "ray::IDLE":
            return "ray worker (idle)"
        if title.endswith("Actor") or "Actor." in title:
            return f"ray actor {title[5:].split('.')[0]}"
        return "ray worker (task)"
    if "default_worker.py" in line:
        return "ray worker (idle)"
    for needle, label in (("dashboard/agent.py", "ray dashboard agent"), ("runtime_env/agent", "ray runtime_env agent"),
                          ("log_monitor.py", "ray log_monitor"), ("autoscaler/_private/monitor.py", "ray monitor"),
                          ("dashboard/dashboard.py", "ray dashboard"), ("multiprocessing.spawn", "mp spawn worker"),
                          ("multiprocessing.resource_tracker", "mp resource_tracker")):
        if needle in line:
            return label
    base = os.path.basename(cmd[0]) if cmd else name
    rest = " ".join(os.path.basename(c) if "/" in c else c for c in cmd[1:3])
    return f"{base} {rest}".strip()[:60]


class TreeSampler:
    """Samples the summed memory of a process and all its descendants every `interval` seconds.

    RSS of every process is summed every tick (the number asked for; it counts shared pages, e.g. Ray's
    plasma store and shared libraries, once per process that maps them). PSS and USS (from smaps_rollup,
    dearer) are summed every `full_every` ticks: PSS splits shared pages between the processes that map
    them, so summed PSS is the tree's real footprint. A descendant that is reparented (daemonised) stays
    tracked once seen.
    """

    def __init__(self, pid: int, interval: float = 0.2, full_every: int = 5):
        self.root = psutil.Process(pid)
        self.interval, self.full_every = interval, full_every
        self.known: dict[int, psutil.Process] = {pid: self.root}
        self.peak_rss = self.peak_pss = self.peak_uss = 0
        self.peak_procs = 0
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> user+sys seconds last seen
        self.label: dict[tuple[int, float], str] = {}  # (pid, create_time) -> what the process is
        self.peak_rss_of: dict[tuple[int, float], int] = {}
        self.samples = 0
        self.series: list[tuple[float, int]] = []  # (t, summed rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.time()

    def start(self) -> "TreeSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def breakdown(self) -> list[tuple[str, int, float, float]]:
        """(label, processes, CPU s, largest peak RSS MB of one process) per kind of process, most CPU first."""
        agg: dict[str, list] = {}
        for key, cpu in self.cpu.items():
            a = agg.setdefault(self.label.get(key, "?"), [0, 0.0, 0])
            a[0] += 1
            a[1] += cpu
            a[2] = max(a[2], self.peak_rss_of.get(key, 0))
        return sorted(((k, n, c, r / 2**20) for k, (n, c, r) in agg.items()), key=lambda x: -x[2])

    @property
    def cpu_s(self) -> float:
        """User+system CPU seconds of every process seen in the tree (up to one interval lost per process)."""
        return sum(self.cpu.values())

    def _procs(self) -> list[psutil.Process]:
        try:
            for c in self.root.children(recursive=True):
                self.known.setdefault(c.pid, c)
        except psutil.Error:
            pass
        alive = []
        for pid, p in list(self.known.items()):
            if p.is_running():
                alive.append(p)
            else:
                del self.known[pid]
        return alive

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            procs = self._procs()
            full = tick % self.full_every == 0
            rss = pss = uss = 0
            for p in procs:
                try:
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                    self.cpu[key] = t.user + t.system
                    if key not in self.label or self.label[key] == "ray worker (idle)":
                        self.label[key] = process_label(p)  # a Ray worker's title changes once it gets work
                    if full:
                        m = p.memory_full_info()
                        pss += getattr(m, "pss", 0)
                        uss += m.uss
                    else:
                        m = p.memory_info()
                    rss += m.rss
                    self.peak_rss_of[key] = max(self.peak_rss_of.get(key, 0), m.rss)
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            if full:
                self.peak_pss, self.peak_uss = max(self.peak_pss, pss), max(self.peak_uss, uss)
            self.peak_procs = max(self.peak_procs, len(procs))
            self.series.append((round(time.time() - self.t0, 2), rss))
            self.samples += 1
            tick += 1
            self._stop.wait(self.interval)


class CpuMeter:
    """System-wide busy CPU seconds and load average over an interval, to report what else was running."""

    def __enter__(self) -> "CpuMeter":
        self.t0 = time.time()
        self.c0 = psutil.cpu_times()
        self.load0 = os.getloadavg()
        return self

    def __exit__(self, *exc) -> None:
        c1 = psutil.cpu_times()
        self.wall = time.time() - self.t0
        busy = lambda c: c.user + c.nice + c.system + getattr(c, "irq", 0) + getattr(c, "softirq", 0) + getattr(c, "steal", 0)
        self.busy_s = busy(c1) - busy(self.c0)
        self.load1 = os.getloadavg()


def _versions(packages: list[str]) -> str:
    out = []
    for name in packages:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def machine_info(packages: list[str]) -> dict[str, str]:
    model = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count()),
        "cpu": model,
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "packages": _versions(packages),
    }


HEADER = """# Benchmark results

Numbers measured by the scripts in `bench/` (see bench/README.md). Each section below was written by
its script and records the machine it ran on, the command and the load it ran under; re-run the
command to refresh a section.
"""


def update_results(section: str, body: str, packages: list[str], info: dict | None = None) -> Path:
    """Replace (or append) the `## {section}` section, with the machine it ran on at its top.

    The machine goes into the section, not a shared header, so sections written by different runs
    (and branches) each say where their numbers came from and never conflict with each other.
    `info` is that machine when it is not this one (bench/gpu.py records a lent GPU machine's run here).
    """
    info = info or machine_info(packages)
    machine = "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items())
    text = RESULTS.read_text() if RESULTS.exists() else ""
    sections: list[tuple[str, str]] = []
    for m in re.finditer(r"^## (\S+)[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        sections.append((m.group(1), m.group(0)))
    new = f"## {section}\n\n{machine}\n\n{body.strip()}\n\n"
    if any(name == section for name, _ in sections):
        sections = [(n, new if n == section else s) for n, s in sections]
    else:  # a new "NAME-notes" section goes right after NAME's section
        after = [i for i, (n, _) in enumerate(sections) if section.startswith(n + "-")]
        sections.insert(after[-1] + 1 if after else len(sections), (section, new))
    # one blank line between sections, however a hand-edited one ended
    RESULTS.write_text(HEADER + "\n" + "".join(s.rstrip() + "\n\n" for _, s in sections).rstrip() + "\n")
    return RESULTS
