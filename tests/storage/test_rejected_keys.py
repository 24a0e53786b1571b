"""Keys an S3 server really rejects (issue 14 item 7): a moto_server of its own with IAM authentication on
(INITIAL_NO_AUTH_ACTION_COUNT=3: the first three requests create a user, its policy and its key; every
later request is signature-checked and authorised). An unknown key and a wrong secret each give one line
naming the path and the fix, exit 2, before Ray starts and before anything is written; the real key passes
the same check (the server does not reject everyone)."""
from __future__ import annotations

import json

import pytest

from curate.io import storage
from tests.conftest import curate_inprocess
from tests.storage.moto import start_moto_server, stop

BUCKET = "locked"


@pytest.fixture(scope="module")
def locked():
    """(environment with the real key, environment with an unknown key, environment with a wrong secret)."""
    import boto3

    proc, env = start_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}, timeout=60)
    try:
        kw = dict(endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
        iam.create_user(UserName="curate")
        iam.put_user_policy(UserName="curate", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="curate")["AccessKey"]
        good = {**env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        s3 = boto3.client("s3", aws_access_key_id=good["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=good["AWS_SECRET_ACCESS_KEY"], **kw)
        s3.create_bucket(Bucket=BUCKET)  # authenticated: the real key is allowed
        yield good, {**good, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"}, {**good, "AWS_SECRET_ACCESS_KEY": "wrong"}, s3
    finally:
        stop(proc)


@pytest.mark.parametrize("which", ["unknown key", "wrong secret"])
def test_rejected_keys_fail_in_one_line_before_anything_is_written(locked, which, tmp_path, monkeypatch, capsys):
    good, unknown, wrong, s3 = locked
    bad = unknown if which == "unknown key" else wrong
    monkeypatch.chdir(tmp_path)
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a red circle\n")
    out = f"s3://{BUCKET}/out"
    r = curate_inprocess("run", "download_only", "-i", urls, "-o", out, capsys=capsys, env=bad)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert out in lines[0] and "access denied" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], lines[0]
    # the same for reading a run and for a training output
    for args in (["query", out, "select 1"], ["validate", out],
                 ["train", str(tmp_path), "--samples-seen", "8", "-o", f"s3://{BUCKET}/train"]):
        r = curate_inprocess(*args, capsys=capsys, env=bad)
        assert r.returncode == 2 and "access denied" in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
            args, r.stderr)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.csv"]  # nor anything local (no `s3:` folder)


def test_the_real_key_passes(locked, monkeypatch):
    good = locked[0]
    for k, v in good.items():
        monkeypatch.setenv(k, v)
    storage.preflight(f"s3://{BUCKET}/out", write=True)  # no StorageError: the server accepts this key
