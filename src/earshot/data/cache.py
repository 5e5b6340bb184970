"""Caches that make epochs cheap: log-mel windows per split (HDF5), text embeddings (SQLite).

Both are keyed by everything they depend on, recomputed only when that changes, and safe to
interrupt: the feature cache is built in a `.partial` file that a re-run continues, and only a
complete file gets the final name; the text cache commits each batch in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from earshot.audio.efficientat_frontend import build_frontend
from earshot.audio.windows import window_file
from earshot.config import AudioConfig
from earshot.data.datasets import CaptionDataset
from earshot.errors import AudioDecodeError
from earshot.fsutil import replace_durably

FEATURE_VERSION = 1  # bump when what a cache file holds changes
COMMIT_EVERY = 32  # clips per HDF5 flush; a kill loses at most this much work


def feature_key(dataset: CaptionDataset, audio: AudioConfig) -> str:
    """Changes when any clip, its file (size, mtime) or the frontend settings change."""
    h = hashlib.sha256(json.dumps([FEATURE_VERSION, audio.__dict__], sort_keys=True).encode())
    for clip in dataset.clips:
        st = clip.path.stat()
        h.update(f"\0{clip.key}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class FeatureStore:
    """Read side of a complete cache file: log-mel of every window of every clip."""

    path: Path
    window_clip: np.ndarray  # (n_windows,) clip index of each window
    failed: dict[int, str]  # clip index → why it could not be decoded

    def __post_init__(self) -> None:
        import h5py

        self._file = h5py.File(self.path, "r")
        self._logmel = self._file["logmel"]
        self.clip_windows = [
            np.flatnonzero(self.window_clip == i) for i in range(int(self._file.attrs["n_clips"]))
        ]

    def __len__(self) -> int:
        return len(self.window_clip)

    def logmel(self, windows: np.ndarray) -> torch.Tensor:
        """(k,) window indices → (k, 1, frames, n_mels) float32."""
        # h5py reads need strictly increasing indices: read each distinct window once, reorder.
        unique, inverse = np.unique(np.asarray(windows, dtype=np.int64), return_inverse=True)
        rows = self._logmel[unique][inverse.reshape(-1)]
        return torch.from_numpy(rows).unsqueeze(1)

    def close(self) -> None:
        self._file.close()


def build_feature_cache(
    dataset: CaptionDataset, audio: AudioConfig, cache_dir: str | Path, progress: bool = True
) -> FeatureStore:
    """Open the split's cache, computing (or finishing) it first where needed."""
    import h5py

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = feature_key(dataset, audio)
    safe_split = "".join(c if c.isalnum() else "_" for c in dataset.split)
    final = cache_dir / f"logmel-{safe_split}-{key}.h5"
    if not final.exists():
        partial = final.with_suffix(".partial.h5")
        _fill(partial, dataset, audio, key, progress, h5py)
        replace_durably(partial, final)
    with h5py.File(final, "r") as f:
        window_clip = f["window_clip"][:]
        failed = {
            int(i): r.decode()
            for i, r in zip(f["failed_clip"][:], f["failed_reason"][:], strict=True)
        }
    return FeatureStore(final, window_clip, failed)


