"""Content hashes of weights: model ids and cache keys depend on what a model computes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_dict_hash(state: Mapping[str, torch.Tensor], prefix: bytes = b"") -> str:
    """sha256 over `prefix` and every tensor's name, dtype, shape and bytes; 16 hex digits."""
    h = hashlib.sha256(prefix)
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
