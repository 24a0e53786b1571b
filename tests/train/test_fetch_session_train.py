"""`curate experiment` (and the training and evaluation in it) is one fetch session: a remote shard whose
http server sends no validator is downloaded once for the whole experiment, and every data set, seed,
pass and fingerprint reads those bytes. Before, http(s) shards were refused ("shard not found") though
the docs list them; streamed, each pass and each fingerprint would have downloaded the shard again, and
the arms could have trained on different bytes than their fingerprints vouch for.

The server (tests/storage/flapping_http.py) answers each GET with other bytes of the same size."""
from __future__ import annotations

import hashlib
import json
import os

from curate.io import storage
from tests.conftest import curate_inprocess
from tests.storage.flapping_http import serve, served
from tests.train.conftest import write_colour_shards


def test_an_experiment_downloads_a_versionless_http_shard_once_and_every_arm_reads_it(
        tmp_path, monkeypatch, colour_eval, capsys):
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(storage.FETCH_SESSION_ENV, raising=False)
    tar = write_colour_shards(tmp_path / "train", 16, 1)[0]
    with serve() as (handler, base):
        handler.files["/000000.tar"] = tar.read_bytes()
        url = f"{base}/000000.tar"
        # two data sets over the same URL and a random-subset control drawn from it; 40 samples seen on 16:
        # each training reads the shard three times
        r = curate_inprocess("experiment", f"a={url}", f"b={url}", "--random-subset", "ctrl=a:a",
                             "--eval-set", str(colour_eval), "--seeds", "1", "--samples-seen", "40",
                             "--batch-size", "8", "--warmup", "1", "--workers", "1", "-o", str(tmp_path / "exp"),
                             capsys=capsys)
        assert r.returncode == 0, r.stderr[-3000:]
        assert handler.gets == {"/000000.tar": 1}
    data = served(tar.read_bytes(), 1)
    want = hashlib.sha256(f"{len(data)}:{hashlib.sha256(data).hexdigest()}\n".encode()).hexdigest()
    prints = {arm: json.loads((tmp_path / "exp" / "runs" / arm / "seed0" / "fingerprints.json").read_text())
              for arm in ("a", "b")}
    assert {arm: fp["shards"]["sha256"] for arm, fp in prints.items()} == {"a": want, "b": want}
    assert storage.FETCH_SESSION_ENV not in os.environ  # the session ended with the command
