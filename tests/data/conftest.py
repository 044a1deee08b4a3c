"""Fixtures for the data tests: a local HTTP server, a dead mirror URL, small MNIST files."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import download
from dlrun.data.download import MNIST_FILES, Checksum, DatasetSource
from dlrun.data.idx import write_idx


@pytest.fixture(autouse=True)
def _offline(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No test may reach a proxy or the user's cache: local URLs bypass any proxy, the cache
    is a temp folder (except for `data_dir` tests, which need the real $DLRUN_DATA_DIR), and
    retries do not sleep."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    if "data_dir" not in request.fixturenames:
        monkeypatch.setenv("DLRUN_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    monkeypatch.setattr(download, "TIMEOUT", 5.0)


@dataclass
class FileServer:
    """A tiny HTTP server on 127.0.0.1: `files` maps URL paths to bytes; others are 404.

    Paths in `cut_off` announce their full length but send only half and close.
    """

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_off: set[str] = field(default_factory=set)
    requests: list[tuple[str, int]] = field(default_factory=list)


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            body = server.files.get(self.path)
            if body is None:
                server.requests.append((self.path, 404))
                self.send_error(404, "Not Found")
                return
            server.requests.append((self.path, 200))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in server.cut_off:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    """A FileServer running in a daemon thread for the duration of one test."""
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.timeout = 5
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def sha256(data: bytes) -> Checksum:
    return Checksum("sha256", hashlib.sha256(data).hexdigest())


def make_mnist_files(folder: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict:
    """Write four small MNIST-format .gz files; returns {filename: array}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        MNIST_FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        MNIST_FILES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_url: str) -> tuple[Path, dict]:
    """A root folder holding small `mnist/` and `fashion-mnist/` files whose checksums are
    registered in place of the published ones (no reachable mirror)."""
    root = tmp_path / "root"
    arrays = {}
    for key, folder in (("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")):
        arrays = make_mnist_files(root / folder)
        files = {n: sha256((root / folder / n).read_bytes()) for n in MNIST_FILES}
        monkeypatch.setitem(download.SOURCES, key, DatasetSource(folder, (dead_url,), files))
    return root, arrays
