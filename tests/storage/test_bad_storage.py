"""Bad storage paths (issue 14 item 7): one line naming the path and the fix, exit 2, before Ray starts and
before anything is written: unknown scheme, missing bucket, unusable credentials, a non-empty remote
output that holds no run, an endpoint where nothing listens (a closed loopback port)."""
from __future__ import annotations

import socket

import fsspec
import pytest

from tests.conftest import curate_inprocess


@pytest.fixture
def urls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a red circle"]}), p)
    return p


def _objects(bucket: str) -> list[str]:
    return fsspec.filesystem("s3", skip_instance_cache=True).find(bucket)


def _fails(capsys, *args, env=None, expect=()):
    r = curate_inprocess("run", "download_only", *map(str, args), capsys=capsys, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for word in expect:
        assert word in lines[0], lines[0]
    return lines[0]


def test_unknown_scheme(capsys, tmp_path, monkeypatch, urls):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, "-i", urls, "-o", "foo://bucket/out", expect=("foo://bucket/out", "unknown URL scheme"))
    _fails(capsys, "-i", "foo://bucket/urls.parquet", "-o", tmp_path / "out", expect=("foo://bucket/urls.parquet",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.parquet"]  # no `foo:` folder, no out/


def test_read_only_scheme_as_output(capsys, tmp_path, urls):
    _fails(capsys, "-i", urls, "-o", "http://127.0.0.1:9/out", expect=("http://127.0.0.1:9/out", "read-only"))


def test_missing_bucket(capsys, tmp_path, monkeypatch, urls, s3_env):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, "-i", urls, "-o", "s3://no-such-bucket-x/out", expect=("s3://no-such-bucket-x/out", "does not exist"))
    _fails(capsys, "-i", "s3://no-such-bucket-x/urls.parquet", "-o", "out", expect=("no-such-bucket-x", "does not exist"))
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "out").exists()
    assert not fsspec.filesystem("s3", skip_instance_cache=True).exists("no-such-bucket-x")


def test_unusable_credentials(capsys, tmp_path, urls, bucket):
    # a profile that does not exist, and no credentials at all (no keys, no files, no instance metadata)
    _fails(capsys, "-i", urls, "-o", f"s3://{bucket}/out", env={"AWS_PROFILE": "no-such-profile"},
           expect=(f"s3://{bucket}/out", "no-such-profile", "AWS_ACCESS_KEY_ID"))
    none = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    _fails(capsys, "-i", urls, "-o", f"s3://{bucket}/out", env=none, expect=(f"s3://{bucket}/out", "credentials"))
    assert _objects(bucket) == []


def test_non_empty_remote_output_without_a_run(capsys, urls, bucket):
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(f"{bucket}/out/notes.txt", b"someone else's data")
    _fails(capsys, "-i", urls, "-o", f"s3://{bucket}/out", expect=(f"s3://{bucket}/out", "not empty", "--output"))
    assert _objects(bucket) == [f"{bucket}/out/notes.txt"]


def test_unreachable_endpoint(capsys, urls, bucket):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fails(capsys, "-i", urls, "-o", f"s3://{bucket}/out", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
           expect=(f"s3://{bucket}/out", f"127.0.0.1:{port}", "AWS_ENDPOINT_URL"))
    assert _objects(bucket) == []


@pytest.mark.parametrize("name", ["00000.tar", "{00000..00001}.tar", "urls.parquet"])
def test_http_input_the_server_refuses(capsys, tmp_path, bucket, s3_env, name):
    # a bucket's object by its plain http URL, without credentials: moto (like S3) answers 403. A tar was
    # exit 1 with aiohttp's bare ClientResponseError (a brace range: while indexing, past the preflight);
    # a table was "input not found" (fsspec's exists is False for a 403)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(f"{bucket}/wds/00000.tar", b"\0" * 1024)
    fs.pipe_file(f"{bucket}/wds/urls.parquet", b"PAR1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ninput: {format: webdataset}\nstages: [load_image: {}]\n")
    url = f"{s3_env['AWS_ENDPOINT_URL']}/{bucket}/wds/{name}"
    r = curate_inprocess("run", "download_only" if name.endswith(".parquet") else recipe, "-i", url,
                         "-o", tmp_path / "out", capsys=capsys)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert url in lines[0] and "403" in lines[0] and "presigned" in lines[0] and "s3://" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
