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
the id), tensors of a dtype loading would convert, a text model the lean encoder does not run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from earshot.config import ModelConfig
from earshot.errors import ModelLoadError

# safetensors dtype → how torch names it: the dtypes a JointModel's state dict holds (float32
# weights and buffers, int64 BatchNorm counters). Loading converts any other into one of these,
# so a file holding another would hash differently from the loaded model: not taken here.
_TORCH_DTYPES = {"F32": "torch.float32", "I64": "torch.int64"}


class QueryModelUnavailable(ModelLoadError):
    """This folder's text search needs the full (torch) model; the message says why."""


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
        self.text_head_weight, self.text_head_bias = head  # (joint_dim, text_dim), (joint_dim,)
        self.text_encoder = text_encoder
        self.source = source

    def encode_text(self, sentences: Sequence[str], batch_size: int = 32) -> QueryVectors:
        """Sentences → (n, joint_dim) float32 unit vectors, as `JointModel.encode_text`."""
        features = self.text_encoder.embed(list(sentences), batch_size)
        projected = features @ self.text_head_weight.T + self.text_head_bias
        norms = np.sqrt((projected * projected).sum(axis=1, keepdims=True))
        vectors = projected / np.maximum(norms, np.float32(1e-12))
        return vectors.astype(np.float32, copy=False).view(QueryVectors)


def load_query_model(directory: str | Path) -> QueryModel:
    """The folder (or `default`, `compact`, `general`) as a `QueryModel`; `QueryModelUnavailable`
    where only `load_model` can answer for it, `ModelLoadError` for a folder that is broken."""
    from earshot.encoders.lean_text import LeanTextEncoder, LeanUnsupported, safetensors_entries
    from earshot.encoders.text import resolve_text_model
    from earshot.model.io import WEIGHTS_FILE, read_config, resolve_model_dir
    from earshot.model.pretrained import has_backbone

    directory = resolve_model_dir(directory)
    config = read_config(directory)
    if has_backbone(config):
        raise QueryModelUnavailable(
            f"'{directory}' is a model on a named backbone, whose weights (a torch checkpoint) "
            "are part of its id"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"'{directory}' has no {WEIGHTS_FILE}")
    try:
        data, entries = safetensors_entries(weights)
    except LeanUnsupported as e:
        raise QueryModelUnavailable(str(e)) from None
    odd = sorted(name for name, (code, *_) in entries.items() if code not in _TORCH_DTYPES)
    if odd:
        raise QueryModelUnavailable(f"'{weights}' holds tensors loading would convert ({odd[0]})")

    # earshot.hashing.state_dict_hash over the tensors load_model would load, from their bytes.
    prefix = json.dumps(config.to_dict(), sort_keys=True).encode()
    h = hashlib.sha256(prefix)
    for name in sorted(entries):
        code, shape, start, end = entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        h.update(f"\0{name}\0{_TORCH_DTYPES[code]}\0{(count,)}\0".encode())
        h.update(data[start:end])
    model_id = h.hexdigest()[:16]

    head = []
    for name, shape in (
        ("text_head.weight", (config.joint_dim, config.text.dim)),
        ("text_head.bias", (config.joint_dim,)),
    ):
        entry = entries.get(name)
        if entry is None or entry[0] != "F32" or entry[1] != shape:
            raise QueryModelUnavailable(f"'{weights}' has no {name} of shape {shape}")
        head.append(np.frombuffer(data, np.float32, int(np.prod(shape)), entry[2]).reshape(shape))

    target = resolve_text_model(config.text.model, base_dir=directory)
    if not Path(target).is_dir():
        raise QueryModelUnavailable(f"text model '{config.text.model}' is not a local folder")
    try:
        text = LeanTextEncoder(target, config.text.model)
    except LeanUnsupported as e:
        raise QueryModelUnavailable(str(e)) from None
    if text.dim != config.text.dim:
        raise ModelLoadError(
            f"text model '{config.text.model}' gives {text.dim}-d vectors, this model's text "
            f"head takes {config.text.dim}-d"
        )
    return QueryModel(config, model_id, tuple(head), text, str(directory.resolve()))
