"""Co-occurrence with held-out wording: two held-out clips mixed, found by two queries joined.

Training mixes clips of two `mix` labels and captions them jointly ("a siren wails while a dog
barks"); this measures whether that carries over to sounds and words never trained on:
- mixtures: for each pair of labels (a, b), `per_pair` mixtures of one test clip of each, the
  second 3 dB below the first (which label leads alternates), summed as powers in log-mel, as
  training mixes them; the first window of each clip;
- queries: "{held-out query of a} and {held-out query of b}", `queries_per_pair` per pair, the
  order of a and b alternating;
- items: every mixture and every single test clip of the labels involved. Relevant to a query:
  the mixtures of its two labels. The single clips of a and b are the hard distractors: a model
  that hears only one of the two sounds ranks them as high as the mixtures.
Reported: R@1/5/10 and mAP@10 (multi-relevant, CIs by bootstrap over queries), chance mAP@10,
and `either@1`, the share of queries whose first hit holds at least one of the two sounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from earshot.audio.features import power_sum_db
from earshot.data.cache import FeatureStore
from earshot.data.datasets import CaptionDataset
from earshot.eval.evaluate import clip_scores, window_embeddings
from earshot.eval.metrics import bootstrap_ci, per_query_metrics, retrieval_report
from earshot.model.dual import JointModel

LEVEL_DB = -3.0  # the second clip of a mixture, against the first


def mixture_plan(
    clip_labels: Sequence[str | None],
    labels: Sequence[str],
    per_pair: int = 4,
    seed: int = 0,
) -> list[tuple[str, str, int, int]]:
    """(label a, label b, clip of a, clip of b) for each mixture; the leading clip first.

    Pairs of `labels` (sorted) with clips of both; per pair, clips drawn without replacement
    where there are enough, so one clip is not every mixture of its label.
    """
    rng = np.random.default_rng(seed)
    by_label = {
        lab: np.flatnonzero(np.array([c == lab for c in clip_labels])) for lab in sorted(labels)
    }
    plan = []
    for a, b in combinations(sorted(by_label), 2):
        if not (len(by_label[a]) and len(by_label[b])):
            continue
        picks_a = rng.choice(by_label[a], per_pair, replace=len(by_label[a]) < per_pair)
        picks_b = rng.choice(by_label[b], per_pair, replace=len(by_label[b]) < per_pair)
        for k in range(per_pair):
            first, second = (a, b) if k % 2 == 0 else (b, a)
            ca, cb = int(picks_a[k]), int(picks_b[k])
            plan.append((first, second, *((ca, cb) if k % 2 == 0 else (cb, ca))))
    return plan


def mixture_queries(
    queries: Mapping[str, Sequence[str]], pairs: Sequence[tuple[str, str]], per_pair: int = 4
) -> list[tuple[str, frozenset[str]]]:
    """("{query of a} and {query of b}", {a, b}): held-out words for each pair, in both orders."""
    out = []
    for a, b in pairs:
        qa, qb = queries[a], queries[b]
        for k in range(per_pair):
            first, second = (qa[k % len(qa)], qb[(k + 1) % len(qb)])
            text = f"{first} and {second}" if k % 2 == 0 else f"{second} and {first}"
            out.append((text, frozenset([a, b])))
    return out


def mixture_report(
    scores: np.ndarray,
    query_pairs: Sequence[frozenset[str]],
    item_labels: Sequence[frozenset[str]],
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """The figures above from (queries, items) scores: pure numpy, so tests can feed geometry.

    query_pairs[q]: the two labels query q asks for; item_labels[i]: the labels item i holds
    (one for a single clip, two for a mixture).
    """
    relevance = np.array([[q == i for i in item_labels] for q in query_pairs])
    either = np.array([[bool(q & i) for i in item_labels] for q in query_pairs])
    t2a = retrieval_report(scores, relevance=relevance, seed=seed, n_boot=n_boot)
    chance = per_query_metrics(
        np.random.default_rng(seed).random(scores.shape, dtype=np.float32), relevance=relevance
    )["mAP@10"].mean()
    first = either[np.arange(len(scores)), scores.argmax(axis=1)].astype(np.float64)
    return {
        "queries": len(query_pairs),
        "mixtures": int(sum(len(i) == 2 for i in item_labels)),
        "single_clips": int(sum(len(i) == 1 for i in item_labels)),
        "pairs": len(set(query_pairs)),
        "level_db": LEVEL_DB,
        "chance_mAP@10": round(float(chance), 4),
        "text_to_audio": {"direction": "joined held-out queries → mixtures", **t2a},
        "either@1": {"value": float(first.mean()), "ci95": list(bootstrap_ci(first, n_boot, seed))},
    }


@torch.no_grad()
def evaluate_mixtures(
    model: JointModel,
    dataset: CaptionDataset,
    store: FeatureStore,
    queries: Mapping[str, Sequence[str]],
    labels: Sequence[str],
    per_pair: int = 4,
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 1000,
    windows: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """Mixtures of `labels` (with held-out queries) in a labelled split; None if < 2 labels.

    `windows` are `window_embeddings(model, store)` when the caller has them already.
    """
    clip_labels = [clip.label for clip in dataset.clips]
    sounding = {i for i, w in enumerate(store.clip_windows) if len(w)}
    labels = [lab for lab in labels if lab in queries]
    usable = [lab if i in sounding else None for i, lab in enumerate(clip_labels)]
    plan = mixture_plan(usable, labels, per_pair, seed)
    pairs = sorted({tuple(sorted((a, b))) for a, b, _, _ in plan})
    if not pairs:
        return None
    texts = mixture_queries(queries, pairs, per_pair)
    query_vectors = model.encode_text([t for t, _ in texts]).float().numpy()
    # Single clips: scored by their best window, as everywhere else.
    singles = sorted(i for i in sounding if clip_labels[i] in labels)
    if windows is None:
        windows = window_embeddings(model, store, batch_size)
    single_scores = clip_scores(query_vectors, windows, store.window_clip, len(clip_labels))
    single_scores = single_scores[:, singles]
    device = next(model.parameters()).device
    mixed = []
    for start in range(0, len(plan), batch_size):
        chunk = plan[start : start + batch_size]
        first = store.logmel(np.array([store.clip_windows[ca][0] for _, _, ca, _ in chunk]))
        second = store.logmel(np.array([store.clip_windows[cb][0] for _, _, _, cb in chunk]))
        logmel = power_sum_db(first, second + LEVEL_DB).to(device)
        mixed.append(model.embed_logmel(logmel).float().cpu().numpy())
    mixture_scores = query_vectors @ np.concatenate(mixed).T  # one window each
    item_labels = [frozenset([clip_labels[i]]) for i in singles]
    item_labels += [frozenset([a, b]) for a, b, _, _ in plan]
    return mixture_report(
        np.concatenate([single_scores, mixture_scores], axis=1),
        [pair for _, pair in texts],
        item_labels,
        seed,
        n_boot,
    )
