"""Search by example, scored: each labelled clip is dropped in as the example, as a user drops a
file on the page, and the other clips are ranked by it.

The example's vector is what `Searcher.embed_samples` makes of a file: the normalised mean of
its windows' vectors; every other clip is scored by its best window (as search scores files).
Clips cut from the example's own recording are left out of its ranking (a user holding the
recording is not searching for it, and its other cuts would be easy hits); relevant = every
clip of the same label from another recording. Examples with no relevant clip are not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from earshot.eval.evaluate import clip_scores
from earshot.eval.metrics import bootstrap_ci, per_query_metrics, retrieval_report
from earshot.eval.recordings import two_way_bootstrap_map_ci


def example_vectors(window_vectors: np.ndarray, window_clip: np.ndarray, n_clips: int):
    """(n_clips, d): each clip's windows averaged and normalised (zero rows: no windows)."""
    sums = np.zeros((n_clips, window_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, window_clip, window_vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def example_report(
    window_vectors: np.ndarray,
    window_clip: np.ndarray,
    clip_labels: Sequence[str],
    clip_recordings: Sequence[str],
    clip_groups: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    examples: np.ndarray | None = None,
) -> dict[str, Any]:
    """R@k and mAP@10 of search by example (see the top), with CIs over examples and, under
    "recordings resampled", over recordings; `clip_groups`: mAP@10 per source as well.
    `examples`: (n_clips, d) vectors searched for instead of `example_vectors` (a variant of
    how an example is embedded, scored the same way)."""
    labels = np.array(clip_labels, dtype=object)
    recordings = np.array(clip_recordings, dtype=object)
    n = len(labels)
    usable = np.bincount(window_clip, minlength=n) > 0
    if examples is None:
        examples = example_vectors(window_vectors, window_clip, n)
    scores = clip_scores(examples, window_vectors, window_clip, n)
    own = recordings[:, None] == recordings[None, :]
    scores[own] = -np.inf  # the example's own recording is not searched for
    relevance = (labels[:, None] == labels[None, :]) & ~own & usable[None, :]
    asked = usable & relevance.any(axis=1)
    if not asked.any():
        raise ValueError(
            "no clip has a clip of its label from another recording: search by example "
            "cannot be scored on this split"
        )
    scores, relevance = scores[asked][:, usable], relevance[asked][:, usable]
    report = retrieval_report(scores, relevance=relevance, seed=seed, n_boot=n_boot)
    per_query = per_query_metrics(scores, relevance=relevance)["mAP@10"]
    chance = per_query_metrics(
        np.where(np.isfinite(scores), np.random.default_rng(seed).random(scores.shape), -np.inf),
        relevance=relevance,
    )["mAP@10"].mean()
    out: dict[str, Any] = {
        "direction": "each clip as the example → the clips of other recordings",
        "examples": int(asked.sum()),
        "chance_mAP@10": round(float(chance), 4),
        **report,
        "recordings resampled": {
            "recordings": len(set(recordings[asked])),
            "mAP@10": {
                "value": float(per_query.mean()),
                "ci95": list(
                    two_way_bootstrap_map_ci(scores, relevance, recordings[usable], n_boot, seed)
                ),
            },
        },
    }
    if clip_groups is not None:
        groups = np.array(clip_groups, dtype=object)[asked]
        for g in sorted(set(groups)):
            mine = per_query[groups == g]
            ci = list(bootstrap_ci(mine, n_boot, seed))
            out[f"source {g}"] = {
                "examples": len(mine),
                "mAP@10": {"value": float(mine.mean()), "ci95": ci},
            }
    return out
