"""Dataset files: find them in the cache or a given folder, else download and verify them.

Every known file has a published checksum in `SOURCES`. A file already in place is hashed
once; the result is recorded in a sidecar stamp (`<file>.verified`, keyed by size and mtime)
so later runs do not re-hash it. A download goes to a temporary file in the target folder, is
hashed while it streams, and is moved into place with `os.replace` only when the checksum
matches, so an interrupted or corrupt download never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlrun.errors import DataError

Progress = Callable[[int, int | None], None]
"""progress(done_bytes, total_bytes): total is None when the server sends no length."""

_CHUNK = 1 << 16
RETRIES = 3  # attempts per mirror on transient errors
BACKOFF = 1.0  # seconds before the 2nd attempt, doubled after each failure
TIMEOUT = 30.0  # seconds of socket inactivity before an attempt is abandoned
_STAMP_SUFFIX = ".verified"


@dataclass(frozen=True)
class Checksum:
    """A published digest: `algorithm` is 'sha256' or 'md5' (all some datasets publish)."""

    algorithm: str
    digest: str

    def __post_init__(self) -> None:
        if self.algorithm not in ("sha256", "md5"):
            raise ValueError(f"unsupported checksum algorithm {self.algorithm!r}")


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's files live: cache folder name, mirror base URLs, checksum per file."""

    folder: str
    mirrors: tuple[str, ...]
    files: dict[str, Checksum] = field(default_factory=dict)


def _sha256(d: str) -> Checksum:
    return Checksum("sha256", d)


def _md5(d: str) -> Checksum:
    return Checksum("md5", d)


MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SOURCES: dict[str, DatasetSource] = {
    "mnist": DatasetSource(
        folder="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files={
            "train-images-idx3-ubyte.gz": _sha256(
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": _sha256(
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": _sha256(
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": _sha256(
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
    ),
    # Zalando publishes MD5s only.
    "fashion_mnist": DatasetSource(
        folder="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train-images-idx3-ubyte.gz": _md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels-idx1-ubyte.gz": _md5("25c81989df183df01b3e8a0aad5dffbe"),
            "t10k-images-idx3-ubyte.gz": _md5("bef4ecab320f06d8554ea6380940ec79"),
            "t10k-labels-idx1-ubyte.gz": _md5("bb300cfdad3c16e7a12a480ee83cd310"),
        },
    ),
    "tinyshakespeare": DatasetSource(
        folder="tinyshakespeare",
        mirrors=(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
            "https://raw.githubusercontent.com/karpathy/char-rnn/"
            "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/",
        ),
        files={
            "input.txt": _sha256(
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
            ),
        },
    ),
    # Pinned to the commit the shared copies came from, so the checksums cannot drift.
    "timeseries": DatasetSource(
        folder="timeseries",
        mirrors=(
            "https://raw.githubusercontent.com/selva86/datasets/"
            "c943fa8851270387c44d26efb0f9c0aac1559e11/",
        ),
        files={
            "AirPassengers.csv": _sha256(
                "f2c862a9f593454ffc2e561294af64ee76fa2b91fca806d9925327b57fc2a40b"
            ),
            "daily-min-temperatures.csv": _sha256(
                "a29a71f38cf548a0b12bee44ceb510919a8cef450e19019261d534208c884fa2"
            ),
        },
    ),
}


def cache_dir() -> Path:
    """The dataset cache: $DLRUN_DATA_DIR, else ~/.cache/dlrun."""
    env = os.environ.get("DLRUN_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlrun"


def source(name: str) -> DatasetSource:
    """The registered source of a dataset (DataError for an unknown name)."""
    key = name.replace("-", "_").lower()
    if key not in SOURCES:
        raise DataError(
            f"no download source for dataset {name!r}; known: {', '.join(sorted(SOURCES))}"
        )
    return SOURCES[key]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + _STAMP_SUFFIX)


def _stamp_key(path: Path, checksum: Checksum) -> dict[str, object]:
    st = path.stat()
    return {
        "algorithm": checksum.algorithm,
        "digest": checksum.digest.lower(),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _stamp_valid(path: Path, checksum: Checksum) -> bool:
    try:
        recorded = json.loads(_stamp_path(path).read_text())
        return bool(recorded == _stamp_key(path, checksum))
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, checksum: Checksum) -> None:
    # A read-only data folder (no write bit, honoured even for root: shared copies) just
    # means the file is hashed again next time, which costs milliseconds.
    with contextlib.suppress(OSError):
        if path.parent.stat().st_mode & 0o222 == 0:
            return
        _stamp_path(path).write_text(json.dumps(_stamp_key(path, checksum)) + "\n")


def verify_file(path: str | Path, checksum: Checksum, *, use_stamp: bool = True) -> None:
    """Check a file against its published checksum; DataError naming the file if it differs.

    With `use_stamp`, a matching `<file>.verified` stamp skips the hashing, and a successful
    check writes one.
    """
    path = Path(path)
    if use_stamp and _stamp_valid(path, checksum):
        return
    actual = file_digest(path, checksum.algorithm)
    if actual != checksum.digest.lower():
        raise DataError(
            f"{path}: {checksum.algorithm.upper()} mismatch (got {actual}, expected "
            f"{checksum.digest}); the file is corrupt or a different version: delete it to "
            "download it again"
        )
    if use_stamp:
        _write_stamp(path, checksum)


