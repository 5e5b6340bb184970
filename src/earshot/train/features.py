"""The frozen encoder's outputs for every window of a split, computed once and cached per clip.

Heads trained on a frozen encoder (`train/heads.py`, the general model's; `train/student.py`,
a student's) read these instead of running the encoder every step: `backbone_features` puts
every window of every clip through the frontend and the encoder once, and keeps each clip's
outputs in a file of its own under a folder keyed by all they depend on but the audio.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from earshot.audio.windows import window_file
from earshot.data.datasets import CaptionDataset
from earshot.errors import AudioDecodeError, EarshotError
from earshot.fsutil import atomic_open
from earshot.model.dual import JointModel

FEATURES_VERSION = 1


@dataclass
class BackboneFeatures:
    """The frozen backbone's outputs for every window of a split."""

    features: np.ndarray  # (windows, head inputs) float32: what the audio head reads
    logits: np.ndarray  # (windows, n_tags) float32
    window_clip: np.ndarray  # (windows,) clip index of each window


def features_folder(model: JointModel, cache_dir: str | Path, backbone_id: str) -> Path:
    """Where one backbone's per-clip outputs are cached: keyed by everything they depend on
    but the audio (the frontend settings, the encoder, the backbone's hash, the head input)."""
    key = hashlib.sha256(
        json.dumps(
            [
                FEATURES_VERSION,
                model.config.audio.__dict__,
                model.config.encoder.name,
                backbone_id,
                reads_tags(model),
            ]
            # pool_max and tag_power change what is cached; named only when they differ from
            # their defaults, so older caches still hold
            + (["pool_max"] if getattr(model.config.encoder, "pool_max", False) else [])
            + _tag_power_key(model),
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    return Path(cache_dir) / f"backbone-{key}"


def _tag_power_key(model: JointModel) -> list:
    power = float(getattr(model.config.encoder, "tag_power", 2.0))
    return [["tag_power", power]] if reads_tags(model) and power != 2.0 else []


def _clip_file(folder: Path, path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return folder / key[:2] / f"{key}.npz"


@torch.no_grad()
def backbone_features(
    model: JointModel,
    dataset: CaptionDataset,
    cache_dir: str | Path,
    backbone_id: str,
    batch_size: int = 16,
    progress: bool = True,
) -> BackboneFeatures:
    """Every window of every clip through the frontend and the frozen encoder, once.

    Cached per clip (a file's path, size and mtime) under `features_folder`, so a new split of
    the same audio costs nothing and a killed run keeps every clip it finished; each clip's
    file lands whole (write, then rename)."""
    folder = features_folder(model, cache_dir, backbone_id)
    model.eval()
    per_clip: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    todo = []
    for i, clip in enumerate(dataset.clips):
        target = _clip_file(folder, clip.path)
        if target.is_file():
            with np.load(target) as z:
                per_clip[i] = (z["features"], z["logits"])
        else:
            todo.append(i)
    pending: list[np.ndarray] = []
    owners: list[int] = []
    done: dict[int, list] = {}
    remaining: dict[int, int] = {}

    def flush() -> None:
        f, lg = model.audio_features(model.frontend(torch.from_numpy(np.stack(pending))))
        if lg is None:  # an encoder without tags (a student's): no logits, zero columns
            lg = torch.zeros(len(f), 0)
        for row, i in enumerate(owners):
            done[i][0].append(f[row].numpy())
            done[i][1].append(lg[row].numpy())
            remaining[i] -= 1
            if remaining[i] == 0:
                _finish(i)
        pending.clear()
        owners.clear()

    def _finish(i: int) -> None:
        feats = np.stack(done[i][0]).astype(np.float32)
        logits = np.stack(done[i][1]).astype(np.float32)
        per_clip[i] = (feats, logits)
        target = _clip_file(folder, dataset.clips[i].path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target) as f:
            np.savez(f, features=feats, logits=logits)
        del done[i]

    bar = _bar(len(todo), f"backbone {dataset.split}", progress and bool(todo))
    failed = 0
    for i in todo:
        try:
            windows = [w.samples for w in window_file(dataset.clips[i].path, model.config.audio)]
        except AudioDecodeError:
            failed += 1
            windows = []
        if windows:
            done[i] = ([], [])
            remaining[i] = len(windows)
            for w in windows:
                pending.append(w)
                owners.append(i)
                if len(pending) == batch_size:
                    flush()
        bar.update(1)
    if pending:
        flush()
    bar.close()
    if failed:
        print(f"backbone {dataset.split}: {failed} clip(s) could not be decoded", file=sys.stderr)
    order = sorted(per_clip)
    if not order:
        raise EarshotError(f"no clip of split '{dataset.split}' could be decoded")
    return BackboneFeatures(
        np.concatenate([per_clip[i][0] for i in order]),
        np.concatenate([per_clip[i][1] for i in order]),
        np.concatenate([np.full(len(per_clip[i][0]), i, dtype=np.int64) for i in order]),
    )


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, file=sys.stderr)


def reads_tags(model: JointModel) -> bool:
    """Whether the model's audio head reads the tag probabilities beside the embedding."""
    return bool(getattr(model.config.encoder, "head_tags", False))
