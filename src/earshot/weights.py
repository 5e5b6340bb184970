"""Third-party weights that a model folder names but never stores.

A model's `config.json` names each file it needs from elsewhere (an EfficientAT backbone, the
AudioSet labels) by a `WeightsRef`: id, file name, sha256, size, upstream URL. The file itself
is never committed, copied into the repository or converted. At run time `resolve_weights`
finds it, in this order, and checks every file it finds against the sha256 before use:

1. an explicit path (argument), then `$EARSHOT_WEIGHTS_DIR/<file>` (or `.../<subdir>/<file>`);
2. the user's cache: `user_cache_dir("earshot")/weights/<id>/<file>` (`$EARSHOT_CACHE_DIR`
   replaces the root);
3. the development copy `../shared/weights/<subdir>/<file>` beside a source checkout
   (`$EARSHOT_SHARED_DIR` names that `shared/` folder instead);
4. a download from the URL into the cache: streamed to `<file>.part`, resumed with a Range
   request, size and sha256 checked, fsync'ed and renamed into place atomically;
5. else a `ModelLoadError` naming the file, every place looked, the URL and the env var.

Offline (`EARSHOT_OFFLINE=1` or `HF_HUB_OFFLINE=1`), or when the first connection fails, step 4
fails at once instead of retrying. A found file whose hash is wrong is an error where the user
chose it (argument, env var) and is skipped (deleted, in the cache) elsewhere.

An entry without a sha256 ("unpinned") cannot be verified against a known value: it still
downloads, with a warning carrying the sha256 it got, and that hash is recorded beside the
cached file (`<file>.sha256`) so later loads of the cached copy are checked against it. Copies
found elsewhere are used with a warning that they could not be verified.

An entry may also carry the publisher's md5 (Zenodo publishes md5, not sha256): it is checked
like the sha256, and an entry with either is pinned.

Hashing costs ~5 ms per 4 MB here, so every load re-hashes; there is no verification cache.

Checkpoints that live on the Hugging Face hub (CLAP) are not single files: `resolve_hub` finds
a repository's snapshot in the local hub cache (downloading it only where the network is
allowed) and fails with the same shape of message as `resolve_weights`; `KNOWN_HUB` lists the
ones earshot knows, beside `KNOWN_WEIGHTS`, for `earshot weights`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import http.client
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from earshot.errors import ModelLoadError, WeightsUnreachable
from earshot.fsutil import atomic_write_text, replace_durably

ENV_WEIGHTS_DIR = "EARSHOT_WEIGHTS_DIR"
ENV_CACHE_DIR = "EARSHOT_CACHE_DIR"
ENV_SHARED_DIR = "EARSHOT_SHARED_DIR"
ENV_OFFLINE = "EARSHOT_OFFLINE"

#: Seconds any one socket operation (connect, a read) may take before the attempt fails.
TIMEOUT_S = 30.0
#: Download attempts in all; a retry happens only after an attempt that had got through.
ATTEMPTS = 3
#: Seconds before the first retry; doubled for each further one.
RETRY_WAIT_S = 1.0
_CHUNK = 1 << 16

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightsRef:
    """A file from elsewhere that a model needs: what it is, how to check it, where it lives.

    `sha256` and `size` may be None for an unpinned entry (see the module docstring). `subdir`
    is the folder of the development copy under `shared/weights/`.
    """

    id: str
    file: str
    sha256: str | None
    size: int | None
    url: str
    subdir: str = ""
    licence: str = ""
    description: str = ""
    md5: str | None = None  # the publisher's checksum where it gives md5 only (Zenodo)

    def __post_init__(self) -> None:
        for field in ("id", "file"):
            value = getattr(self, field)
            if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
                raise ValueError(f"weights {field} must be a plain file name, not {value!r}")
        if self.subdir and (not _SAFE_NAME.match(self.subdir) or ".." in self.subdir):
            raise ValueError(f"weights subdir must be a plain folder name, not {self.subdir!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"weights '{self.id}': sha256 must be 64 lowercase hex digits")
        if self.md5 is not None and not _MD5.match(self.md5):
            raise ValueError(f"weights '{self.id}': md5 must be 32 lowercase hex digits")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
        ):
            raise ValueError(f"weights '{self.id}': size must be a non-negative integer")
        if not isinstance(self.url, str) or not self.url.startswith(("https://", "http://")):
            raise ValueError(f"weights '{self.id}': url must be http(s), not {self.url!r}")

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None

    def to_dict(self) -> dict[str, Any]:
        """The entry as config.json stores it (None fields kept, so the schema is fixed; `md5`,
        added later, only where set, so older configs and the model ids hashed from them stay)."""
        d = asdict(self)
        if d["md5"] is None:
            del d["md5"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsRef:
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown weights field(s): {', '.join(unknown)}")
        missing = sorted({"id", "file", "url"} - set(data))
        if missing:
            raise ValueError(f"weights entry lacks: {', '.join(missing)}")
        return cls(
            id=data["id"],
            file=data["file"],
            sha256=data.get("sha256"),
            size=data.get("size"),
            url=data["url"],
            subdir=data.get("subdir") or "",
            licence=data.get("licence") or "",
            description=data.get("description") or "",
            md5=data.get("md5"),
        )


_EFFICIENTAT_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
_PANNS_RECORD = "https://zenodo.org/record/3987831/files/"

KNOWN_WEIGHTS: dict[str, WeightsRef] = {
    ref.id: ref
    for ref in (
        WeightsRef(
            id="efficientat-mn04-as",
            file="mn04_as_mAP_432.pt",
            sha256="899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
            size=4066513,
            url=_EFFICIENTAT_RELEASE + "mn04_as_mAP_432.pt",
            subdir="efficientat",
            licence="MIT",
            description="EfficientAT MobileNetV3 width 0.4, AudioSet tagger (mAP 0.432)",
        ),
        WeightsRef(
            id="efficientat-mn10-as",
            file="mn10_as_mAP_471.pt",
            sha256=None,
            size=None,
            url=_EFFICIENTAT_RELEASE + "mn10_as_mAP_471.pt",
            subdir="efficientat",
            licence="MIT",
            description="EfficientAT MobileNetV3 width 1.0, AudioSet tagger (mAP 0.471); "
            "unpinned: no checked copy, so no known sha256",
        ),
        # PANNs (Kong et al. 2020), the checkpoints its README links: Zenodo record 3987831.
        # Zenodo publishes each file's md5 and size, not a sha256; no copy was downloaded here
        # to compute one, so these are pinned by the publisher's md5 and size.
        WeightsRef(
            id="panns-cnn14-as",
            file="Cnn14_mAP-0.431.pth",
            sha256=None,
            md5="541141fa2ee191a88f24a3219fff024e",
            size=327428481,
            url=_PANNS_RECORD + "Cnn14_mAP%3D0.431.pth?download=1",
            subdir="panns",
            licence="MIT (code), CC BY 4.0 (weights, Zenodo 3987831)",
            description="PANNs CNN14, AudioSet tagger (mAP 0.431), 32 kHz log-mel input; "
            "pinned by Zenodo's md5 and size (no sha256 computed here)",
        ),
        WeightsRef(
            id="panns-cnn10-as",
            file="Cnn10_mAP-0.380.pth",
            sha256=None,
            md5="bfb1f1f9968938fa8ef4012b8471f5f6",
            size=25237595,
            url=_PANNS_RECORD + "Cnn10_mAP%3D0.380.pth?download=1",
            subdir="panns",
            licence="MIT (code), CC BY 4.0 (weights, Zenodo 3987831)",
            description="PANNs CNN10, AudioSet tagger (mAP 0.380), 32 kHz log-mel input; "
            "pinned by Zenodo's md5 and size (no sha256 computed here)",
        ),
        WeightsRef(
            id="audioset-labels",
            file="class_labels_indices.csv",
            sha256="cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429",
            size=14675,
            url="https://raw.githubusercontent.com/fschmid56/EfficientAT/main/metadata/"
            "class_labels_indices.csv",
            subdir="efficientat",
            licence="CC BY 4.0 (AudioSet labels)",
            description="the 527 AudioSet classes in EfficientAT's output order",
        ),
    )
}


def known_weights(weights_id: str) -> WeightsRef:
    """The registry entry for `weights_id`, or a ModelLoadError listing the known ids."""
    try:
        return KNOWN_WEIGHTS[weights_id]
    except KeyError:
        raise ModelLoadError(
            f"unknown weights '{weights_id}'; known: {', '.join(sorted(KNOWN_WEIGHTS))}"
        ) from None


# -- places ---------------------------------------------------------------------------------


def cache_root() -> Path:
    """`$EARSHOT_CACHE_DIR`, else the platform's user cache folder for earshot."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("earshot"))