def _fill(
    path: Path, dataset: CaptionDataset, audio: AudioConfig, key: str, progress: bool, h5py
) -> None:
    frontend = build_frontend(audio)
    with torch.no_grad():  # one window's shape: (frames, n_mels) for PANNs, transposed for others
        shape = tuple(frontend(torch.zeros(1, audio.window_samples)).shape[2:])
    f = _open_partial(path, key, h5py)
    if f is None:
        f = h5py.File(path, "w")
        f.attrs.update(key=key, n_clips=len(dataset), clips_done=0)
        f.create_dataset(
            "logmel",
            (0, *shape),
            maxshape=(None, *shape),
            dtype="float32",
            chunks=(1, *shape),
        )
        for name, dtype in [
            ("window_clip", "int32"),
            ("start_s", "float32"),
            ("end_s", "float32"),
            ("failed_clip", "int32"),
        ]:
            f.create_dataset(name, (0,), maxshape=(None,), dtype=dtype)
        f.create_dataset("failed_reason", (0,), maxshape=(None,), dtype=h5py.string_dtype())
    start = int(f.attrs["clips_done"])
    bar = _progress(len(dataset), start, f"log-mel {dataset.split}", progress)
    try:
        for i in range(start, len(dataset)):
            clip = dataset.clips[i]
            try:
                windows = list(window_file(clip.path, audio))
            except AudioDecodeError as e:
                _append(f, "failed_clip", [i])
                _append(f, "failed_reason", [e.reason])
                windows = []
            if windows:
                with torch.no_grad():
                    mel = frontend(torch.from_numpy(np.stack([w.samples for w in windows])))
                _append(f, "logmel", mel[:, 0].numpy())
                _append(f, "window_clip", [i] * len(windows))
                _append(f, "start_s", [w.start_s for w in windows])
                _append(f, "end_s", [w.end_s for w in windows])
            if (i + 1) % COMMIT_EVERY == 0 or i + 1 == len(dataset):
                # Datasets first, then the counter: a kill between them redoes < COMMIT_EVERY
                # clips, whose rows are trimmed on resume.
                f.attrs["clips_done"] = i + 1
                f.flush()
            bar.update(1)
    finally:
        bar.close()
        f.close()


def _open_partial(path: Path, key: str, h5py):
    """A partial file from an interrupted run, trimmed to its last commit; None to start over."""
    if not path.exists():
        return None
    f = None
    try:
        f = h5py.File(path, "a")
        if f.attrs.get("key") != key:
            raise ValueError("stale")
        done = int(f.attrs["clips_done"])
        keep = int(np.searchsorted(f["window_clip"][:], done))  # window_clip is sorted
        for name in ("logmel", "window_clip", "start_s", "end_s"):
            f[name].resize(keep, axis=0)
        keep_failed = int(np.searchsorted(f["failed_clip"][:], done))
        f["failed_clip"].resize(keep_failed, axis=0)
        f["failed_reason"].resize(keep_failed, axis=0)
        return f
    except Exception:  # a file cut mid-write by a kill can be unreadable: rebuild it
        if f is not None:
            f.close()
        path.unlink(missing_ok=True)
        return None


def _append(f, name: str, rows) -> None:
    ds = f[name]
    rows = np.asarray(rows) if not isinstance(rows, np.ndarray) else rows
    n = ds.shape[0]
    ds.resize(n + len(rows), axis=0)
    ds[n:] = rows


def _progress(total: int, done: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=done, desc=desc, unit="clip", disable=not enabled, dynamic_ncols=True
    )


class TextCache:
    """Sentence embeddings keyed by (text model id, caption), in one SQLite file."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS text_embedding (model TEXT NOT NULL, caption TEXT NOT NULL,"
            " dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, caption))"
        )

    def embed(self, encoder, captions: list[str], batch_size: int = 128) -> np.ndarray:
        """(n, dim) float32 embeddings; only captions not cached yet go through the encoder."""
        model = encoder.id
        unique = list(dict.fromkeys(captions))
        found = self._lookup(model, unique)
        todo = [c for c in unique if c not in found]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            vectors = encoder.encode(chunk, batch_size=batch_size).numpy().astype(np.float32)
            with self.db:  # one transaction per batch: a kill keeps every finished batch
                self.db.executemany(
                    "INSERT OR REPLACE INTO text_embedding VALUES (?, ?, ?, ?)",
                    [(model, c, v.size, v.tobytes()) for c, v in zip(chunk, vectors, strict=True)],
                )
            found.update(zip(chunk, vectors, strict=True))
        if not captions:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([found[c] for c in captions])

    def _lookup(self, model: str, captions: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(captions), 500):  # SQLite caps the number of bound parameters
            chunk = captions[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for caption, blob in self.db.execute(
                "SELECT caption, vector FROM text_embedding"
                f" WHERE model = ? AND caption IN ({marks})",
                [model, *chunk],
            ):
                found[caption] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def close(self) -> None:
        self.db.close()
