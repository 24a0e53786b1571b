"""Fixtures for MLLM scoring: the tiny randomly initialised VLM (built once) and the loopback chat server."""
from __future__ import annotations

import io

import pytest

from .chat_server import ChatServer


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A folder holding a tiny LLaVA + processor, loaded by path exactly as a hub id would be."""
    from curate.scorers.tiny_vlm import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm")))


@pytest.fixture(scope="module")
def chat_server_module():
    with ChatServer() as server:
        yield server


@pytest.fixture
def chat_server(chat_server_module):
    chat_server_module.reset()
    yield chat_server_module
    chat_server_module.reset()


def jpeg(color, size=(48, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()
