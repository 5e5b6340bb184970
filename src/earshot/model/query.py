"""A model folder as a text search needs it, without torch: config, id, text head, sentences.

A text query against a catalogue is one sentence through the text encoder and the text head;
the catalogue holds the audio side already. `earshot search "a dog barks"` from a shell used to
import torch (~1 s on an idle 2-core machine, 6-7 s on a busy one) and sentence-transformers
(more) for that. `load_query_model` reads the folder instead: `config.json`, the text head
from `model.safetensors` (memory-mapped), and the sentence encoder through
`earshot.encoders.lean_text` (NumPy, tokenizers). What it gives equals what `load_model` gives:

- `model_id`: the content hash `earshot.model.io.model_id` computes from the loaded model's
  tensors, computed here from the same bytes in the file (name, dtype, flat shape, data);
- `encode_text`: the JointModel's query vectors, within ~1e-6 (tests/test_lean_text.py).

Where that cannot be promised it raises `QueryModelUnavailable`, saying why, and the caller
loads the JointModel: a model on a named backbone (its weights are a torch checkpoint, part of
the id), tensors of a dtype loading would convert, a text model the lean encoder does not run,
a CLAP model (config kind "clap": its text encoder is a transformer in its checkpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from earshot.config import ModelConfig
from earshot.errors import QueryModelUnavailable

# safetensors dtype → how torch names it: the dtypes a JointModel's state dict holds (float32
# weights and buffers, int64 BatchNorm counters). Loading converts any other into one of these,
# so a file holding another would hash differently from the loaded model: not taken here.
_TORCH_DTYPES = {"F32": "torch.float32", "I64": "torch.int64"}


class QueryVectors(np.ndarray):
    """Query vectors, a NumPy array with the `.numpy()` of the torch tensor that
    `JointModel.encode_text` returns: code written for the JointModel (Searcher, serve) takes a
    QueryModel unchanged."""

    def numpy(self) -> np.ndarray:
        return self.view(np.ndarray)


class QueryModel:
    """What `Searcher` uses of a model for text queries, tags and `--like-id`: `config`,
    `model_id`, `encode_text` (NumPy vectors) and `source`. No audio encoder."""

    def __init__(self, config: ModelConfig, model_id: str, head, text_encoder, source: str):
        self.config = config
        self.model_id = model_id
        # [(weight (head_dim, text_dim), bias (head_dim,), scale)]: one head, scale 1, or a
        # fused model's trained and start heads, each made unit length and scaled
        # (model/fusion.py), side by side.
        self.text_heads = list(head)
        self.text_encoder = text_encoder
        self.source = source

    def encode_text(self, sentences: Sequence[str], batch_size: int = 32) -> QueryVectors:
        """Sentences → (n, joint_dim) float32 unit vectors, as `JointModel.encode_text`."""
        features = self.text_encoder.embed(list(sentences), batch_size)
        parts = []
        for weight, bias, scale in self.text_heads:
            projected = features @ weight.T + bias
            norms = np.sqrt((projected * projected).sum(axis=1, keepdims=True))
            unit = projected / np.maximum(norms, np.float32(1e-12))
            parts.append(unit if scale == 1.0 else unit * np.float32(scale))
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return vectors.astype(np.float32, copy=False).view(QueryVectors)


def load_query_model(directory: str | Path) -> QueryModel:
    """The folder (or `default`, `general`, `offline`, `compact`) as a `QueryModel`;
    `QueryModelUnavailable` where only `load_model` can answer for it, `ModelLoadError` for a
    folder that is broken."""
    from earshot.encoders.lean_text import LeanTextEncoder, LeanUnsupported, safetensors_entries
    from earshot.encoders.text import resolve_text_model
    from earshot.model.io import model_files
    from earshot.model.pretrained import has_backbone

    directory, config, weights = model_files(directory)
    if weights is None:
        raise QueryModelUnavailable(
            f"'{directory}' is a CLAP model: its text side is the checkpoint's own transformer"
        )
    try:
        data, entries = safetensors_entries(weights)
    except LeanUnsupported as e:
        raise QueryModelUnavailable(str(e)) from None
    if has_backbone(config):
        model_id = recall_model_id(directory, config)
        if model_id is None:
            raise QueryModelUnavailable(
                f"'{directory}' is a model on a named backbone, whose id hashes the backbone's "
                "tensors (a torch checkpoint), and no load_model here has remembered it yet"
            )
    else:
        model_id = _file_model_id(config, data, entries, weights)

    if config.fusion:
        prefixes = [
            ("text_head.trained.", math.sqrt(1.0 - config.fusion)),
            ("text_head.start.", math.sqrt(config.fusion)),
        ]
    else:
        prefixes = [("text_head.", 1.0)]
    head = []
    for prefix, scale in prefixes:
        arrays = []
        for name, shape in (
            (prefix + "weight", (config.head_dim, config.text.dim)),
            (prefix + "bias", (config.head_dim,)),
        ):
            entry = entries.get(name)
            if entry is None or entry[0] != "F32" or entry[1] != shape:
                raise QueryModelUnavailable(f"'{weights}' has no {name} of shape {shape}")
            n = int(np.prod(shape))
            arrays.append(np.frombuffer(data, np.float32, n, entry[2]).reshape(shape))
        head.append((*arrays, scale))

    target = resolve_text_model(config.text.model, base_dir=directory)
    if not Path(target).is_dir():
        raise QueryModelUnavailable(f"text model '{config.text.model}' is not a local folder")
    try:
        text = LeanTextEncoder(target, config.text.model)
    except LeanUnsupported as e:
        raise QueryModelUnavailable(str(e)) from None
    if text.dim != config.text.dim:
        from earshot.errors import TextEncoderMismatchError

        raise TextEncoderMismatchError(
            f"text model '{config.text.model}' gives {text.dim}-d vectors, this model's text "
            f"head takes {config.text.dim}-d"
        )
    return QueryModel(config, model_id, tuple(head), text, str(directory.resolve()))


def _file_model_id(config: ModelConfig, data, entries: dict, weights: Path) -> str:
    """`earshot.model.io.model_id` of the model `load_model` would make of these weights:
    `earshot.hashing.state_dict_hash` over the same names, dtypes, shapes and bytes."""
    odd = sorted(name for name, (code, *_) in entries.items() if code not in _TORCH_DTYPES)
    if odd:
        raise QueryModelUnavailable(f"'{weights}' holds tensors loading would convert ({odd[0]})")
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name in sorted(entries):
        code, shape, start, end = entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        h.update(f"\0{name}\0{_TORCH_DTYPES[code]}\0{(count,)}\0".encode())
        h.update(data[start:end])
    return h.hexdigest()[:16]


# -- models on a named backbone: their ids, remembered ----------------------------------------
# Such a model's id hashes the backbone's tensors too, which only torch reads (from its
# checkpoint). `load_model` remembers each such id it computes, in the user cache
# (`$EARSHOT_CACHE_DIR/model-ids.json`), keyed by what the id depends on besides code: the
# folder's config.json, which pins every backbone file by sha256 (files that `load_model`
# checks before use), and its model.safetensors. A text search then reads the id back. A
# config naming an unpinned file is never remembered: its bytes are not fixed by the folder.
IDS_FILE = "model-ids.json"
IDS_KEPT = 64


def _ids_key(directory: Path, config: ModelConfig) -> str | None:
    from earshot.model.io import CONFIG_FILE, WEIGHTS_FILE

    refs = [getattr(config.encoder, name, None) for name in ("weights", "labels")]
    if any(ref is not None and not ref.pinned for ref in refs):
        return None
    h = hashlib.sha256(b"earshot model id\0")
    try:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            h.update((directory / name).read_bytes())
            h.update(b"\0")
    except OSError:
        return None
    return h.hexdigest()


def _ids_path() -> Path:
    from earshot.weights import cache_root

    return cache_root() / IDS_FILE


def _read_ids(path: Path) -> dict[str, str]:
    try:
        ids = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


def recall_model_id(directory: str | Path, config: ModelConfig) -> str | None:
    """The id `remember_model_id` stored for this folder as it is now, or None."""
    key = _ids_key(Path(directory), config)
    return None if key is None else _read_ids(_ids_path()).get(key)


def remember_model_id(directory: str | Path, config: ModelConfig, model_id: str) -> None:
    """Store the id of the model `load_model` made of this folder (the last IDS_KEPT folders);
    a cache that cannot be written only costs the next text search its speed."""
    from earshot.fsutil import atomic_open

    key = _ids_key(Path(directory), config)
    path = _ids_path()
    if key is None:
        return
    ids = _read_ids(path)
    if ids.get(key) == model_id:
        return
    ids.pop(key, None)
    ids[key] = model_id
    ids = dict(list(ids.items())[-IDS_KEPT:])
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as f:
            json.dump(ids, f, indent=1)
