"""The video demo corpus (a few 64x64, 4 s, 10 fps videos with planted faults) served on loopback."""
from __future__ import annotations

import pytest

from curate.demo.server import DemoServer
from curate.demo.video import generate


@pytest.fixture(scope="session")
def video_corpus(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("video-corpus"), videos=4, seed=3)


@pytest.fixture(scope="module")
def video_server(video_corpus):
    with DemoServer(video_corpus) as server:
        yield server
