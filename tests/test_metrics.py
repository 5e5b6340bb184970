"""Retrieval metrics against brute-force references that sort and walk each ranked list."""

from __future__ import annotations

import time

import numpy as np
import pytest

from earshot.eval.metrics import (
    audio_to_text_relevance,
    average_precision_at_k,
    bidirectional_report,
    bootstrap_ci,
    per_query_metrics,
    precision_at_k,
    ranked_relevance,
    recall_at_k,
    recall_fraction_at_k,
    retrieval_report,
    target_ranks,
    targets_to_relevance,
)
from earshot.eval.recordings import cluster_bootstrap_ci, two_way_bootstrap_map_ci

# --- the obvious references -------------------------------------------------------------------


def ref_order(row) -> list[int]:
    """Items best first; equal scores keep index order (the documented tie rule)."""
    return sorted(range(len(row)), key=lambda j: (-float(row[j]), j))


def ref_single(scores, targets, ks=(1, 5, 10), map_k=10) -> dict[str, float]:
    ranks = [ref_order(row).index(int(t)) + 1 for row, t in zip(scores, targets, strict=True)]
    out = {f"R@{k}": float(np.mean([r <= k for r in ranks])) for k in ks}
    out[f"mAP@{map_k}"] = float(np.mean([1 / r if r <= map_k else 0.0 for r in ranks]))
    return out


def ref_query(row, rel_row, k) -> dict[str, float]:
    """Walk one ranked list down to rank k, counting relevant items."""
    n_rel = sum(bool(x) for x in rel_row)
    found, ap = 0, 0.0
    for r, j in enumerate(ref_order(row)[:k], start=1):
        if rel_row[j]:
            found += 1
            ap += found / r
    return {
        "hit": float(found > 0),
        "precision": found / k,
        "fraction": found / n_rel,
        "ap": ap / min(k, n_rel),
    }


def ref_multi(scores, relevance, ks=(1, 5, 10), map_k=10) -> dict[str, float]:
    pairs = list(zip(scores, relevance, strict=True))
    out = {f"R@{k}": float(np.mean([ref_query(s, r, k)["hit"] for s, r in pairs])) for k in ks}
    out[f"mAP@{map_k}"] = float(np.mean([ref_query(s, r, map_k)["ap"] for s, r in pairs]))
    return out


def means(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in per_query.items()}


def random_scores(rng, shape, kind: str) -> np.ndarray:
    """Continuous, coarse (many ties) or small-integer (ties everywhere) similarity matrices."""
    if kind == "float":
        return rng.standard_normal(shape)
    if kind == "rounded":
        return np.round(rng.standard_normal(shape), 1)
    return rng.integers(-2, 3, size=shape)


def random_clotho(rng, n_clips: int, per_clip: int = 5):
    """caption_to_clip with `per_clip` captions per clip, shuffled."""
    return rng.permutation(np.repeat(np.arange(n_clips), per_clip))


KINDS = ["float", "rounded", "int"]


