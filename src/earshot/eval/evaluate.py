"""Embed a dataset split and score retrieval both ways, as search ranks files.

Clips are embedded window by window (10 s windows, hop 5 s, from the feature cache) and a clip
scores a query by its best window — the same rule `earshot search` uses for files — so the
metrics describe the engine users run, not a different pooling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from earshot.data.cache import FeatureStore
from earshot.data.datasets import CaptionDataset
from earshot.eval.metrics import per_query_metrics, retrieval_report
from earshot.model.dual import JointModel


@torch.no_grad()
def window_embeddings(
    model: JointModel, store: FeatureStore, batch_size: int = 32, precision: str = "fp32"
) -> np.ndarray:
    """(n_windows, joint_dim) unit vectors for every cached window."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(store), batch_size):
            logmel = store.logmel(np.arange(i, min(i + batch_size, len(store)))).to(device)
            out.append(model.embed_logmel(logmel, precision).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.config.joint_dim), dtype=np.float32)
    return np.concatenate(out)


def clip_scores(
    queries: np.ndarray, windows: np.ndarray, window_clip: np.ndarray, n_clips: int
) -> np.ndarray:
    """(q, d) queries x (w, d) windows → (q, n_clips): each clip's best window score."""
    sims = queries @ windows.T  # (q, w)
    scores = np.full((len(queries), n_clips), -np.inf, dtype=np.float32)
    np.maximum.at(scores.T, window_clip, sims.T)  # scores.T[clip] = max over its windows
    return scores


def evaluate_split(
    model: JointModel,
    dataset: CaptionDataset,
    store: FeatureStore,
    text_features: np.ndarray | None = None,
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 1000,
    windows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Text→audio and audio→text metrics with 95% CIs for one split.

    `text_features` (n_captions, text_dim) are sentence embeddings in `dataset.captions()` order
    (from the text cache during training); without them the model's text encoder runs.
    `windows` are `window_embeddings(model, store)` when the caller has them already.
    Clips that could not be decoded are left out and counted.
    """
    pairs = dataset.captions()
    texts = [c for c, _ in pairs]
    caption_clip = np.array([i for _, i in pairs])
    usable = np.array([len(w) > 0 for w in store.clip_windows])
    if text_features is None:
        text_vectors = model.encode_text(texts).numpy()
    else:
        with torch.no_grad():
            device = model.text_head.weight.device
            feats = torch.as_tensor(text_features, dtype=torch.float32, device=device)
            text_vectors = model.project_text(feats).float().cpu().numpy()
    if windows is None:
        windows = window_embeddings(model, store, batch_size)
    scores = clip_scores(text_vectors, windows, store.window_clip, len(dataset))

    keep_clips = np.flatnonzero(usable)
    keep_caps = np.flatnonzero(usable[caption_clip])
    scores = scores[np.ix_(keep_caps, keep_clips)]
    new_index = np.full(len(dataset), -1)
    new_index[keep_clips] = np.arange(len(keep_clips))
    caption_clip = new_index[caption_clip[keep_caps]]

    # The same relevance scored by seeded random similarities: what mAP@10 means by chance here.
    random_scores = np.random.default_rng(seed).random(scores.shape, dtype=np.float32)
    labels = dataset.labels
    if all(label is not None for label in labels):
        # Label sets: a caption is relevant to every clip of its label, and vice versa.
        lab = np.array(labels, dtype=object)[keep_clips]
        relevance = lab[caption_clip][:, None] == lab[None, :]  # (captions, clips)
        t2a = retrieval_report(scores, relevance=relevance, seed=seed, n_boot=n_boot)
        chance = per_query_metrics(random_scores, relevance=relevance)["mAP@10"].mean()
        a2t = retrieval_report(scores.T, relevance=relevance.T, seed=seed, n_boot=n_boot)
        form = "multi-relevant (by label)"
    else:
        t2a = retrieval_report(scores, targets=caption_clip, seed=seed, n_boot=n_boot)
        chance = per_query_metrics(random_scores, targets=caption_clip)["mAP@10"].mean()
        relevance = np.zeros((len(keep_clips), len(caption_clip)), dtype=bool)
        relevance[caption_clip, np.arange(len(caption_clip))] = True
        a2t = retrieval_report(scores.T, relevance=relevance, seed=seed, n_boot=n_boot)
        form = "single relevant clip per caption"
    return {
        "split": dataset.split,
        "dataset": dataset.name,
        "clips": len(keep_clips),
        "captions": len(keep_caps),
        "undecodable_clips": int((~usable).sum()),
        "relevance": form,
        "chance_text_to_audio_mAP@10": round(float(chance), 4),
        "text_to_audio": {"direction": "text→audio", **t2a},
        "audio_to_text": {"direction": "audio→text", **a2t},
    }
