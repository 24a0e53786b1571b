"""Doc-tests: every shell command shown in README.md and docs/*.md runs, against the output of the README's
main job, so no documented command can silently break again (issue 16: `curate inspect --uid 3ffd...`,
`curate clusters out/` and `duckdb -c` all failed on the demo output).

What counts as a command: each line of a ```bash / ```sh / ```shell block (a trailing backslash joins the
next line), without its trailing comment. A command that cannot run here is preceded by one of
    # doc-test: skip (why)                       e.g. needs a GPU, a cluster, or runs for minutes
    # doc-test: covered by tests/FILE.py::NAME   an existing test runs the same thing at a size that fits
and the test checks that the reason is given, or that the named test exists. A command shown to fail
(troubleshooting) is preceded by `# doc-test: exit N`: it runs and must exit N with a one-line error.

How they run: MAIN_JOB (the README's `curate run`) runs once per session, in-process, on a 300-row demo
URL list served on loopback (tests/e2e/conftest.py main_run, shared with test_image_text.py). Each page then gets a fresh folder holding `urls.parquet` (that list), `out/`
(a copy of the main job's run directory, so commands may write into it) and links to examples/, bench/
and pipelines/; its commands run there in order, `curate ...` in-process (curate.cli.main), `python ...`
in a subprocess with this interpreter. Every command must exit 0.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import curate_inprocess
from tests.e2e.conftest import MAIN_JOB  # run once per session by the main_run fixture there

ROOT = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"#\s*doc-test:\s*(.*)$")
SKIP = re.compile(r"skip \((.+)\)$")
EXIT = re.compile(r"exit (\d+)$")
COVERED = re.compile(r"covered by (tests/[\w/]+\.py)::(\w+)(?: \(.+\))?$")
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_FENCES = {"bash", "sh", "shell"}


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, command, directive or None) for every command in the page's shell blocks."""
    found, directive, in_shell, pending, start = [], None, None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line.strip())
        if fence and (in_shell is None or not fence.group(1)):
            in_shell = None if in_shell is not None else fence.group(1) in SHELL_FENCES
            continue
        if not in_shell:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = (pending + line).strip(), ""
        marker = DIRECTIVE.match(text)
        if marker:
            directive = marker.group(1).strip()
            continue
        if not text or text.startswith("#"):
            continue
        words = shlex.split(text, comments=True)
        found.append((start, shlex.join(words), directive))
        directive = None
    return found


def check_directive(directive: str, where: str) -> None:
    """A skip must say why; a 'covered by' must name a test that exists."""
    skip, covered = SKIP.match(directive), COVERED.match(directive)
    assert skip or covered or EXIT.match(directive), f"{where}: unknown doc-test directive {directive!r}"
    if covered:
        test_file = ROOT / covered.group(1)
        assert test_file.is_file(), f"{where}: {covered.group(1)} does not exist"
        assert re.search(rf"^\s*def {covered.group(2)}\(", test_file.read_text(), re.M), \
            f"{where}: no {covered.group(2)} in {covered.group(1)}"


def run_command(command: str, workdir: Path, capsys) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[0] == "curate":
        return curate_inprocess(*words[1:], capsys=capsys, env=env)
    if words[0] == "python":
        return subprocess.run([sys.executable, *words[1:]], cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, timeout=300)
    raise AssertionError(f"the doc-test cannot run {words[0]!r}: mark the command "
                         "`# doc-test: skip (why)` or `# doc-test: covered by tests/...::test_name`")


@pytest.fixture
def page_workdir(main_run, tmp_path, monkeypatch):
    shutil.copy2(main_run / "urls.parquet", tmp_path / "urls.parquet")
    shutil.copytree(main_run / "out", tmp_path / "out")
    for name in ("examples", "bench", "pipelines"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_shows_the_main_job_and_directives_are_valid():
    assert MAIN_JOB in [c for _, c, _ in commands(ROOT / "README.md")]
    skips = 0
    for page in doc_pages():
        for line, _, directive in commands(page):
            if directive:
                check_directive(directive, f"{page.name}:{line}")
                skips += directive.startswith("skip")
    assert skips <= 12, f"{skips} commands skipped: the doc-tests should run almost every command"


def test_command_parser_joins_lines_and_keeps_directives(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\n# a comment\ncurate query out/ \"SELECT 1 # not a comment\"  # a comment\n"
                    "# doc-test: skip (needs a GPU)\ncurate train x \\\n  --samples-seen 1\n```\n"
                    "```python\nprint('not shell')\n```\n```yaml\nname: x\n```\n")
    assert commands(page) == [(3, "curate query out/ 'SELECT 1 # not a comment'", None),
                              (5, "curate train x --samples-seen 1", "skip (needs a GPU)")]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_every_command_on_the_page_runs(page, page_workdir, capsys):
    for line, command, directive in commands(page):
        expected = EXIT.match(directive or "")
        if (directive and not expected) or command == MAIN_JOB:  # the main job ran once, in main_run
            continue
        result = run_command(command, page_workdir, capsys)
        code = int(expected.group(1)) if expected else 0
        assert result.returncode == code, (f"{page.name}:{line}: `{command}` exited {result.returncode}, "
                                           f"not {code}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        if expected:  # a documented failure is one line on stderr, never a traceback
            assert len(result.stderr.strip().splitlines()) == 1, (f"{page.name}:{line}", result.stderr)
