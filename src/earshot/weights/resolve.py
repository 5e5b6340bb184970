"""`resolve_weights`: an entry's file from the first place that has a good copy (explicit path,
$EARSHOT_WEIGHTS_DIR, cache, ../shared/weights, a download), else an error naming every
place looked and how to get the file offline."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from earshot.errors import ModelLoadError
from earshot.weights.fetch import download
from earshot.weights.refs import ENV_SHARED_DIR, ENV_WEIGHTS_DIR, WeightsRef
from earshot.weights.store import _offline_reason, cache_dir, check_file, shared_dir

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