def cache_dir(ref: WeightsRef) -> Path:
    """The cache folder of one entry: `<cache root>/weights/<id>/`."""
    return cache_root() / "weights" / ref.id


def shared_dir() -> Path | None:
    """`$EARSHOT_SHARED_DIR`, else the `shared/` folder beside a source checkout, else None.

    Only a checkout counts (the folder above `src/earshot` holds a pyproject.toml): an
    installed package's parents are site-packages folders, where no `shared/` is meant.
    """
    env = os.environ.get(ENV_SHARED_DIR)
    if env:
        return Path(env).expanduser()
    import earshot

    root = Path(earshot.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        return None
    shared = root.parent / "shared"
    return shared if shared.is_dir() else None


def _offline_reason() -> str | None:
    for name in (ENV_OFFLINE, "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name} is set"
    return None


# -- checks ---------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    return _digests(path, md5=False)[0]


def _digests(path: str | Path, md5: bool) -> tuple[str, str | None]:
    """The file's sha256 and (when asked) md5, read once."""
    h = hashlib.sha256()
    m = hashlib.md5(usedforsecurity=False) if md5 else None
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if m is not None:
                m.update(block)
    return h.hexdigest(), None if m is None else m.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def check_file(path: str | Path, ref: WeightsRef, record: bool = False) -> str | None:
    """None if `path` is the file `ref` names (size, sha256), else why not.

    An unpinned ref is checked against the hash recorded beside the file when `record` is
    true (its cached copy); otherwise it passes with a warning.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if ref.size is not None and size != ref.size:
        return f"size {size} bytes, expected {ref.size}"
    try:
        digest, md5 = _digests(path, md5=ref.md5 is not None)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if ref.md5 is not None and md5 != ref.md5:
        return f"md5 {md5}, expected {ref.md5}"
    if ref.md5 is not None and ref.sha256 is None:
        return None
    expected = ref.sha256
    if expected is None and record:
        with contextlib.suppress(OSError):
            expected = _record_path(path).read_text().split()[0].strip().lower()
    if expected is None:
        warnings.warn(
            f"weights '{ref.id}' are unpinned (no known sha256); using {path} unverified "
            f"(its sha256 is {digest})",
            stacklevel=3,
        )
        return None
    if digest != expected:
        return f"sha256 {digest}, expected {expected}"
    return None


# -- resolution -----------------------------------------------------------------------------


def resolve_weights(
    ref: WeightsRef,
    path: str | Path | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> Path:
    """The verified local file `ref` names (see the module docstring for the search order).

    `path` may be the file or a folder holding it by its file name; a path that is given and
    wrong (absent, wrong hash) is an error, never silently replaced by another copy.
    """
    looked: list[str] = []

    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / ref.file
        if not p.is_file():
            raise ModelLoadError(f"weights '{ref.id}': no file at the path given, {p}")
        why = check_file(p, ref)
        if why:
            raise ModelLoadError(f"weights '{ref.id}': the file given, {p}, is wrong: {why}")
        return p

    env_dir = os.environ.get(ENV_WEIGHTS_DIR)
    if env_dir:
        base = Path(env_dir).expanduser()
        names = [base / ref.file] + ([base / ref.subdir / ref.file] if ref.subdir else [])
        for p in names:
            if p.is_file():
                why = check_file(p, ref)
                if why:
                    raise ModelLoadError(
                        f"weights '{ref.id}': {p} (from ${ENV_WEIGHTS_DIR}) is wrong: {why}"
                    )
                return p
        looked.append(f"${ENV_WEIGHTS_DIR}: {' or '.join(map(str, names))} (absent)")
    else:
        looked.append(f"${ENV_WEIGHTS_DIR}: not set")

    cached = cache_dir(ref) / ref.file
    found = _try_cached(cached, ref, looked)
    if found:
        return found

    shared = shared_dir()
    if shared is not None:
        p = shared / "weights" / ref.subdir / ref.file
        if p.is_file():
            why = check_file(p, ref)
            if not why:
                return p
            warnings.warn(f"weights '{ref.id}': skipping {p}: {why}", stacklevel=2)
            looked.append(f"development copy: {p} (wrong: {why})")
        else:
            looked.append(f"development copy: {p} (absent)")
    else:
        looked.append(f"development copy: no shared/ folder beside a checkout (${ENV_SHARED_DIR})")

    if not allow_download:
        raise _missing(ref, looked, "downloading was not allowed")
    offline = _offline_reason()
    if offline:
        raise _missing(ref, looked, f"downloading is off ({offline})")
    try:
        return download(ref, cached.parent, progress=progress)
    except (ModelLoadError, OSError) as e:  # OSError: the cache cannot be written
        looked.append(f"download: {ref.url} (failed)")
        raise _missing(ref, looked, f"the download failed: {e}") from None


def _try_cached(cached: Path, ref: WeightsRef, looked: list[str]) -> Path | None:
    if not cached.is_file():
        looked.append(f"cache: {cached} (absent)")
        return None
    why = check_file(cached, ref, record=True)
    if not why:
        return cached
    # The cache is ours: a damaged copy goes, and a download replaces it.
    warnings.warn(f"weights '{ref.id}': removing damaged cached copy {cached}: {why}", stacklevel=3)
    with contextlib.suppress(OSError):
        cached.unlink()
    looked.append(f"cache: {cached} (was damaged: {why}; removed)")
    return None


def _missing(ref: WeightsRef, looked: list[str], reason: str) -> ModelLoadError:
    cached = cache_dir(ref) / ref.file
    pin = (
        f"sha256 {ref.sha256}"
        if ref.sha256
        else (f"md5 {ref.md5}" if ref.md5 else "no pinned sha256")
    )
    if ref.size is not None:
        pin += f", {ref.size} bytes"
    lines = [
        f"weights '{ref.id}' ({ref.file}) not found, and {reason}.",
        "Looked in:",
        *(f"  - {place}" for place in looked),
        "To fix it, on a machine with network download",
        f"  {ref.url}",
        f"  ({pin})",
        f"and put it at {cached}, or in a folder named by ${ENV_WEIGHTS_DIR}"
        f" (e.g. {ENV_WEIGHTS_DIR}=/path/to/folder); or, where the network is reachable, run"
        f" `earshot weights fetch {ref.id}`.",
    ]
    return ModelLoadError("\n".join(lines))


def locate(ref: WeightsRef) -> Path | None:
    """Where `ref` resolves without downloading, or None (for listings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return resolve_weights(ref, allow_download=False, progress=False)
        except ModelLoadError:
            return None


# -- download -------------------------------------------------------------------------------


_Unreachable = WeightsUnreachable


class _Transient(Exception):
    """An attempt that got through and then broke; worth a retry (with resume)."""


_locks_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One downloader per target at a time: across processes (flock) and threads."""
    with _locks_guard:
        tlock = _thread_locks.setdefault(str(lock_path), threading.Lock())
    with tlock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the thread lock is all there is
            yield
            return
        with open(lock_path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def download(
    ref: WeightsRef,
    dest_dir: str | Path,
    progress: bool = True,
    timeout: float | None = None,
) -> Path:
    """Download `ref` into `dest_dir/<file>` and return that path (verified).

    Streams to `<file>.part`, resuming an existing one with a Range request (restarting
    cleanly when the server ignores it); checks size and sha256; fsyncs and renames the
    finished file into place, so a reader never sees a partial file. A wrong checksum
    deletes the partial file. Offline (EARSHOT_OFFLINE, HF_HUB_OFFLINE) it refuses at once.
    Connection failures before any byte arrived fail at once;
    an attempt that broke mid-transfer is retried (ATTEMPTS in all), resuming.
    """
    offline = _offline_reason()
    if offline:
        raise ModelLoadError(f"weights '{ref.id}': not downloading {ref.url}: {offline}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / ref.file
    part = dest_dir / (ref.file + ".part")
    timeout = TIMEOUT_S if timeout is None else timeout

    with _exclusive(dest_dir / (ref.file + ".lock")):
        # Someone else may have finished it while we waited for the lock.
        if final.is_file() and not check_file(final, ref, record=True):
            return final
        restarted = False
        while True:
            _fetch_part(ref, part, progress, timeout)
            digest, md5 = _digests(part, md5=ref.md5 is not None)
            size = part.stat().st_size
            wrong = None
            if ref.size is not None and size != ref.size:
                wrong = f"got {size} bytes, expected {ref.size}"
            elif ref.sha256 is not None and digest != ref.sha256:
                wrong = f"sha256 {digest}, expected {ref.sha256}"
            elif ref.md5 is not None and md5 != ref.md5:
                wrong = f"md5 {md5}, expected {ref.md5}"
            if wrong is None:
                break
            part.unlink(missing_ok=True)
            if not restarted:
                restarted = True  # a resumed part may have been stale: one clean try more
                continue
            raise ModelLoadError(
                f"weights '{ref.id}': the download from {ref.url} is not the expected file "
                f"({wrong}); the partial file was deleted and nothing was kept"
            )
        if not ref.pinned:
            record = _record_path(final)
            atomic_write_text(record, f"{digest}  {ref.file}\n")
            warnings.warn(
                f"weights '{ref.id}' are unpinned: downloaded {ref.url} with sha256 {digest} "
                f"({size} bytes), recorded in {record}; pin it in the entry to verify it",
                stacklevel=2,
            )
        replace_durably(part, final)
        return final


def _fetch_part(ref: WeightsRef, part: Path, progress: bool, timeout: float) -> None:
    """Bring `part` to the whole file's bytes (unchecked), with retries and resume."""
    wait = RETRY_WAIT_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _attempt(ref, part, progress, timeout)
            return
        except (_Transient, _Unreachable) as e:
            # Unreachable on the first attempt means offline: fail at once, no retries.
            if isinstance(e, _Unreachable) and attempt == 1:
                raise
            if attempt == ATTEMPTS:
                raise ModelLoadError(
                    f"weights '{ref.id}': the download from {ref.url} kept failing "
                    f"({ATTEMPTS} attempts; last: {e}); the partial file {part} is kept "
                    "and the next try resumes it"
                ) from None
            print(
                f"earshot: download of {ref.file} broke ({e}); retrying in {wait:g} s",
                file=sys.stderr,
            )
            time.sleep(wait)
            wait *= 2


def _attempt(ref: WeightsRef, part: Path, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if ref.size is not None and have >= ref.size:
        if have == ref.size:
            return  # complete already; the caller checks it
        part.unlink()
        have = 0
    request = urllib.request.Request(ref.url, headers={"User-Agent": "earshot"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is no prefix of the file: start over
            e.close()
            part.unlink(missing_ok=True)
            raise _Transient("the server refused to resume; starting over") from None
        e.close()
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise ModelLoadError(
            f"weights '{ref.id}': cannot download {ref.url}: HTTP {e.code} {e.reason}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _Unreachable(f"cannot reach {ref.url} ({reason})") from None

    with response:
        mode = "ab"
        start = 0
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient("the server resumed at the wrong offset; starting over")
        elif have:
            mode, have = "wb", 0  # Range ignored (200): the body is the whole file
        length = response.headers.get("Content-Length")
        total = ref.size
        if total is None and length is not None and length.isdigit():
            total = start + int(length)
        bar = _progress_bar(ref, total, have, progress)
        got = 0
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read1(_CHUNK)  # what has arrived: kept on a timeout
                    except (OSError, http.client.HTTPException) as e:
                        raise _Transient(f"connection lost after {have + got} bytes: {e}") from e
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
                    if ref.size is not None and have + got > ref.size:
                        f.close()
                        part.unlink(missing_ok=True)
                        raise ModelLoadError(
                            f"weights '{ref.id}': {ref.url} sends more than the expected "
                            f"{ref.size} bytes; the partial file was deleted"
                        )
        finally:
            bar.close()
        if total is not None and have + got < total:
            raise _Transient(f"connection closed after {have + got} of {total} bytes")


def _content_range_start(value: str | None) -> int:
    m = re.match(r"^\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else -1


def _progress_bar(ref: WeightsRef, total: int | None, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=ref.file,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


# -- AudioSet labels ------------------------------------------------------------------------

AUDIOSET_CLASSES = 527


def read_audioset_labels(path: str | Path, n_classes: int = AUDIOSET_CLASSES) -> list[str]:
    """The display names of `class_labels_indices.csv`, in index order.

    Checks the header (`index,mid,display_name`), that the indices run 0..n-1 in order and
    that there are `n_classes` rows; any deviation is a ModelLoadError naming the line.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ModelLoadError(f"cannot read AudioSet labels '{path}': {e}") from None
    if not rows or [c.strip() for c in rows[0]] != ["index", "mid", "display_name"]:
        raise ModelLoadError(
            f"AudioSet labels '{path}': the header must be index,mid,display_name, "
            f"not {','.join(rows[0]) if rows else '(empty file)'}"
        )
    names: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 3 or row[0].strip() != str(len(names)) or not row[2].strip():
            raise ModelLoadError(
                f"AudioSet labels '{path}' line {line}: expected '{len(names)},<mid>,<name>', "
                f"got {row!r}"
            )
        names.append(row[2].strip())
    if len(names) != n_classes:
        raise ModelLoadError(
            f"AudioSet labels '{path}': {len(names)} classes, expected {n_classes}"
        )
    return names


# -- checkpoints on the Hugging Face hub --------------------------------------------------------


@dataclass(frozen=True)
class HubRef:
    """A model repository on the Hugging Face hub that earshot knows how to use (CLAP)."""

    repo_id: str
    licence: str = ""
    description: str = ""


KNOWN_HUB: dict[str, HubRef] = {
    ref.repo_id: ref
    for ref in (
        HubRef(
            "laion/clap-htsat-unfused",
            "Apache-2.0",
            "LAION-CLAP, HTSAT-tiny audio + RoBERTa text, 512-d joint space, no feature fusion",
        ),
        HubRef(
            "laion/clap-htsat-fused",
            "Apache-2.0",
            "LAION-CLAP, HTSAT-tiny with feature fusion (earshot's 10 s windows never fuse)",
        ),
        HubRef(
            "laion/larger_clap_general",
            "Apache-2.0",
            "LAION-CLAP, larger HTSAT, trained on general audio, music and speech",
        ),
    )
}

# What a CLAP checkpoint folder needs; the rest of a hub repository (other weight formats,
# README) is not fetched.
HUB_PATTERNS = ("*.json", "*.txt", "*.safetensors", "*.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a hub repository id (`owner/name`) rather than a path."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps repositories: $HF_HUB_CACHE, else $HF_HOME/hub, else its
    default (~/.cache/huggingface/hub); read now, not when huggingface_hub was imported."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_hub(
    repo_id: str, revision: str | None = None, allow_download: bool = True
) -> tuple[Path, str]:
    """The local snapshot folder of a hub repository and its commit hash.

    The local hub cache first (never a network call); then, where downloading is allowed and
    not switched off (EARSHOT_OFFLINE, HF_HUB_OFFLINE), a download of the files a checkpoint
    needs; else a `ModelLoadError` naming the repository, where it looked and how to get it.
    A download that fails for want of a network fails at once (no minute of retries).
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not _HUB_ID.match(repo_id):
        raise ModelLoadError(f"'{repo_id}' is neither a folder nor a hub id (owner/name)")
    cache = hub_cache_dir()
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    looked = [f"Hugging Face cache: {folder} ({'no snapshot' if folder.exists() else 'absent'})"]
    try:
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=True,
            allow_patterns=list(HUB_PATTERNS),
        )
        return Path(path), _snapshot_commit(Path(path), revision)
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    except (OSError, ValueError) as e:
        looked[0] = f"Hugging Face cache: {folder} (unreadable: {e})"
    if not allow_download:
        raise _hub_missing(repo_id, revision, looked, "downloading was not allowed")
    offline = _offline_reason()
    if offline:
        raise _hub_missing(repo_id, revision, looked, f"downloading is off ({offline})")
    try:
        # One quick attempt: no network means a fast failure, not a minute of retries.
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            allow_patterns=list(HUB_PATTERNS),
            etag_timeout=10,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        looked.append(f"download from the hub: {repo_id} (failed)")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.removeprefix("Got: ")
        raise _hub_missing(repo_id, revision, looked, f"the download failed: {first}") from None
    return Path(path), _snapshot_commit(Path(path), revision)


def _snapshot_commit(path: Path, revision: str | None) -> str:
    # A cached snapshot's folder is named by its commit hash.
    name = path.name
    return name if re.fullmatch(r"[0-9a-f]{40}", name) else (revision or name)


def _hub_missing(
    repo_id: str, revision: str | None, looked: list[str], reason: str
) -> ModelLoadError:
    at = f" at revision {revision}" if revision else ""
    lines = [
        f"hub checkpoint '{repo_id}'{at} is not in the local Hugging Face cache, and {reason}.",
        "Looked in:",
        *(f"  - {place}" for place in looked),
        "To fix it, on a machine with network run",
        f"  earshot weights fetch {repo_id}",
        f"(or `hf download {repo_id}`), then copy {hub_cache_dir()} here or set $HF_HUB_CACHE "
        "to it; or pass the checkpoint as a local folder (a save_pretrained folder with "
        "config.json, model.safetensors and the processor files).",
    ]
    return ModelLoadError("\n".join(lines))


def locate_hub(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id`, or None (for listings; never downloads)."""
    try:
        return resolve_hub(repo_id, allow_download=False)[0]
    except ModelLoadError:
        return None