def locate(name: str, filename: str, root: str | Path | None = None) -> Path | None:
    """An existing copy of the file: `<root>/<folder>/<filename>`, or, for an explicit root
    that is the dataset folder itself, `<root>/<filename>`; None when there is none. root
    defaults to the cache (where only the `<folder>/` layout counts).
    """
    base = Path(root).expanduser() if root is not None else cache_dir()
    candidates = [base / source(name).folder / filename]
    if root is not None:
        candidates.append(base / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _known_checksum(src: DatasetSource, name: str, filename: str) -> Checksum:
    checksum = src.files.get(filename)
    if checksum is None:
        raise DataError(f"{src.folder}/{filename}: not a known file of dataset {name!r}; "
                        f"known files: {', '.join(sorted(src.files))}")
    return checksum


def _try_mirror(url: str, target: Path, checksum: Checksum, progress: Progress | None,
                timeout: float, retries: int, backoff: float, failures: list[str]) -> bool:
    """Download `url` to `target`, verified, retrying transient errors with exponential
    backoff; False (the reason appended to `failures`) when this mirror has no good copy."""
    for attempt in range(max(1, retries)):
        try:
            _download_verified(url, target, checksum, progress, timeout)
        except _PermanentFailure as e:
            failures.append(f"{url}: {e}")
            return False
        except _TransientFailure as e:
            if attempt + 1 >= max(1, retries):
                failures.append(f"{url}: {e} (after {attempt + 1} attempts)")
            elif backoff > 0:
                time.sleep(backoff * 2**attempt)
        else:
            return True
    return False


def fetch(
    name: str,
    filename: str,
    root: str | Path | None = None,
    *,
    progress: Progress | None = None,
    mirrors: Sequence[str] | None = None,
    checksum: Checksum | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    backoff: float | None = None,
    download: bool = True,
) -> Path:
    """Path of a verified dataset file, downloading it into `<root>/<folder>/` when missing.

    `mirrors` and `checksum` override the table in `SOURCES` (tests point them at a local
    server). Each mirror is tried up to `retries` times on transient errors (a 404 or a bad
    checksum moves straight to the next mirror). DataError names the file when no copy can
    be found or verified. retries / timeout / backoff default to the module's RETRIES,
    TIMEOUT and BACKOFF.
    """
    retries = RETRIES if retries is None else retries
    timeout = TIMEOUT if timeout is None else timeout
    backoff = BACKOFF if backoff is None else backoff
    src = source(name)
    checksum = checksum if checksum is not None else _known_checksum(src, name, filename)
    existing = locate(name, filename, root)
    if existing is not None:
        verify_file(existing, checksum)
        return existing

    base = Path(root).expanduser() if root is not None else cache_dir()
    target = base / src.folder / filename
    if not download:
        raise DataError(f"{target}: file not found (downloads are disabled)")
    bases = src.mirrors if mirrors is None else mirrors
    urls = [m if m.endswith("/") else m + "/" for m in bases]
    if not urls:
        raise DataError(f"{target}: file not found and no download mirror is configured")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{target}: file not found and its folder cannot be created: {e}") from None

    failures: list[str] = []
    for base_url in urls:
        if _try_mirror(base_url + filename, target, checksum, progress, timeout, retries,
                       backoff, failures):
            _write_stamp(target, checksum)
            return target
    raise DataError(
        f"{target}: file not found and could not be downloaded: "
        + "; ".join(failures)
        + f". Put the file there by hand, or point $DLRUN_DATA_DIR at a folder holding "
        f"{src.folder}/{filename}"
    )


class _PermanentFailure(Exception):
    """This mirror will not give a good file (404, bad checksum): try the next one."""


class _TransientFailure(Exception):
    """A network hiccup or a cut-off transfer: worth retrying the same mirror."""


def _download_verified(
    url: str, target: Path, checksum: Checksum, progress: Progress | None, timeout: float
) -> None:
    """Stream `url` into a temp file beside `target`, verify it, then move it into place."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as e:
        raise DataError(f"{target}: cannot write into {target.parent}: {e}") from None
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(checksum.algorithm)
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "dlrun"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    if progress is not None:
                        progress(done, total)
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except urllib.error.HTTPError as e:
                if e.code in (408, 429) or e.code >= 500:
                    raise _TransientFailure(f"HTTP {e.code} {e.reason}") from None
                raise _PermanentFailure(f"HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise _TransientFailure(f"{e.reason}") from None
            except (OSError, http.client.HTTPException) as e:
                # timeouts, resets, IncompleteRead; a failing progress callback propagates
                raise _TransientFailure(f"{type(e).__name__}: {e}") from None
            if total is not None and done != total:
                raise _TransientFailure(f"transfer cut off at {done} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != checksum.digest.lower():
            raise _PermanentFailure(
                f"{checksum.algorithm.upper()} mismatch (got {actual}, expected "
                f"{checksum.digest}); file discarded"
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
