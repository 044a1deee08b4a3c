"""Downloads against a local HTTP server: good file, dead mirror, corrupt and cut-off files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from dlrun.data import download
from dlrun.data.download import Checksum, DatasetSource, cache_dir, fetch, verify_file
from dlrun.errors import DataError

from .conftest import FileServer, sha256

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered 'toy' dataset whose one file is PAYLOAD (mirrors come from each test)."""
    monkeypatch.setitem(
        download.SOURCES, "toy", DatasetSource("toy", (), {"blob.bin": sha256(PAYLOAD)})
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_from_env_or_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DLRUN_DATA_DIR", str(tmp_path / "d"))
    assert cache_dir() == tmp_path / "d"
    monkeypatch.delenv("DLRUN_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "dlrun"


def test_download_success_verifies_and_stamps(
    toy: None, http_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.files["/good/blob.bin"] = PAYLOAD
    calls: list[tuple[int, int | None]] = []
    path = fetch(
        "toy",
        "blob.bin",
        tmp_path,
        mirrors=[http_server.base_url + "/good"],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert path == tmp_path / "toy" / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert leftovers(path.parent) == ["blob.bin", "blob.bin.verified"]

    # second call: found in place, verified by the stamp -> no request, no hashing
    def no_hashing(*args: object, **kwargs: object) -> str:
        raise AssertionError("file re-hashed despite a valid stamp")

    monkeypatch.setattr(download, "file_digest", no_hashing)
    assert fetch("toy", "blob.bin", tmp_path, mirrors=[http_server.base_url + "/good"]) == path
    assert http_server.requests == [("/good/blob.bin", 200)]


def test_default_root_is_the_cache(toy: None, http_server: FileServer) -> None:
    http_server.files["/blob.bin"] = PAYLOAD
    path = fetch("toy", "blob.bin", mirrors=[http_server.base_url])
    assert path == cache_dir() / "toy" / "blob.bin"


def test_dead_first_mirror_falls_through_to_the_second(
    toy: None, http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["/b/blob.bin"] = PAYLOAD
    mirrors = [http_server.base_url + "/a/", http_server.base_url + "/b/"]
    path = fetch("toy", "blob.bin", tmp_path, mirrors=mirrors)
    assert path.read_bytes() == PAYLOAD
    # a 404 is not retried: one request to the dead mirror, then the good one
    assert http_server.requests == [("/a/blob.bin", 404), ("/b/blob.bin", 200)]


def test_unreachable_mirror_then_good(
    toy: None, http_server: FileServer, dead_url: str, tmp_path: Path
) -> None:
    http_server.files["/blob.bin"] = PAYLOAD
    path = fetch("toy", "blob.bin", tmp_path, mirrors=[dead_url, http_server.base_url], retries=2)
    assert path.read_bytes() == PAYLOAD


def test_corrupt_download_is_rejected_and_removed(
    toy: None, http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["/blob.bin"] = PAYLOAD[:-1] + b"X"
    with pytest.raises(
        DataError,
        match=r"blob\.bin: file not found and could not be "
        r"downloaded: .*SHA256 mismatch",
    ):
        fetch("toy", "blob.bin", tmp_path, mirrors=[http_server.base_url])
    assert leftovers(tmp_path / "toy") == []  # no target, no .part, no stamp


def test_cut_off_download_is_retried_then_rejected(
    toy: None, http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["/blob.bin"] = PAYLOAD
    http_server.cut_off.add("/blob.bin")
    with pytest.raises(DataError, match=r"blob\.bin: .*after 2 attempts"):
        fetch("toy", "blob.bin", tmp_path, mirrors=[http_server.base_url], retries=2)
    assert http_server.requests == [("/blob.bin", 200)] * 2
    assert leftovers(tmp_path / "toy") == []


def test_no_reachable_mirror_names_the_file(toy: None, dead_url: str, tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"toy/blob\.bin: file not found and could not be "
        r"downloaded: http://127\.0\.0\.1:\d+/blob\.bin",
    ):
        fetch("toy", "blob.bin", tmp_path, mirrors=[dead_url], retries=2)
    assert leftovers(tmp_path / "toy") == []


def test_no_download_when_disabled(toy: None, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"blob\.bin: file not found \(downloads are disabled"):
        fetch("toy", "blob.bin", tmp_path, download=False)


def test_progress_callback_errors_propagate_and_clean_up(
    toy: None, http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["/blob.bin"] = PAYLOAD

    def cancel(done: int, total: int | None) -> None:
        if done > 100_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch("toy", "blob.bin", tmp_path, mirrors=[http_server.base_url], progress=cancel)
    assert leftovers(tmp_path / "toy") == []


def test_existing_corrupt_file_is_reported_not_replaced(toy: None, tmp_path: Path) -> None:
    path = tmp_path / "toy" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(b"not it")
    with pytest.raises(DataError, match=r"blob\.bin: SHA256 mismatch .*delete it"):
        fetch("toy", "blob.bin", tmp_path)
    assert path.read_bytes() == b"not it"


def test_root_may_be_the_dataset_folder_itself(toy: None, tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(PAYLOAD)
    assert fetch("toy", "blob.bin", tmp_path) == tmp_path / "blob.bin"


def test_stamp_is_invalidated_when_the_file_changes(toy: None, tmp_path: Path) -> None:
    path = tmp_path / "toy" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    fetch("toy", "blob.bin", tmp_path)
    assert path.with_name("blob.bin.verified").exists()
    path.write_bytes(PAYLOAD[:-1] + b"Y")  # same size, new mtime
    os.utime(path, ns=(1, 1))
    with pytest.raises(DataError, match="mismatch"):
        fetch("toy", "blob.bin", tmp_path)


def test_read_only_folder_gets_no_stamp(toy: None, tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(PAYLOAD)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert fetch("toy", "blob.bin", tmp_path) == folder / "blob.bin"
        assert leftovers(folder) == ["blob.bin"]
    finally:
        folder.chmod(0o755)


def test_md5_checksums_are_supported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    verify_file(path, Checksum("md5", hashlib.md5(PAYLOAD).hexdigest()), use_stamp=False)
    with pytest.raises(DataError, match="MD5 mismatch"):
        verify_file(path, Checksum("md5", "0" * 32), use_stamp=False)
    with pytest.raises(ValueError):
        Checksum("crc32", "0")


def test_unknown_dataset_or_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no download source for dataset 'cifar'"):
        fetch("cifar", "x", tmp_path)
    with pytest.raises(DataError, match=r"mnist/x\.gz: not a known file .*train-images"):
        fetch("mnist", "x.gz", tmp_path)


def test_checksum_table_covers_every_published_file() -> None:
    for name, files in {
        "mnist": 4,
        "fashion_mnist": 4,
        "tinyshakespeare": 1,
        "timeseries": 2,
    }.items():
        src = download.SOURCES[name]
        assert len(src.files) == files and src.mirrors
        for c in src.files.values():
            assert len(c.digest) == {"sha256": 64, "md5": 32}[c.algorithm]
    assert download.SOURCES["fashion_mnist"].folder == "fashion-mnist"
