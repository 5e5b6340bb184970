"""Sentence vectors for search queries with NumPy and `tokenizers` alone: no torch, no
sentence-transformers, no transformers.

`earshot search "a dog barks"` from a shell spent ~7 s importing sentence-transformers and torch
to encode one sentence. This module runs the same model, a BERT sentence-transformers folder
(the packaged all-MiniLM-L6-v2 by default), from that folder's own files, read in place:
`model.safetensors` (memory-mapped), `tokenizer.json`, `config.json`, `modules.json` and the
pooling config. It computes what sentence-transformers computes for that pipeline:

    tokenizer.json, truncated to the model's max_seq_length, padded to the longest in the batch
    → BERT (embeddings + LayerNorm, N post-norm layers: self-attention, exact-erf GELU FFN)
    → mean of the token vectors under the attention mask → L2 normalisation (if modules.json
      has a Normalize module)

within ~1e-6 of sentence-transformers on the same sentences (tests/test_lean_text.py). A
folder it cannot reproduce exactly (another architecture, pooling, a Dense layer, prompts, a
tokenizer whose config disagrees with its tokenizer.json, ...) raises `LeanUnsupported`, and
the caller uses sentence-transformers instead: `lean_problem(folder)` says why (the folder's
checks are `encoders/lean_pipeline.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import struct
from pathlib import Path

import numpy as np

from earshot.encoders.lean_pipeline import lean_problem, read_pipeline
from earshot.errors import LeanUnsupported

_DTYPES = {"F32": np.float32, "I64": np.int64}


def safetensors_entries(
    path: str | Path,
) -> tuple[mmap.mmap, dict[str, tuple[str, tuple, int, int]]]:
    """A .safetensors file memory-mapped, and its tensors: name → (dtype code, shape, start,
    end), offsets into the map. Nothing is read until used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise LeanUnsupported(f"cannot read '{path}': {e}") from None
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        entries = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = (8 + n + int(o) for o in info["data_offsets"])
            if not 8 + n <= start <= end <= len(data):
                raise ValueError(f"tensor {name} lies outside the file")
            entries[name] = (str(info["dtype"]), tuple(int(d) for d in info["shape"]), start, end)
    except (struct.error, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise LeanUnsupported(f"'{path}' is not a readable safetensors file: {e}") from None
    return data, entries


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a read-only NumPy view of the memory-mapped file:
    nothing is read until used (a query touches a few rows of MiniLM's 47 MB token table)."""
    data, entries = safetensors_entries(path)
    out = {}
    for name, (code, shape, start, end) in entries.items():
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise LeanUnsupported(f"'{path}': tensor {name} has dtype {code}")
        count = int(np.prod(shape, dtype=np.int64))
        if end - start != count * np.dtype(dtype).itemsize:
            raise LeanUnsupported(f"'{path}': tensor {name} does not fit its header")
        if count == 0:
            out[name] = np.zeros(shape, dtype=dtype)
            continue
        out[name] = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    """x·Φ(x), the exact (erf) GELU BERT uses, to float32 precision: Φ from the erfc
    approximation of Numerical Recipes §6.2 (relative error < 1.2e-7 everywhere), so the tails
    are as exact as the middle. NumPy has no erf, and scipy's import costs more than this."""
    z = np.abs(x)
    z *= np.float32(1 / np.sqrt(2))
    t = z * np.float32(0.5)
    t += np.float32(1)
    np.reciprocal(t, out=t)
    poly = t * np.float32(_ERFC[0])
    for c in _ERFC[1:-1]:
        poly += np.float32(c)
        poly *= t
    poly += np.float32(_ERFC[-1])
    z *= z
    poly -= z
    np.exp(poly, out=poly)
    poly *= t
    poly *= np.float32(0.5)  # Φ(-|x|) = erfc(|x|/√2) / 2
    phi = np.where(x >= 0, np.float32(1) - poly, poly)
    phi *= x
    return phi


# erfc(z) ≈ t·exp(-z² + P(t)), t = 1/(1 + z/2): P's coefficients, highest power first.
_ERFC = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


class LeanTextEncoder:
    """Sentences → (n, dim) float32 vectors, as sentence-transformers gives for the folder.

    Stands in for `earshot.encoders.text.TextEncoder` where sentences are only encoded (search
    queries): `encode` returns a torch tensor like it, `embed` a NumPy array without torch.
    """

    def __init__(self, folder: str | Path, name: str | None = None, threads: int | None = 1):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.name = name or str(folder)
        # BLAS threads while encoding (None: the BLAS library's default). One: a query is a few
        # small matrices, and OpenBLAS workers spinning on a busy 2-core machine turned a 25 ms
        # query into 1.3 s.
        self.threads = threads
        spec = read_pipeline(self.folder)
        self.normalize = spec["normalize"]
        self.max_length = spec["max_length"]
        c = spec["config"]
        self.heads = int(c["num_attention_heads"])
        self.eps = float(c["layer_norm_eps"])
        self.hidden = int(c["hidden_size"])
        self.layers = int(c["num_hidden_layers"])
        if self.hidden % self.heads:
            raise LeanUnsupported(f"'{folder}': hidden_size is not a multiple of the head count")
        self.w = _weights(self.folder / "model.safetensors", self.layers)
        if self.w["embeddings.word_embeddings.weight"].shape[1] != self.hidden:
            raise LeanUnsupported(f"'{folder}': the weights do not match config.json")
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises its own Exception type
            raise LeanUnsupported(f"cannot read '{self.folder / 'tokenizer.json'}': {e}") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        self.pad_id = spec["pad_id"]

    @property
    def dim(self) -> int:
        return self.hidden

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def tokenize(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, (n, longest) int64 each, padded on the right."""
        return self._pad(self.tokenizer.encode_batch(list(sentences)))

    def _pad(self, encodings: list) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    def embed(self, sentences: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, dim) float32 sentence vectors; batches of similar length, like
        sentence-transformers, so a long sentence does not pad the short ones."""
        if isinstance(sentences, str):
            raise TypeError("embed() takes a list of sentences, not one string")
        sentences = [str(s) for s in sentences]
        out = np.zeros((len(sentences), self.hidden), dtype=np.float32)
        if not sentences:
            return out
        encodings = self.tokenizer.encode_batch(sentences)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        with _blas_threads(self.threads):
            for i in range(0, len(order), batch_size):
                chunk = order[i : i + batch_size]
                out[chunk] = self._forward(*self._pad([encodings[j] for j in chunk]))
        return out

    def encode(self, sentences: list[str], batch_size: int = 32):
        """`embed` as a torch tensor: what `JointModel.encode_text` takes from a text encoder."""
        import torch

        if isinstance(sentences, str):
            raise TypeError("encode() takes a list of sentences, not one string")
        return torch.from_numpy(self.embed(list(sentences), batch_size))

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, n, length = self.w, ids.shape[0], ids.shape[1]
        heads, head_dim = self.heads, self.hidden // self.heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][None, :length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        x = x.reshape(n * length, self.hidden)  # every linear layer on one 2-D matrix
        # Padded keys get the most negative float: their attention weight is exactly 0.
        key_bias = np.where(mask[:, None, None, :] > 0, 0, np.finfo(np.float32).min)
        key_bias = key_bias.astype(np.float32)
        scale = np.float32(1 / np.sqrt(head_dim))

        def linear(h: np.ndarray, prefix: str) -> np.ndarray:
            return h @ w[prefix + ".weight"].T + w[prefix + ".bias"]

        def split(h: np.ndarray) -> np.ndarray:  # (n·L, hidden) → (n, heads, L, head_dim)
            return h.reshape(n, length, heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(linear(x, p + "attention.self.query"))
            k = split(linear(x, p + "attention.self.key"))
            v = split(linear(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            a = linear(context, p + "attention.output.dense") + x
            x = _layer_norm(
                a,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            h = _gelu(linear(x, p + "intermediate.dense"))
            o = linear(h, p + "output.dense") + x
            x = _layer_norm(
                o, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps
            )
        tokens = x.reshape(n, length, self.hidden)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), np.float32(1e-9))
        if self.normalize:  # torch.nn.functional.normalize: v / max(‖v‖, 1e-12)
            norms = np.sqrt((pooled * pooled).sum(axis=1, keepdims=True))
            pooled = pooled / np.maximum(norms, np.float32(1e-12))
        return pooled.astype(np.float32, copy=False)


@contextlib.contextmanager
def _blas_threads(n: int | None):
    if n is None:
        yield
        return
    with _blas_controller().limit(limits=n, user_api="blas"):
        yield


@functools.cache
def _blas_controller():
    # Made once (it inspects the loaded libraries: ~7 ms); NumPy's BLAS is loaded by then.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _weights(path: Path, layers: int) -> dict[str, np.ndarray]:
    """The BERT tensors by their BertModel names (a `bert.` prefix, as BertFor* saves them, is
    dropped), float32; a missing one is `LeanUnsupported`."""
    raw = read_safetensors(path)
    if not any(k.startswith("embeddings.") for k in raw):
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
    names = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            names += [p + part + ".weight", p + part + ".bias"]
    missing = [k for k in names if k not in raw]
    if missing:
        raise LeanUnsupported(f"'{path}' lacks BERT tensors ({', '.join(missing[:3])}, ...)")
    odd = [k for k in names if raw[k].dtype != np.float32]
    if odd:
        raise LeanUnsupported(f"'{path}': {odd[0]} is not float32")
    return {k: raw[k] for k in names}


__all__ = [
    "LeanTextEncoder",
    "LeanUnsupported",
    "lean_problem",
    "read_safetensors",
    "safetensors_entries",
]
