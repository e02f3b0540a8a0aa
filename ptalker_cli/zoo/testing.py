"""A small stand-in for the Hugging Face hub on 127.0.0.1, for tests and offline demos.

It answers the file-resolve requests ``huggingface_hub`` makes
(``HEAD``/``GET /{org}/{repo}/resolve/{revision}/{filename}``) with the headers it
relies on: ``X-Repo-Commit``, ``ETag`` (git blob sha1 of a small file; sha256 of an
LFS file, also in ``X-Linked-Etag`` with ``X-Linked-Size``), ``Content-Length``,
``Accept-Ranges`` and ``206`` partial content for ``Range`` requests, and the hub's
``X-Error-Code`` on 404s (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

Faults can be injected per file: serve corrupted bytes for the next ``n`` downloads,
or close the connection after a given byte offset (``n`` times, or always).

    with FakeHub() as hub:
        commit = hub.add_repo("org/model", {"config.json": b"{}", "model.safetensors": data})
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".h5", ".onnx", ".msgpack")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)


@dataclass
class _Fault:
    corrupt: int = 0  # next n GETs get corrupted bytes (-1: always)
    cut_at: int | None = None  # close the connection after this absolute byte offset
    cut_times: int = 0  # how many GETs are cut (-1: always)


class FakeHub:
    """A threaded HTTP server imitating the hub's ``resolve`` endpoint (see the module docstring)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.faults: dict[tuple[str, str], _Fault] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ content
    def add_repo(self, repo_id: str, files: dict[str, bytes], *, commit: str | None = None, branch: str = "main",
                 lfs: set[str] | None = None) -> str:
        """Add a commit with ``files`` (moving ``branch`` to it); returns the commit id."""
        repo = self.repos.setdefault(repo_id, _Repo())
        if commit is None:
            h = hashlib.sha1(repo_id.encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
            h.update(str(len(repo.commits)).encode())
            commit = h.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        repo.lfs |= set(lfs) if lfs is not None else {n for n in files if n.endswith(LFS_SUFFIXES)}
        return commit

    def corrupt(self, repo_id: str, filename: str, times: int = 1) -> None:
        """Serve flipped bytes for the next ``times`` downloads of the file (-1: always)."""
        self.faults.setdefault((repo_id, filename), _Fault()).corrupt = times

    def cut(self, repo_id: str, filename: str, at: int, times: int = 1) -> None:
        """Close the connection after byte ``at`` of the file, for ``times`` downloads (-1: always)."""
        fault = self.faults.setdefault((repo_id, filename), _Fault())
        fault.cut_at, fault.cut_times = at, times

    def downloads(self, filename: str) -> int:
        """How many GET requests asked for ``filename``."""
        return sum(1 for m, p, _ in self.requests if m == "GET" and unquote(p).endswith("/" + filename))

    # ------------------------------------------------------------------ server
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        hub = self.fake
        path = urlsplit(self.path).path
        with hub._lock:
            hub.requests.append((self.command, path, self.headers.get("Range")))
        parts = path.split("/")
        if len(parts) < 6 or parts[3] != "resolve":
            return self._error(404, "EntryNotFound", "not a resolve request")
        repo_id = f"{unquote(parts[1])}/{unquote(parts[2])}"
        revision = unquote(parts[4])
        filename = "/".join(unquote(p) for p in parts[5:])
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = repo.refs.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        files = repo.commits[commit]
        if filename not in files:
            return self._error(404, "EntryNotFound", "Entry not found", commit)
        data = files[filename]
        lfs = filename in repo.lfs
        etag = sha256(data) if lfs else git_sha1(data)
        fault = hub.faults.get((repo_id, filename))
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            start = int(rng[len("bytes="):].split("-")[0] or 0)
        body = data
        cut = None
        if not head and fault is not None:
            with hub._lock:
                if fault.corrupt:
                    body = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
                    fault.corrupt -= fault.corrupt > 0
                if fault.cut_at is not None and fault.cut_times:
                    cut = fault.cut_at
                    fault.cut_times -= fault.cut_times > 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{etag}"')
        if lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if head:
            return
        if cut is not None:
            if cut > start:
                self.wfile.write(body[start:cut])
                self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body[start:])
