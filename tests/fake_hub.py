"""A Hugging Face hub on loopback serving models saved to local folders, for tests that must not download.

Why: the hub-id paths of the model preflight (curate/models/hub.py) need a cache in huggingface_hub's own
layout and a hub that answers; huggingface_hub's own downloads (`huggingface-cli download`,
`hf_hub_download`) against this server write the cache exactly as from huggingface.co, so no test
hand-builds refs/ and snapshots/. It serves what huggingface_hub asks for: the model-info API
(`/api/models/ID[/revision/REV]`) and files (`/ID/resolve/REV/FILE`, HEAD and GET, with the commit and
ETag headers), and answers an unknown repo, revision or file the way the hub does (404 + X-Error-Code).
Point HF_ENDPOINT (or huggingface_hub.constants.ENDPOINT) at `url`. `requests` lists the paths asked.
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """`FakeHub({"org/name": folder})`: each repo at one commit (its files' digest), revision `main`."""

    def __init__(self, repos: dict[str, str | Path], gated: tuple[str, ...] = ()):
        """`gated`: repos whose info is public and whose files and auth-check refuse (no token here)."""
        self.repos = {rid: Path(folder) for rid, folder in repos.items()}
        self.gated = set(gated)
        self.sha = {rid: hashlib.sha1(b"".join(p.read_bytes() for p in sorted(f.rglob("*")) if p.is_file())).hexdigest()
                    for rid, f in self.repos.items()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _revision_ok(self, rid: str, rev: str) -> bool:
        return rev in ("main", self.sha[rid])

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append(f"{h.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            rid, rev = "/".join(parts[2:4]), parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            if rid not in self.repos:
                return self._send(h, 404, b"", {"X-Error-Code": "RepoNotFound"}, body)
            if parts[4:] == ["auth-check"]:
                return self._send(h, 403 if rid in self.gated else 200, b"",
                                  {"X-Error-Code": "GatedRepo"} if rid in self.gated else {}, body)
            if not self._revision_ok(rid, rev):
                return self._send(h, 404, b"", {"X-Error-Code": "RevisionNotFound"}, body)
            files = sorted(str(p.relative_to(self.repos[rid])) for p in self.repos[rid].rglob("*") if p.is_file())
            info = {"id": rid, "modelId": rid, "sha": self.sha[rid], "private": False,
                    "gated": rid in self.gated and "manual",
                    "siblings": [{"rfilename": f} for f in files]}
            return self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            rid, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if rid not in self.repos:
                return self._send(h, 404, b"", {"X-Error-Code": "RepoNotFound"}, body)
            if not self._revision_ok(rid, rev):
                return self._send(h, 404, b"", {"X-Error-Code": "RevisionNotFound"}, body)
            file = self.repos[rid] / name
            if rid in self.gated:
                return self._send(h, 403, b"", {"X-Error-Code": "GatedRepo"}, body)
            if not file.is_file():
                return self._send(h, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self.sha[rid]}, body)
            data = file.read_bytes()
            return self._send(h, 200, data, {"X-Repo-Commit": self.sha[rid],
                                             "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, body)
        return self._send(h, 404, b"", {}, body)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict, body: bool) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
