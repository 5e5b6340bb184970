"""Confidence intervals that resample recordings, not clips.

`metrics.bootstrap_ci` resamples queries (or clips) and holds the rest fixed. Clips cut from one
recording are not independent: a test split with one or two recordings of a class says little
about the next recording, however many clips it holds. These intervals draw whole recordings
(any grouping of items) with replacement.
"""

from __future__ import annotations

import numpy as np

from earshot.eval.metrics import (
    _check_k,
    _check_relevance,
    _check_scores,
    average_precision_at_k,
    per_query_metrics,
)


def _check_groups(groups, n: int) -> np.ndarray:
    """Integer codes 0..R-1 of per-item group names (e.g. the recording each clip comes from)."""
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or g.size != n:
        raise ValueError(f"groups must name one group per item ({n}); got shape {g.shape}")
    return np.unique(g.astype(str), return_inverse=True)[1]


def cluster_bootstrap_ci(
    values, groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of a per-item mean, resampling whole groups with replacement.

    For items that are not independent, such as clips cut from one recording: a recording drawn
    twice brings all its clips twice. With one item per group this is `bootstrap_ci`'s CI.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty 1-D finite array; got shape {v.shape}")
    codes = _check_groups(groups, v.size)
    n_groups = int(codes.max()) + 1
    sums = np.bincount(codes, weights=v, minlength=n_groups)
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    weights = np.stack([np.bincount(d, minlength=n_groups) for d in draws])  # (n_boot, groups)
    means = (weights @ sums) / (weights @ sizes)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def two_way_bootstrap_map_ci(
    scores,
    relevance,
    item_groups,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    map_k: int = 10,
) -> tuple[float, float]:
    """CI of multi-relevant mAP@map_k resampling both the queries and the items' groups.

    `bootstrap_ci` over queries treats the items as fixed: it says how much the figure would
    move with other queries, not with other recordings. Here each resample draws the groups
    (recordings) with replacement, ranks every query against that item set (a group drawn
    twice brings its items twice, tied side by side), recomputes AP@map_k, and averages it
    over a resample of the queries; queries left with no relevant item are skipped.

    Drawing a recording twice puts its clips side by side in a ranking, which raises AP a
    little on average, so the interval is bias-corrected: both ends move by (point value -
    mean of the resamples), within [0, 1].
    """
    s = _check_scores(scores)
    r = _check_relevance(relevance, s.shape)
    codes = _check_groups(item_groups, s.shape[1])
    k = _check_k(map_k)
    n_queries, n_items = s.shape
    n_groups = int(codes.max()) + 1
    # One ranking per query, once: a resample only repeats or drops items in it, and a repeated
    # item's copies tie with it, so they sit next to it (the stable tie rule).
    order = np.argsort(-s, axis=1, kind="stable")
    rel_sorted = np.take_along_axis(r, order, axis=1)
    codes_sorted = codes[order]
    rows = np.arange(n_queries)
    point_values = per_query_metrics(s, relevance=r, map_k=k)[f"mAP@{k}"]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    hits = np.zeros((n_queries, k), dtype=bool)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        copies = counts[codes_sorted]  # (queries, items) in each query's ranked order
        end = np.cumsum(copies, axis=1)  # the item at rank p is the first whose end > p
        for p in range(k):
            at = (end <= p).sum(axis=1)
            inside = at < n_items
            hits[:, p] = inside & rel_sorted[rows, np.minimum(at, n_items - 1)]
        n_relevant = (copies * rel_sorted).sum(axis=1)
        answerable = n_relevant > 0
        ap = np.zeros(n_queries)
        ap[answerable] = average_precision_at_k(hits[answerable], n_relevant[answerable], k)
        picked = rng.integers(0, n_queries, n_queries)
        kept = picked[answerable[picked]]
        means[b] = ap[kept].mean() if kept.size else np.nan
    means = means[np.isfinite(means)]
    answerable = r.any(axis=1)
    shift = point_values[answerable].mean() - means.mean()
    alpha = (1 - level) / 2
    low, high = np.clip(np.quantile(means, [alpha, 1 - alpha]) + shift, 0.0, 1.0)
    return float(low), float(high)
