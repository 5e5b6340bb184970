"""Retrieval metrics as the DCASE language-based audio retrieval task defines them.

Two forms of ground truth, one ranked-list representation underneath:

* **single-relevant** (`targets`, one index per query): Clotho text→audio, where each caption
  describes exactly one clip. R@k is the share of queries whose clip ranks in the top k, and the
  per-query AP@10 is 1/rank when rank ≤ 10, else 0.
* **multi-relevant** (`relevance`, a bool matrix): audio→text on Clotho (each clip has five
  captions) or label-based relevance sets. R@k is the share of queries with *at least one*
  relevant item in the top k (the usual audio-text retrieval convention) and
  AP@k = (1 / min(k, n_relevant)) · Σ_{r ≤ k} precision@r · rel(r).
  With one relevant item both forms agree exactly; a test holds them to it.

**Tie rule.** An item ranks above the query's target when it scores strictly higher, or scores
the same and has a lower index: the order of a stable argsort of -scores. Every metric here
reads ranks through that one rule, so single and multi forms agree even on tied scores. The
DCASE 2022/2023 baselines sort with `np.argsort(scores)[::-1]` (numpy's unstable quicksort,
reversed), which leaves their tie order unspecified; on real float similarities ties practically
never occur and every rule gives the same numbers.

**Differences from the DCASE 2023 baseline's audio→text numbers.** Its "R@k" is the fraction of
a clip's captions found in the top k (`recall_fraction_at_k` here) and its AP divides by all
relevant items rather than min(k, n_relevant); for Clotho (5 captions, k = 10) the APs agree.

**A consistency check on reported numbers.** In the single-relevant form a query's AP@10 is 1
when its R@1 is 1 and never negative, so mAP@10 ≥ R@1 for any model on any data. The thesis
reported mAP@10 0.072 below R@1 0.075: no ranking produces that under these definitions, so
those two numbers did not come from one ranking scored this way. (The inequality does not hold
in the multi form with hit-rate R@k: a clip whose only top-10 caption is at rank 1 has R@1 = 1
but AP@10 = 1/5.)

Queries without any relevant item are an error, not silently dropped: excluding them changes
the denominator of every mean, and the caller should decide that knowingly.

Everything here is a pure function on arrays; numpy arrays and torch tensors (any device) are
accepted.
"""

from __future__ import annotations

import numpy as np

# Rows of scores sorted per block in the multi form: bounds the argsort's memory (~32 MB of
# int64 indices) whatever the number of queries.
_BLOCK_ELEMENTS = 4_000_000


def _to_numpy(x, name: str) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch, without importing it
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} could not be read as an array: {e}") from e


def _check_scores(scores) -> np.ndarray:
    s = _to_numpy(scores, "scores")
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(
            f"scores must be a non-empty 2-D (n_queries, n_items) array; got shape {s.shape}"
        )
    if s.dtype == bool or not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"scores must be numeric; got dtype {s.dtype}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)  # negating unsigned or small ints would wrap around
    if np.isnan(s).any():
        bad = np.unique(np.nonzero(np.isnan(s))[0])
        raise ValueError(
            f"scores contain NaN in {bad.size} queries (rows {bad[:5].tolist()}...); "
            "NaN has no rank: fix the embeddings (zero vectors?) before evaluating"
        )
    return s


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    return int(k)


def _check_targets(targets, n_queries: int, n_items: int) -> np.ndarray:
    t = _to_numpy(targets, "targets")
    if t.ndim != 1 or t.shape[0] != n_queries:
        raise ValueError(
            f"targets must have shape (n_queries,) = ({n_queries},), one item index per query; "
            f"got shape {t.shape}"
        )
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"targets must be integer item indices; got dtype {t.dtype}")
    if t.size and (t.min() < 0 or t.max() >= n_items):
        raise ValueError(
            f"targets must index items 0..{n_items - 1}; got values in [{t.min()}, {t.max()}]"
        )
    return t.astype(np.int64)


def _check_relevance(relevance, shape: tuple[int, int]) -> np.ndarray:
    r = _to_numpy(relevance, "relevance")
    if r.shape != shape:
        raise ValueError(
            f"relevance must have the same (n_queries, n_items) shape as scores, {shape}; "
            f"got {r.shape}"
        )
    if r.dtype != bool:
        if not np.isin(r, (0, 1)).all():
            raise ValueError("relevance must be boolean (or 0/1); got other values")
        r = r.astype(bool)
    empty = np.nonzero(~r.any(axis=1))[0]
    if empty.size:
        raise ValueError(
            f"{empty.size} of {shape[0]} queries have no relevant item (rows "
            f"{empty[:5].tolist()}{'...' if empty.size > 5 else ''}); AP and R@k are undefined "
            "for them. Drop them explicitly: keep = relevance.any(1); "
            "scores[keep], relevance[keep]"
        )
    return r


# --- ranks ------------------------------------------------------------------------------------


