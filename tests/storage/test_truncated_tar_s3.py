"""A tar cut short on an object store (an interrupted upload) is noticed as a local one is: storage.open_tar
(export, refilter, an experiment's subsets) refuses it, and WebDataset input fails its cut sample and the
unknown rest as input_truncated_tar. Against a real S3 server (moto_server on loopback)."""
from __future__ import annotations

import fsspec
import pytest

from curate.io import storage, tars, wds_input
from tests.io.test_truncated_tars import DATA, LAST_TXT


def test_a_cut_tar_on_s3_is_refused_and_indexed_as_truncated(bucket):
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe(f"{bucket}/whole.tar", DATA)
    fs.pipe(f"{bucket}/cut.tar", DATA[:LAST_TXT.offset])  # cut at a member boundary
    with storage.open_tar(f"s3://{bucket}/whole.tar") as tar:
        assert len([m for m in tar if tar.extractfile(m).read()]) == 6
    with pytest.raises(tars.TruncatedTar, match=rf"^truncated tar s3://{bucket}/cut.tar: after 5 member\(s\)"):
        with storage.open_tar(f"s3://{bucket}/cut.tar") as tar:
            for m in tar:
                tar.extractfile(m).read()
    rows = wds_input.index_tar(f"s3://{bucket}/cut.tar")
    assert [r["_reason"] for r in rows] == [None, None, "input_truncated_tar", "input_truncated_tar"]