# --- against the references -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_text_to_audio_matches_reference(kind, seed):
    rng = np.random.default_rng(seed)
    c2c = random_clotho(rng, n_clips=12)  # 60 captions
    scores = random_scores(rng, (len(c2c), 12), kind)  # (n_captions, n_clips)
    got = means(per_query_metrics(scores, targets=c2c))
    assert got == pytest.approx(ref_single(scores, c2c), abs=1e-12)
    ranks = target_ranks(scores, c2c)
    assert ranks.tolist() == [ref_order(s).index(t) + 1 for s, t in zip(scores, c2c, strict=True)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_audio_to_text_matches_reference(kind, seed):
    rng = np.random.default_rng(seed)
    c2c = random_clotho(rng, n_clips=8, per_clip=5)
    scores = random_scores(rng, (len(c2c), 8), kind)
    # Relevance by loops: clip c is described by the captions i with c2c[i] == c.
    relevance = [[c2c[i] == c for i in range(len(c2c))] for c in range(8)]
    assert audio_to_text_relevance(c2c).tolist() == relevance
    got = means(per_query_metrics(scores.T, relevance=audio_to_text_relevance(c2c)))
    assert got == pytest.approx(ref_multi(scores.T, relevance), abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_label_sets_match_reference(kind, seed):
    """Many relevant items per query, some with more than k of them."""
    rng = np.random.default_rng(seed)
    scores = random_scores(rng, (30, 40), kind)
    relevance = rng.random((30, 40)) < rng.uniform(0.02, 0.6, size=(30, 1))
    relevance[np.arange(30), rng.integers(0, 40, 30)] = True  # every query has one
    ks = (1, 3, 5, 10, 50)
    got = means(per_query_metrics(scores, relevance=relevance, ks=ks, map_k=10))
    assert got == pytest.approx(ref_multi(scores, relevance, ks=ks), abs=1e-12)

    hits = ranked_relevance(scores, relevance, 10)
    n_rel = relevance.sum(1)
    for k in (1, 4, 10):
        ref = [ref_query(s, r, k) for s, r in zip(scores, relevance, strict=True)]
        assert recall_at_k(hits, k) == pytest.approx([q["hit"] for q in ref])
        assert precision_at_k(hits, k) == pytest.approx([q["precision"] for q in ref])
        assert recall_fraction_at_k(hits, n_rel, k) == pytest.approx([q["fraction"] for q in ref])
        assert average_precision_at_k(hits, n_rel, k) == pytest.approx([q["ap"] for q in ref])


@pytest.mark.parametrize("kind", KINDS)
def test_single_and_multi_forms_agree_on_one_hot_relevance(kind):
    """One tie rule for both paths: the rank count and the stable sort must coincide."""
    rng = np.random.default_rng(7)
    scores = random_scores(rng, (50, 15), kind)
    targets = rng.integers(0, 15, 50)
    single = per_query_metrics(scores, targets=targets, ks=(1, 2, 5, 10, 20))
    multi = per_query_metrics(
        scores, relevance=targets_to_relevance(targets, 15), ks=(1, 2, 5, 10, 20)
    )
    for name in single:
        np.testing.assert_allclose(single[name], multi[name], err_msg=name)


# --- small examples worked by hand -----------------------------------------------------------


def test_hand_worked_single_relevant():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 0 scores highest: rank 1
            [0.2, 0.8, 0.4, 0.6],  # target 3 behind item 1: rank 2
            [0.5, 0.5, 0.5, 0.5],  # all tied: items 0 and 1 have lower indices, rank 3
        ]
    )
    targets = np.array([0, 3, 2])
    assert target_ranks(scores, targets).tolist() == [1, 2, 3]
    got = means(per_query_metrics(scores, targets=targets, ks=(1, 2, 5)))
    assert got == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@5": 1.0, "mAP@10": 11 / 18})


def test_hand_worked_multi_relevant():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    relevance = np.array([[True, False, True, False, False]])  # relevant at ranks 1 and 3
    hits = ranked_relevance(scores, relevance, 10)
    assert hits.tolist() == [[True, False, True, False, False]]  # depth capped at n_items
    assert average_precision_at_k(hits, [2], 10) == pytest.approx([(1 + 2 / 3) / 2])
    assert average_precision_at_k(hits, [2], 2) == pytest.approx([1 / 2])
    assert precision_at_k(hits, 3) == pytest.approx([2 / 3])
    # More relevant items than k: AP@k divides by k, so a perfect top k still scores 1.
    assert average_precision_at_k(np.ones((1, 3), bool), [12], 3) == pytest.approx([1.0])


def test_multi_form_ap_can_fall_below_hit_rate_r_at_1():
    """Why mAP@10 >= R@1 is only an invariant of the single-relevant form."""
    scores = np.array([[5.0, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -2, -3, -4]])
    relevance = np.zeros_like(scores, dtype=bool)
    relevance[0, [0, 14, 15, 16, 17]] = True  # one caption at rank 1, four beyond 10
    got = means(per_query_metrics(scores, relevance=relevance))
    assert got["R@1"] == 1.0
    assert got["mAP@10"] == pytest.approx(1 / 5)


# --- invariants --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_map_at_10_never_below_r_at_1_in_single_form(kind):
    rng = np.random.default_rng(3)
    scores = random_scores(rng, (200, 30), kind)
    per_q = per_query_metrics(scores, targets=rng.integers(0, 30, 200))
    assert (per_q["mAP@10"] >= per_q["R@1"]).all()
    assert per_q["mAP@10"].mean() >= per_q["R@1"].mean()


@pytest.mark.parametrize("form", ["single", "multi"])
def test_recall_is_monotone_in_k(form):
    rng = np.random.default_rng(4)
    scores = random_scores(rng, (100, 40), "rounded")
    ks = tuple(range(1, 41))
    if form == "single":
        per_q = per_query_metrics(scores, targets=rng.integers(0, 40, 100), ks=ks)
    else:
        relevance = rng.random((100, 40)) < 0.1
        relevance[:, 0] = True
        per_q = per_query_metrics(scores, relevance=relevance, ks=ks)
    curve = np.array([per_q[f"R@{k}"] for k in ks])  # (k, n_queries)
    assert (np.diff(curve, axis=0) >= 0).all()
    assert curve[-1].tolist() == [1.0] * 100  # k = n_items finds everything


def test_perfect_and_reversed_scores():
    rng = np.random.default_rng(5)
    c2c = random_clotho(rng, n_clips=20, per_clip=5)
    perfect = targets_to_relevance(c2c, 20).astype(float)  # (100 captions, 20 clips)
    for per_q in (
        per_query_metrics(perfect, targets=c2c),
        per_query_metrics(perfect.T, relevance=audio_to_text_relevance(c2c)),
    ):
        assert {k: v.mean() for k, v in per_q.items()} == {
            "R@1": 1.0,
            "R@5": 1.0,
            "R@10": 1.0,
            "mAP@10": 1.0,
        }
    assert (target_ranks(-perfect, c2c) == 20).all()  # every wrong clip now beats the right one
    reversed_ = means(per_query_metrics(-perfect, targets=c2c))
    assert reversed_ == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "mAP@10": 0.0}


def test_torch_tensors_give_the_same_numbers():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    scores = rng.standard_normal((20, 9)).astype(np.float32)
    targets = rng.integers(0, 9, 20)
    got = per_query_metrics(torch.from_numpy(scores), targets=torch.from_numpy(targets))
    want = per_query_metrics(scores, targets=targets)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


# --- bootstrap CIs -----------------------------------------------------------------------------


def test_ci_contains_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(8)
    widths = []
    for n in (100, 10_000):
        v = (rng.random(n) < 0.3).astype(float)
        low, high = bootstrap_ci(v, seed=0)
        assert low <= v.mean() <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(n): expect a factor of 10


def test_ci_matches_the_normal_approximation_for_a_large_sample():
    v = np.random.default_rng(9).random(4000)
    low, high = bootstrap_ci(v, n_boot=2000, seed=1)
    half = 1.96 * v.std() / np.sqrt(v.size)
    assert low == pytest.approx(v.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(v.mean() + half, abs=0.15 * half)
    low50, high50 = bootstrap_ci(v, n_boot=2000, seed=1, level=0.5)
    assert low < low50 < high50 < high


def test_ci_is_deterministic_per_seed_and_degenerate_for_constant_values():
    v = np.random.default_rng(10).random(50)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci(v, seed=3) != bootstrap_ci(v, seed=4)
    assert bootstrap_ci(np.full(30, 0.25)) == (0.25, 0.25)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)


def test_retrieval_report_layout():
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((40, 10))
    targets = rng.integers(0, 10, 40)
    report = retrieval_report(scores, targets=targets, n_boot=200)
    assert list(report) == [
        "n_queries",
        "n_items",
        "relevance",
        "R@1",
        "R@5",
        "R@10",
        "mAP@10",
        "definition",
    ]
    assert (report["n_queries"], report["n_items"], report["relevance"]) == (40, 10, "single")
    for name, value in ref_single(scores, targets).items():
        assert report[name]["value"] == pytest.approx(value)
        low, high = report[name]["ci95"]
        assert low <= value <= high
    assert "stable argsort" in report["definition"]


# --- bad input ---------------------------------------------------------------------------------

S = np.zeros((3, 4))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: target_ranks(np.zeros(4), [0]), "2-D"),
        (lambda: target_ranks(np.zeros((0, 4)), []), "non-empty 2-D"),
        (lambda: target_ranks(S, [0, 1]), r"shape \(n_queries,\) = \(3,\)"),
        (lambda: target_ranks(S, [0.0, 1.0, 2.0]), "integer item indices"),
        (lambda: target_ranks(S, [0, 1, 4]), "index items 0..3"),
        (lambda: target_ranks(np.full((3, 4), np.nan), [0, 1, 2]), "NaN"),
        (lambda: ranked_relevance(S, np.ones((4, 3), bool), 10), "same .* shape as scores"),
        (lambda: ranked_relevance(S, np.full((3, 4), 2), 10), "boolean"),
        (lambda: ranked_relevance(S, np.eye(3, 4, 1, bool) & False, 10), "no relevant item"),
        (lambda: per_query_metrics(S), "exactly one of"),
        (lambda: per_query_metrics(S, [0, 1, 2], np.ones((3, 4), bool)), "exactly one of"),
        (lambda: per_query_metrics(S, [0, 1, 2], ks=(0,)), "positive integer"),
        (lambda: bootstrap_ci([]), "non-empty"),
        (lambda: bootstrap_ci([0.1, np.nan]), "NaN"),
        (lambda: bootstrap_ci([0.1], level=95), "level"),
        (lambda: audio_to_text_relevance(np.array([0.0, 1.0])), "integer clip indices"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_queries_without_relevant_items_are_named():
    relevance = np.ones((8, 4), bool)
    relevance[[2, 5]] = False
    with pytest.raises(ValueError, match=r"2 of 8 queries .*rows \[2, 5\].*relevance.any\(1\)"):
        per_query_metrics(np.zeros((8, 4)), relevance=relevance)


# --- scale -------------------------------------------------------------------------------------


def test_clotho_sized_bidirectional_report_is_fast():
    """5,000 captions x 1,000 clips, both directions, 1,000 bootstrap resamples."""
    rng = np.random.default_rng(12)
    c2c = random_clotho(rng, n_clips=1000)
    scores = rng.standard_normal((5000, 1000)).astype(np.float32)
    scores[np.arange(5000), c2c] += 2.5  # a model that is mostly right
    start = time.perf_counter()
    report = bidirectional_report(scores, c2c)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"took {elapsed:.1f} s"  # ~0.5 s on 2 idle cores
    t2a, a2t = report["text_to_audio"], report["audio_to_text"]
    assert (t2a["n_queries"], t2a["n_items"], a2t["n_queries"], a2t["n_items"]) == (
        5000,
        1000,
        1000,
        5000,
    )
    assert t2a["mAP@10"]["value"] >= t2a["R@1"]["value"] > 0.1
    assert a2t["R@10"]["value"] > a2t["R@1"]["value"] > 0.1


# --- CIs that resample recordings --------------------------------------------------------------


def test_cluster_ci_with_one_item_per_group_is_the_plain_bootstrap():
    v = np.random.default_rng(3).random(60)
    groups = [f"g{i:03d}" for i in range(60)]  # sorted names: group code = item index
    assert cluster_bootstrap_ci(v, groups, 500, seed=4) == pytest.approx(
        bootstrap_ci(v, 500, seed=4), abs=1e-12
    )


def test_cluster_ci_of_identical_clips_is_the_ci_of_their_recordings():
    # 5 recordings of 20 clips, every clip scored as its recording: 100 clips tell no more
    # than 5 recordings, so the CI is that of the 5 recording means, far wider than per clip.
    per_recording = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    values = np.repeat(per_recording, 20)
    groups = np.repeat([f"r{i}" for i in range(5)], 20)
    clustered = cluster_bootstrap_ci(values, groups, 1000, seed=0)
    assert clustered == pytest.approx(bootstrap_ci(per_recording, 1000, seed=0), abs=1e-12)
    lo, hi = bootstrap_ci(values, 1000, seed=0)
    assert clustered[1] - clustered[0] > 2.5 * (hi - lo)


def test_two_way_map_ci_is_exact_for_perfect_ranking_and_spans_recording_luck():
    # 4 recordings (2 per label, 3 clips each), 6 queries per label.
    labels = np.repeat(["A", "A", "B", "B"], 3)
    recordings = np.repeat(["a1", "a2", "b1", "b2"], 3)
    q_labels = np.repeat(["A", "B"], 6)
    relevance = q_labels[:, None] == labels[None, :]
    perfect = relevance.astype(np.float32) + 0.01 * np.arange(12)[None, :]
    assert two_way_bootstrap_map_ci(perfect, relevance, recordings, 200) == (1.0, 1.0)
    # Recording a2 sounds like B: A's queries find a1 first, then B's clips, then a2.
    scores = perfect.copy()
    scores[:6, 3:6] = -1.0
    scores[6:, 3:6] = 0.5
    value = per_query_metrics(scores, relevance=relevance)["mAP@10"].mean()
    lo, hi = two_way_bootstrap_map_ci(scores, relevance, recordings, 500, seed=1)
    q_lo, q_hi = bootstrap_ci(per_query_metrics(scores, relevance=relevance)["mAP@10"], 500, 1)
    assert lo <= value <= hi
    # Resampling queries alone only mixes A's and B's figures; which recordings were drawn
    # matters more.
    assert hi - lo > 1.5 * (q_hi - q_lo)
    assert two_way_bootstrap_map_ci(scores, relevance, recordings, 500, seed=1) == (lo, hi)


@pytest.mark.parametrize("groups", [["a", "b"], np.array([["a"] * 12])])
def test_groups_must_name_one_group_per_item(groups):
    with pytest.raises(ValueError, match="one group per item"):
        cluster_bootstrap_ci(np.ones(12), groups)
    with pytest.raises(ValueError, match="one group per item"):
        two_way_bootstrap_map_ci(np.ones((2, 12)), np.ones((2, 12), bool), groups)


def _slow_two_way_means(scores, relevance, groups, n_boot, seed, k=10):
    """The definition, item sets materialised: repeat each drawn recording's clips, rank."""
    codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    n_groups, n_queries = codes.max() + 1, scores.shape[0]
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        items = np.repeat(np.arange(scores.shape[1]), counts[codes])
        rel = relevance[:, items]
        n_rel = rel.sum(axis=1)
        ok = n_rel > 0
        ap = np.zeros(n_queries)
        hits = ranked_relevance(scores[ok][:, items], rel[ok], k)
        ap[ok] = average_precision_at_k(hits, n_rel[ok], k)
        picked = rng.integers(0, n_queries, n_queries)
        means.append(ap[picked[ok[picked]]].mean())
    return np.array(means)


@pytest.mark.parametrize("seed", [0, 1])
def test_two_way_map_ci_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    n_items, n_queries = 40, 15
    groups = rng.integers(0, 9, n_items).astype(str)
    labels = rng.integers(0, 3, n_items)
    relevance = rng.integers(0, 3, n_queries)[:, None] == labels[None, :]
    scores = rng.random((n_queries, n_items)).astype(np.float32)
    scores[:, :5] = 0.5  # ties too
    means = _slow_two_way_means(scores, relevance, groups, 300, seed)
    point = per_query_metrics(scores, relevance=relevance)["mAP@10"][relevance.any(axis=1)].mean()
    expected = np.clip(np.quantile(means, [0.025, 0.975]) + point - means.mean(), 0, 1)
    got = two_way_bootstrap_map_ci(scores, relevance, groups, 300, seed)
    assert got == pytest.approx(tuple(expected), abs=1e-12)