def target_ranks(scores, targets) -> np.ndarray:
    """1-based rank of each query's single relevant item, under the module's tie rule.

    scores: (n_queries, n_items); targets: (n_queries,) int. Returns (n_queries,) int64.
    O(n_queries · n_items) comparisons, no sort: the fast path for the single-relevant form.
    """
    s = _check_scores(scores)
    t = _check_targets(targets, *s.shape)
    rows = np.arange(s.shape[0])
    target_score = s[rows, t][:, None]  # (n_queries, 1)
    higher = (s > target_score).sum(axis=1)
    lower_index = np.arange(s.shape[1])[None, :] < t[:, None]  # (n_queries, n_items)
    tied_before = ((s == target_score) & lower_index).sum(axis=1)
    return (higher + tied_before + 1).astype(np.int64)


def hits_from_ranks(ranks, depth: int) -> np.ndarray:
    """Ranked hit list of single-relevant queries: hits[q, r] = (rank of q's target == r + 1).

    ranks: (n_queries,) 1-based. Returns (n_queries, depth) bool.
    """
    ranks = _to_numpy(ranks, "ranks")
    depth = _check_k(depth)
    return ranks[:, None] == np.arange(1, depth + 1)[None, :]


def ranked_relevance(scores, relevance, depth: int) -> np.ndarray:
    """Relevance of the items each query ranks 1..depth, under the module's tie rule.

    scores, relevance: (n_queries, n_items). Returns (n_queries, min(depth, n_items)) bool.
    """
    s = _check_scores(scores)
    r = _check_relevance(relevance, s.shape)
    depth = min(_check_k(depth), s.shape[1])
    out = np.empty((s.shape[0], depth), dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // s.shape[1])
    for start in range(0, s.shape[0], block):
        rows = slice(start, start + block)
        order = np.argsort(-s[rows], axis=1, kind="stable")[:, :depth]  # (block, depth)
        out[rows] = np.take_along_axis(r[rows], order, axis=1)
    return out


def targets_to_relevance(targets, n_items: int) -> np.ndarray:
    """One-hot relevance from item indices: (n_queries,) int -> (n_queries, n_items) bool."""
    t = _to_numpy(targets, "targets")
    if t.ndim != 1:
        raise ValueError(f"targets must be 1-D; got shape {t.shape}")
    t = _check_targets(t, t.shape[0], n_items)
    rel = np.zeros((t.shape[0], n_items), dtype=bool)
    rel[np.arange(t.shape[0]), t] = True
    return rel


def audio_to_text_relevance(caption_to_clip, n_clips: int | None = None) -> np.ndarray:
    """Which captions describe each clip: (n_captions,) clip index -> (n_clips, n_captions) bool.

    The relevance for audio→text retrieval on scores.T, where scores is the text→audio
    (n_captions, n_clips) matrix. n_clips defaults to max index + 1; a clip with no caption
    makes the metrics raise, as it should.
    """
    c2c = _to_numpy(caption_to_clip, "caption_to_clip")
    if c2c.ndim != 1 or c2c.size == 0:
        raise ValueError(f"caption_to_clip must be a non-empty 1-D array; got shape {c2c.shape}")
    if c2c.dtype == bool or not np.issubdtype(c2c.dtype, np.integer):
        raise ValueError(f"caption_to_clip must hold integer clip indices; got dtype {c2c.dtype}")
    n = int(c2c.max()) + 1 if n_clips is None else n_clips
    return targets_to_relevance(c2c, n).T


# --- per-query metrics on a ranked hit list (n_queries, depth) bool ----------------------------


def recall_at_k(hits, k: int) -> np.ndarray:
    """1.0 where a relevant item is in the top k, else 0.0. hits: (n_queries, depth) -> (n_q,)."""
    return np.asarray(hits)[:, : _check_k(k)].any(axis=1).astype(np.float64)


def precision_at_k(hits, k: int) -> np.ndarray:
    """Relevant items in the top k, divided by k. hits: (n_queries, depth) -> (n_queries,)."""
    k = _check_k(k)
    return np.asarray(hits)[:, :k].sum(axis=1) / k


def recall_fraction_at_k(hits, n_relevant, k: int) -> np.ndarray:
    """Share of each query's relevant items found in the top k (the DCASE 2023 a2t "R@k")."""
    return np.asarray(hits)[:, : _check_k(k)].sum(axis=1) / np.asarray(n_relevant)


def average_precision_at_k(hits, n_relevant, k: int) -> np.ndarray:
    """AP@k = (1 / min(k, n_relevant)) · Σ_{r ≤ k} precision@r · rel(r), per query.

    hits: (n_queries, depth) bool with depth ≥ min(k, n_items); n_relevant: (n_queries,) ≥ 1.
    Returns (n_queries,) float64. With one relevant item this is 1/rank within the top k.
    """
    k = _check_k(k)
    h = np.asarray(hits)[:, :k]  # (n_queries, ≤ k)
    precision = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)  # precision@r
    return (precision * h).sum(axis=1) / np.minimum(k, np.asarray(n_relevant))


