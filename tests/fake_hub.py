"""A tiny in-process fake of the Hugging Face Hub HTTP API, for offline publish tests.

It is a real HTTP server on 127.0.0.1 (stdlib ``http.server`` in a daemon thread) implementing only what
``HfApi.create_repo`` / ``HfApi.upload_folder`` of huggingface_hub 2.4 call:

* ``POST /api/repos/create``                                  create a repo (409 + url if it exists)
* ``GET  /api/{type}s/{org}/{name}[/revision/{rev}]``          repo_info (403-on-create fallback, no-op pushes)
* ``POST /api/validate-yaml``                                 README.md front-matter check
* ``POST /api/{type}s/{org}/{name}/preupload/{rev}``          answers every file "regular" (no LFS/Xet)
* ``POST /api/{type}s/{org}/{name}/commit/{rev}``             ndjson commit with base64 file contents

Anything else is answered 404 and recorded in ``FakeHub.unhandled`` so a test sees what the client wanted.
Every request is recorded (method, path, query, headers, JSON / ndjson body) in ``FakeHub.requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/api/repos/create"), "_create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "_validate_yaml"),
    ("POST", re.compile(rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)"), "_preupload"),
    ("POST", re.compile(rf"/api/{_REPO}/commit/(?P<rev>[^/]+)"), "_commit"),
    ("GET", re.compile(rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "_repo_info"),
]


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str  # as sent (still URL-quoted), without query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    json: Any = None  # parsed body for application/json requests
    ndjson: list[Any] | None = None  # parsed lines for application/x-ndjson requests


@dataclass
class FakeRepo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)  # {"oid", "revision", "header", "paths"}
    head: dict[str, str] = field(default_factory=dict)  # branch -> latest commit oid

    def files(self, revision: str = "main") -> dict[str, bytes]:
        return self.branches[revision]


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    remaining: int  # how many matching requests still fail


class FakeHub:
    """Use as a context manager; ``endpoint`` is the base URL to hand to ``HfApi(endpoint=...)``."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # keep-alive handler threads must not block shutdown
        self._server = server
        # Short poll interval: shutdown() waits up to one interval, and every test stops a server.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "FakeHub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ test helpers

    def fail(self, method: str, path_regex: str, status: int, message: str = "", times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path_regex`` with ``status``."""
        with self._lock:
            self._failures.append(_Failure(method, re.compile(path_regex), status, message, times))

    def repo(self, repo_id: str, repo_type: str = "dataset") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def paths_called(self) -> list[str]:
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    # ------------------------------------------------------------------ dispatch (handler threads)

    def _handle(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(req)
            for failure in self._failures:
                if (
                    failure.remaining > 0
                    and failure.method == req.method
                    and failure.path.fullmatch(req.path)
                ):
                    failure.remaining -= 1
                    return failure.status, {"X-Error-Message": failure.message}, {"error": failure.message}
            for method, pattern, handler_name in _ROUTES:
                match = pattern.fullmatch(req.path)
                if method == req.method and match:
                    return getattr(self, handler_name)(req, **match.groupdict())
            self.unhandled.append(req)
        return 404, {}, {"error": f"fake hub: unhandled {req.method} {req.path}"}

    def _auth_error(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any] | None:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer hf_"):
            msg = "Invalid credentials in Authorization header"
            return 401, {"X-Error-Message": msg}, {"error": msg}
        return None

    def _repo_or_404(self, repo_type: str, repo_id: str) -> FakeRepo | tuple[int, dict[str, str], Any]:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            msg = "Repository not found"
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": msg}, {"error": msg}
        return repo

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def _create_repo(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if err := self._auth_error(req):
            return err
        body = req.json or {}
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self.repos:
            return 409, {}, {"error": f"You already created this {repo_type} repo", "url": url}
        private = body.get("visibility") == "private"
        self.repos[(repo_type, repo_id)] = FakeRepo(repo_type=repo_type, repo_id=repo_id, private=private)
        return 200, {}, {"url": url, "name": repo_id}

    def _validate_yaml(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        content = (req.json or {}).get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
        if match is None:
            return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return 400, {}, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}
        if not isinstance(meta, dict):
            return 400, {}, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def _revision_or_404(
        self, repo: FakeRepo, rev: str
    ) -> dict[str, bytes] | tuple[int, dict[str, str], Any]:
        files = repo.branches.get(unquote(rev))
        if files is None:
            msg = f"Invalid rev id: {unquote(rev)}"
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": msg}, {"error": msg}
        return files

    def _preupload(
        self, req: RecordedRequest, type: str, repo: str, rev: str
    ) -> tuple[int, dict[str, str], Any]:
        if err := self._auth_error(req):
            return err
        found = self._repo_or_404(type, repo)
        if not isinstance(found, FakeRepo):
            return found
        files = self._revision_or_404(found, rev)
        if not isinstance(files, dict):
            return files
        # Every file is "regular": its bytes then travel base64 in the commit payload, no LFS/Xet transfer.
        answer = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None,
            }
            for f in (req.json or {}).get("files", [])
        ]
        return 200, {}, {"files": answer, "commitOid": found.head.get(unquote(rev))}

    def _commit(
        self, req: RecordedRequest, type: str, repo: str, rev: str
    ) -> tuple[int, dict[str, str], Any]:
        if err := self._auth_error(req):
            return err
        found = self._repo_or_404(type, repo)
        if not isinstance(found, FakeRepo):
            return found
        files = self._revision_or_404(found, rev)
        if not isinstance(files, dict):
            return files
        if req.query.get("create_pr"):
            return 400, {}, {"error": "fake hub: create_pr commits are not supported"}
        header: dict[str, Any] = {}
        staged = dict(files)
        touched: list[str] = []
        for line in req.ndjson or []:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                staged[value["path"]] = base64.b64decode(value["content"])
                touched.append(value["path"])
            elif key == "deletedFile":
                staged.pop(value["path"], None)
                touched.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in staged if p.startswith(prefix)]:
                    staged.pop(path)
                touched.append(value["path"])
            else:  # lfsFile etc.: this fake never hands out LFS/Xet upload modes
                return 400, {}, {"error": f"fake hub: unsupported commit operation {key!r}"}
        branch = unquote(rev)
        parent = found.head.get(branch, "")
        oid = hashlib.sha1(f"{parent}:{len(found.commits)}:{sorted(touched)}".encode()).hexdigest()
        found.branches[branch] = staged
        found.head[branch] = oid
        found.commits.append({"oid": oid, "revision": branch, "header": header, "paths": touched})
        url = f"{self._repo_url(type, repo)}/commit/{oid}"
        return 200, {}, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None}

    def _repo_info(
        self, req: RecordedRequest, type: str, repo: str, rev: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        found = self._repo_or_404(type, repo)
        if not isinstance(found, FakeRepo):
            return found
        branch = unquote(rev) if rev else "main"
        files = self._revision_or_404(found, branch)
        if not isinstance(files, dict):
            return files
        return (
            200,
            {},
            {
                "id": found.repo_id,
                "sha": found.head.get(branch),
                "private": found.private,
                "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(files.items())],
            },
        )


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every response sets Content-Length
    timeout = 30  # idle keep-alive connections do not pin handler threads forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # silence per-request stderr logging; requests are recorded instead

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        req = RecordedRequest(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        if body and "ndjson" in content_type:
            req.ndjson = [json.loads(line) for line in body.splitlines() if line.strip()]
        elif body and "json" in content_type:
            req.json = json.loads(body)
        status, headers, payload = self.fake_hub._handle(req)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve
