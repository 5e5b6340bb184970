"""Where weights are kept and how a found file is checked: the user cache, the development copy
beside a checkout, offline switches, sha256 / md5 checks (with a recorded hash for unpinned
entries)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

from earshot.weights.refs import _TRUE, ENV_CACHE_DIR, ENV_OFFLINE, ENV_SHARED_DIR, WeightsRef

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