def per_query_metrics(
    scores, targets=None, relevance=None, ks=(1, 5, 10), map_k: int = 10
) -> dict[str, np.ndarray]:
    """Per-query values of R@k for each k and AP@map_k (key f"mAP@{map_k}"), each (n_queries,).

    Give exactly one of targets (n_queries,) int — the single-relevant form — or relevance
    (n_queries, n_items) bool. Their means are the reported metrics.
    """
    if (targets is None) == (relevance is None):
        raise ValueError("give exactly one of targets (one relevant item) or relevance (a set)")
    ks = [_check_k(k) for k in ks]
    depth = max([*ks, _check_k(map_k)])
    if targets is not None:
        ranks = target_ranks(scores, targets)
        hits = hits_from_ranks(ranks, depth)
        n_relevant = np.ones(ranks.shape[0], dtype=np.int64)
    else:
        hits = ranked_relevance(scores, relevance, depth)
        n_relevant = _to_numpy(relevance, "relevance").sum(axis=1)
    out = {f"R@{k}": recall_at_k(hits, k) for k in ks}
    out[f"mAP@{map_k}"] = average_precision_at_k(hits, n_relevant, map_k)
    return out


# --- confidence intervals and the summary ------------------------------------------------------


def bootstrap_ci(
    per_query_values, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean, resampling queries with replacement.

    per_query_values: (n_queries,). Deterministic for a given seed; the same seed resamples the
    same queries for every metric of a report, so their intervals are paired.
    """
    v = np.asarray(_to_numpy(per_query_values, "per_query_values"), dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"per_query_values must be a non-empty 1-D array; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("per_query_values contain NaN or inf")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # Resample in chunks: n_boot × n_queries indices at once is 40 MB for 5,000 queries.
    chunk = max(1, 1_000_000 // v.size)
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        means[start : start + n] = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _definition(single: bool, ks, map_k: int, n_boot: int, seed: int) -> str:
    ks_text = ", ".join(str(k) for k in ks)
    tie = (
        "rank = 1 + items scoring higher + items scoring equal with a lower index "
        "(stable argsort of -scores)"
    )
    if single:
        metrics = (
            f"one relevant item per query; R@k (k = {ks_text}) = share of queries whose item "
            f"ranks <= k; mAP@{map_k} = mean of 1/rank if rank <= {map_k} else 0"
        )
    else:
        metrics = (
            f"a set of relevant items per query; R@k (k = {ks_text}) = share of queries with at "
            f"least one relevant item in the top k; mAP@{map_k} = mean over queries of "
            f"(1/min({map_k}, n_relevant)) * sum over ranks r <= {map_k} of precision@r * rel(r)"
        )
    return (
        f"{metrics}; {tie}; ci95 = percentile bootstrap of the mean over queries "
        f"({n_boot} resamples, seed {seed})"
    )


def retrieval_report(
    scores,
    targets=None,
    relevance=None,
    ks=(1, 5, 10),
    seed: int = 0,
    n_boot: int = 1000,
    map_k: int = 10,
) -> dict:
    """Means and 95% bootstrap CIs of R@k and mAP@map_k, as a JSON-ready dict.

    scores: (n_queries, n_items); exactly one of targets (n_queries,) int or relevance
    (n_queries, n_items) bool. Returns {"n_queries", "n_items", "relevance",
    "R@1": {"value", "ci95": [lo, hi]}, ..., "mAP@10": {...}, "definition"}; add metadata
    (model, dataset, split, direction) to it before writing it out.
    """
    s = _check_scores(scores)
    values = per_query_metrics(s, targets, relevance, ks, map_k)
    n_queries, n_items = s.shape
    report: dict = {
        "n_queries": int(n_queries),
        "n_items": int(n_items),
        "relevance": "single" if targets is not None else "multi",
    }
    for name, v in values.items():
        report[name] = {"value": float(v.mean()), "ci95": list(bootstrap_ci(v, n_boot, seed))}
    report["definition"] = _definition(targets is not None, ks, map_k, n_boot, seed)
    return report


def bidirectional_report(
    scores, caption_to_clip, ks=(1, 5, 10), seed: int = 0, n_boot: int = 1000, map_k: int = 10
) -> dict:
    """Text→audio (one clip per caption) and audio→text (all of a clip's captions) reports.

    scores: (n_captions, n_clips) text→audio similarities; caption_to_clip: (n_captions,) int.
    """
    s = _check_scores(scores)
    t2a = retrieval_report(s, caption_to_clip, None, ks, seed, n_boot, map_k)  # checks targets
    relevance = audio_to_text_relevance(caption_to_clip, s.shape[1])
    a2t = retrieval_report(s.T, None, relevance, ks, seed, n_boot, map_k)
    return {
        "text_to_audio": {"direction": "text→audio", **t2a},
        "audio_to_text": {"direction": "audio→text", **a2t},
    }
