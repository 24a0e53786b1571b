"""`curate demo -o DIR` replaces only a demo run (marked by .curate-demo) or an empty folder.

Before, any folder holding a manifest.json was deleted whole: a real run, or a project folder with a
manifest.json of its own, pointed at by mistake."""
from __future__ import annotations

import json

import pytest

from curate.demo.run import mark_demo_run, prepare_run_dir


def _project(root):
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("code\n")
    (root / "manifest.json").write_text(json.dumps({}))
    return root


def test_a_folder_with_a_manifest_but_no_demo_marker_is_refused_and_kept(tmp_path):
    out = _project(tmp_path / "v")
    with pytest.raises(FileExistsError, match="choose another --output"):
        prepare_run_dir(out)
    assert (out / "src" / "app.py").read_text() == "code\n"


def test_a_marked_demo_run_and_an_empty_folder_are_replaced(tmp_path):
    marked = tmp_path / "demo"
    (marked / "shards").mkdir(parents=True)
    mark_demo_run(marked)
    prepare_run_dir(marked)
    assert not marked.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_run_dir(empty)
    assert not empty.exists()
    prepare_run_dir(tmp_path / "absent")  # nothing there: nothing to do


def test_cli_demo_refuses_a_folder_it_did_not_write(tmp_path, cli_inprocess):
    out = _project(tmp_path / "v")
    res = cli_inprocess("demo", "--samples", "200", "--output", str(out), "--no-clip-filter")
    assert res.returncode == 2 and "choose another --output" in res.stderr and "Traceback" not in res.stderr
    assert (out / "src" / "app.py").exists()


def test_a_symlink_is_refused_not_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    mark_demo_run(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="symbolic link"):
        prepare_run_dir(link)
    assert (real / ".curate-demo").exists()
