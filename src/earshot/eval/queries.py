"""Scoring with held-out query sets: paraphrases per label, never seen in training.

Two figures, both on clips scored by their best window (as search scores files):
- text→audio retrieval, multi-relevant form: each query once, relevant = every clip of its
  label; R@k, mAP@10 with bootstrap CIs over queries;
- class-prompt accuracy: each clip is given the label whose prompt is most similar, where a
  label's prompt is the normalised mean of its queries' vectors (prompt ensembling, as CLIP
  does for zero-shot classification), and at top-5 (its label among the 5 best prompts); CI
  by bootstrap over clips.

Those CIs hold the clips fixed (or treat them as independent). Clips cut from one recording are
not independent, and a test split with a handful of recordings per class is a small sample of
recordings, not of clips: given each clip's recording, a second pair of CIs resamples whole
recordings (and, for mAP@10, queries as well), under "recordings resampled".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from earshot.data.cache import FeatureStore
from earshot.data.datasets import CaptionDataset
from earshot.eval.evaluate import clip_scores, window_embeddings
from earshot.eval.examples import example_report
from earshot.eval.metrics import (
    bootstrap_ci,
    per_query_metrics,
    retrieval_report,
)
from earshot.eval.recordings import cluster_bootstrap_ci, two_way_bootstrap_map_ci
from earshot.model.dual import JointModel

# Class-prompt accuracy is also given at top-k: the clip's label among its k best prompts.
TOP_K = 5


def query_report(
    query_vectors: np.ndarray,
    query_labels: Sequence[str],
    window_vectors: np.ndarray,
    window_clip: np.ndarray,
    clip_labels: Sequence[str],
    clip_groups: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    clip_recordings: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The metrics above from vectors: pure numpy, so tests can feed known geometry.

    `clip_groups` name each clip's source (figures per source); `clip_recordings` the recording
    each clip was cut from (CIs that resample recordings).
    """
    clip_labels = np.array(clip_labels, dtype=object)
    query_labels = np.array(query_labels, dtype=object)
    n_clips = len(clip_labels)
    scores = clip_scores(query_vectors, window_vectors, window_clip, n_clips)
    usable = np.isfinite(scores).all(axis=0)  # clips with at least one window
    scores, clip_labels = scores[:, usable], clip_labels[usable]
    relevance = query_labels[:, None] == clip_labels[None, :]
    has_relevant = relevance.any(axis=1)
    scores, relevance, query_labels = (
        scores[has_relevant],
        relevance[has_relevant],
        query_labels[has_relevant],
    )
    t2a = retrieval_report(scores, relevance=relevance, seed=seed, n_boot=n_boot)
    chance = per_query_metrics(
        np.random.default_rng(seed).random(scores.shape, dtype=np.float32), relevance=relevance
    )["mAP@10"].mean()
    per_query = per_query_metrics(scores, relevance=relevance)["mAP@10"]

    # Class prompts: one vector per label, the mean of its queries' (unit) vectors.
    labels = sorted(set(query_labels))
    prompts = np.stack([query_vectors[has_relevant][query_labels == lab].mean(0) for lab in labels])
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    prompt_scores = clip_scores(prompts, window_vectors, window_clip, n_clips)[:, usable]
    known = np.isin(clip_labels, labels)
    predicted = np.array(labels, dtype=object)[prompt_scores.argmax(axis=0)]
    correct = (predicted == clip_labels)[known].astype(np.float64)
    lo, hi = bootstrap_ci(correct, n_boot, seed)
    # Top-k: the clip's own label among its TOP_K most similar prompts (a tie keeps it in).
    own = np.searchsorted(labels, clip_labels[known].astype(str))
    own_score = prompt_scores[:, known][own, np.arange(int(known.sum()))]
    in_top = ((prompt_scores[:, known] > own_score).sum(axis=0) < TOP_K).astype(np.float64)
    report: dict[str, Any] = {
        "queries": len(query_labels),
        "clips": int(usable.sum()),
        "labels": len(labels),
        "chance_mAP@10": round(float(chance), 4),
        "text_to_audio": {"direction": "held-out queries → clips", **t2a},
        "class_prompts": {
            "accuracy": {"value": float(correct.mean()), "ci95": [lo, hi]},
            "chance_accuracy": round(1 / len(labels), 4),
            f"top{TOP_K}_accuracy": {
                "value": float(in_top.mean()),
                "ci95": list(bootstrap_ci(in_top, n_boot, seed)),
            },
            f"chance_top{TOP_K}_accuracy": round(min(1.0, TOP_K / len(labels)), 4),
            "clips": int(known.sum()),
        },
        "mAP@10_by_label": {
            lab: round(float(per_query[query_labels == lab].mean()), 4) for lab in labels
        },
        "accuracy_by_label": {
            lab: round(float(correct[clip_labels[known] == lab].mean()), 4)
            for lab in labels
            if (clip_labels[known] == lab).any()
        },
    }
    recordings = None
    if clip_recordings is not None:
        recordings = np.array(clip_recordings, dtype=object)[usable]
        report["recordings resampled"] = _recording_cis(
            scores, relevance, per_query, correct, recordings, recordings[known], n_boot, seed
        )
    if clip_groups is not None:
        groups = np.array(clip_groups, dtype=object)[usable]
        label_group = {lab: g for lab, g in zip(clip_labels, groups, strict=True)}
        for g in sorted(set(groups)):
            mine = np.array([label_group.get(q) == g for q in query_labels])
            acc, top = correct[groups[known] == g], in_top[groups[known] == g]
            if mine.any():
                report[f"source {g}"] = {
                    "mAP@10": {
                        "value": float(per_query[mine].mean()),
                        "ci95": list(bootstrap_ci(per_query[mine], n_boot, seed)),
                    },
                    "class_prompt_accuracy": {
                        "value": float(acc.mean()),
                        "ci95": list(bootstrap_ci(acc, n_boot, seed)),
                    },
                    f"class_prompt_top{TOP_K}_accuracy": {
                        "value": float(top.mean()),
                        "ci95": list(bootstrap_ci(top, n_boot, seed)),
                    },
                }
                if recordings is not None:
                    report[f"source {g}"]["recordings resampled"] = _recording_cis(
                        scores[mine],
                        relevance[mine],
                        per_query[mine],
                        acc,
                        recordings,
                        recordings[known][groups[known] == g],
                        n_boot,
                        seed,
                    )
    return report


