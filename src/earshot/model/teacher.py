"""The teacher space: a tagging backbone's 527 classes, read as sentences.

A window's teacher vector is Σ_c p(c | window)^k · s(c), where p are the backbone's tag
probabilities, k the encoder's `tag_power` (2 by default) and s(c) the sentence encoder's unit
vector of "the sound of <class name>"; a query's is the sentence encoder's vector of the query.
Squaring the probabilities lets the confident tags speak and quietens the long tail of small
ones; k = 1 keeps more of that tail. With no training at all this ranks everyday sounds far
better than a model trained on a few labelled sets, and it is where the general model's heads
start (`init_teacher_heads`): the audio head reads p^k, so the teacher space is exactly a
linear head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from earshot.model.dual import JointModel

TEMPLATE = "the sound of {}"


def tag_sentences(tag_names: Sequence[str]) -> list[str]:
    """AudioSet display names ("Male speech, man speaking") → "the sound of male speech, ..."."""
    return [TEMPLATE.format(name.strip().lower()) for name in tag_names]


@torch.no_grad()
def teacher_matrix(model: JointModel) -> torch.Tensor:
    """(n_tags, text_dim) unit sentence vectors of the model's tag names."""
    if not model.tag_names:
        raise ValueError("the teacher space needs a model with tag names (a tagging backbone)")
    vectors = model.text_encoder.encode(tag_sentences(model.tag_names))
    return F.normalize(vectors.float(), dim=-1)


def pca_basis(vectors: np.ndarray, k: int) -> np.ndarray:
    """(k, d) orthonormal rows: the top-k right singular vectors of the (uncentred) vectors,
    so that projecting unit sentence vectors keeps as much of their length as k dims can."""
    if k > vectors.shape[1]:
        raise ValueError(f"cannot keep {k} of {vectors.shape[1]} dimensions")
    _, _, vt = np.linalg.svd(np.asarray(vectors, dtype=np.float64), full_matrices=False)
    if vt.shape[0] < k:
        raise ValueError(f"need at least {k} vectors for a {k}-d basis, got {vt.shape[0]}")
    return vt[:k].astype(np.float32)


@torch.no_grad()
def init_teacher_heads(
    model: JointModel, teacher: torch.Tensor, basis: np.ndarray | torch.Tensor | None = None
) -> None:
    """Set both heads so the model computes the teacher space, projected by `basis`
    (joint_dim, text_dim); None = identity (joint_dim must equal text_dim)."""
    cfg = model.config
    if not getattr(cfg.encoder, "head_tags", False):
        raise ValueError("the audio head must read the tag probabilities (encoder.head_tags)")
    n_tags, text_dim = teacher.shape
    if basis is None:
        if cfg.joint_dim != text_dim:
            raise ValueError(f"identity basis needs joint_dim == {text_dim}, not {cfg.joint_dim}")
        basis = torch.eye(text_dim)
    basis = torch.as_tensor(basis, dtype=torch.float32)
    if tuple(basis.shape) != (cfg.joint_dim, text_dim):
        raise ValueError(f"basis must be ({cfg.joint_dim}, {text_dim}), got {tuple(basis.shape)}")
    model.text_head.weight.copy_(basis)
    model.text_head.bias.zero_()
    w = torch.zeros_like(model.audio_head.weight)  # (joint_dim, embed_dim + n_tags)
    w[:, -n_tags:] = basis @ teacher.T
    model.audio_head.weight.copy_(w)
    model.audio_head.bias.zero_()