def _recording_cis(
    scores: np.ndarray,
    relevance: np.ndarray,
    per_query: np.ndarray,
    correct: np.ndarray,
    item_recordings: np.ndarray,
    correct_recordings: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """mAP@10 and class-prompt accuracy with CIs that resample recordings (see the top)."""
    map_ci = two_way_bootstrap_map_ci(scores, relevance, item_recordings, n_boot, seed)
    return {
        "recordings": len(set(correct_recordings)),
        "mAP@10": {"value": float(per_query.mean()), "ci95": list(map_ci)},
        "class_prompt_accuracy": {
            "value": float(correct.mean()),
            "ci95": list(cluster_bootstrap_ci(correct, correct_recordings, n_boot, seed)),
        },
    }


@torch.no_grad()
def evaluate_queries(
    model: JointModel,
    dataset: CaptionDataset,
    store: FeatureStore,
    queries: Mapping[str, Sequence[str]],
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 1000,
    windows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Held-out queries (label → sentences) against a labelled split's clips.

    `windows` are `window_embeddings(model, store)` when the caller has them already.
    """
    texts = [q for qs in queries.values() for q in qs]
    query_labels = [lab for lab, qs in queries.items() for _ in qs]
    vectors = model.encode_text(texts).float().numpy()
    if windows is None:
        windows = window_embeddings(model, store, batch_size)
    groups = [clip.key.split("/", 1)[0] for clip in dataset.clips]
    labels = [clip.label for clip in dataset.clips]
    recordings = [clip.recording or clip.key for clip in dataset.clips]
    report = query_report(
        vectors,
        query_labels,
        windows,
        store.window_clip,
        labels,
        clip_groups=groups,
        seed=seed,
        n_boot=n_boot,
        clip_recordings=recordings,
    )
    with contextlib.suppress(ValueError):  # every label from one recording: nothing to find
        report["search_by_example"] = example_report(
            windows, store.window_clip, labels, recordings, groups, seed, n_boot
        )
    return report
