"""Held-out mixtures: the plan, the joined queries, known geometry, and `earshot evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earshot.audio.features import power_sum_db
from earshot.data.cache import build_feature_cache
from earshot.data.recipe import load_recipe
from earshot.eval.mixtures import (
    LEVEL_DB,
    evaluate_mixtures,
    mixture_plan,
    mixture_queries,
    mixture_report,
)
from earshot.model.io import load_model
from test_eval_queries import evaluate, recipe_setup

N_BOOT = 50
A, B, C = "low_hum", "high_whistle", "static_noise"


def test_plan_pairs_every_two_labels_and_alternates_the_lead():
    labels = [A] * 4 + [B] * 5 + [C] * 4 + [None, "other"]
    plan = mixture_plan(labels, [C, A, B], per_pair=4, seed=1)
    assert len(plan) == 3 * 4
    pairs = {frozenset((a, b)) for a, b, _, _ in plan}
    assert pairs == {frozenset((A, B)), frozenset((A, C)), frozenset((B, C))}
    for k, (first, second, ca, cb) in enumerate(plan):
        assert labels[ca] == first and labels[cb] == second and first != second
        assert (first < second) == (k % 2 == 0)  # the sorted first label leads every other one
    # Enough clips: a pair's four mixtures use four different clips of each label.
    for start in range(0, 12, 4):
        chunk = plan[start : start + 4]
        for label in {chunk[0][0], chunk[0][1]}:
            used = [ca if a == label else cb for a, b, ca, cb in chunk]
            assert len(set(used)) == 4, (label, used)
    assert mixture_plan(labels, [A, B, C], 4, seed=1) == plan  # replays from its seed
    assert mixture_plan(labels, [A, B, C], 4, seed=2) != plan
    # Too few clips (2 of A for 4 mixtures): drawn with replacement, still only A's clips.
    few = mixture_plan([A, A, B, B, B, B], [A, B], per_pair=4)
    assert len(few) == 4
    assert {ca if a == A else cb for a, b, ca, cb in few} <= {0, 1}


def test_plan_skips_labels_without_clips():
    plan = mixture_plan([A, A, B], [A, B, C], per_pair=2)
    assert {frozenset(p[:2]) for p in plan} == {frozenset([A, B])}
    assert mixture_plan([A, A], [A, B], per_pair=2) == []


def test_queries_join_held_out_paraphrases_in_both_orders():
    queries = {A: ["a drone", "a bass hum"], B: ["a shrill tone"]}
    out = mixture_queries(queries, [(A, B)], per_pair=4)
    assert [t for t, _ in out] == [
        "a drone and a shrill tone",
        "a shrill tone and a bass hum",
        "a drone and a shrill tone",
        "a shrill tone and a bass hum",
    ]
    assert {p for _, p in out} == {frozenset([A, B])}


def items():
    """Two singles of A, two of B, two A+B mixtures, one A+C mixture."""
    return (
        [frozenset([A])] * 2 + [frozenset([B])] * 2 + [frozenset([A, B])] * 2 + [frozenset([A, C])]
    )


def test_report_on_known_geometry():
    pair = frozenset([A, B])
    # Query 0 ranks both A+B mixtures first: AP 1. Query 1 ranks a single A first, then the
    # A+C mixture, then the two A+B mixtures: R@1 0, either@1 1, AP = (1/3 + 2/4) / 2.
    scores = np.array(
        [
            [0.1, 0.2, 0.3, 0.0, 0.9, 0.8, 0.4],
            [0.9, 0.1, 0.2, 0.3, 0.6, 0.5, 0.7],
        ]
    )
    report = mixture_report(scores, [pair, pair], items(), n_boot=N_BOOT)
    t2a = report["text_to_audio"]
    assert t2a["R@1"]["value"] == pytest.approx(0.5)
    assert t2a["mAP@10"]["value"] == pytest.approx((1 + (1 / 3 + 2 / 4) / 2) / 2)
    assert report["either@1"]["value"] == pytest.approx(1.0)
    assert (report["mixtures"], report["single_clips"], report["pairs"]) == (3, 4, 1)
    assert 0 < report["chance_mAP@10"] < 0.5
    # For an A+C query, a single B first holds neither sound; a single A first holds one.
    scores[1] = [0.0, 0.0, 0.9, 0.0, 0.1, 0.1, 0.5]
    report = mixture_report(scores, [pair, frozenset([A, C])], items(), n_boot=N_BOOT)
    assert report["either@1"]["value"] == pytest.approx(0.5)
    assert report["text_to_audio"]["R@5"]["value"] == pytest.approx(1.0)
    scores[1] = [0.9, 0.0, 0.0, 0.0, 0.1, 0.1, 0.5]
    report = mixture_report(scores, [pair, frozenset([A, C])], items(), n_boot=N_BOOT)
    assert report["either@1"]["value"] == pytest.approx(1.0)
    assert report["text_to_audio"]["R@1"]["value"] == pytest.approx(0.5)


# --- on a model, and through `earshot evaluate` ---------------------------------------------

RECIPE = """
root = "data"

[templates]
np = ["{np}", "the sound of {np}"]
s = ["{s}"]
mixture = ["{np1} and {np2}"]

[[source]]
name = "synth"
folder = "synth"
train = "fold=1"
test = "fold=2"

[labels.low_hum]
np = ["a low hum"]
s = ["something hums"]
mix = true
queries = ["a deep droning tone", "a bass drone"]

[labels.high_whistle]
np = ["a high whistle"]
s = ["someone whistles"]
mix = true
queries = ["a shrill piercing tone"]

[labels.static_noise]
np = ["static noise"]
queries = ["white noise hissing", "radio static", "a hiss"]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_text_dir):
    return recipe_setup(tmp_path_factory.mktemp("eval-mixtures"), RECIPE, tiny_text_dir, 3)


def test_evaluate_mixtures_scores_what_it_mixed(setup):
    root, recipe_path, model_dir = setup
    recipe = load_recipe(recipe_path)
    dataset = recipe.dataset("test")
    model = load_model(model_dir)
    store = build_feature_cache(dataset, model.config.audio, root / "cache", progress=False)
    queries = recipe.queries()
    mixable = [n for n, s in recipe.labels.items() if s.mix]
    assert sorted(mixable) == sorted([A, B])
    report = evaluate_mixtures(model, dataset, store, queries, mixable, per_pair=4, n_boot=N_BOOT)
    # One pair (static noise is not `mix`), 4 mixtures, 4 joined queries; 6 single clips.
    assert (report["pairs"], report["mixtures"], report["queries"]) == (1, 4, 4)
    assert report["single_clips"] == 6
    # The same figures from scores computed here, by hand.
    labels = [c.label for c in dataset.clips]
    plan = mixture_plan(labels, mixable, 4, 0)
    texts = mixture_queries(queries, [(B, A)] if B < A else [(A, B)], 4)
    q = model.encode_text([t for t, _ in texts]).float().numpy()
    singles = [i for i, lab in enumerate(labels) if lab in mixable]
    one = lambda c: store.logmel(np.array([store.clip_windows[c][0]]))  # noqa: E731
    single = np.concatenate([model.embed_logmel(one(c)).detach().numpy() for c in singles])
    mixed = np.concatenate(
        [
            model.embed_logmel(power_sum_db(one(ca), one(cb) + LEVEL_DB)).detach().numpy()
            for _, _, ca, cb in plan
        ]
    )
    scores = q @ np.concatenate([single, mixed]).T
    item_labels = [frozenset([labels[i]]) for i in singles] + [frozenset(p[:2]) for p in plan]
    direct = mixture_report(scores, [p for _, p in texts], item_labels, n_boot=N_BOOT)
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx(
        direct["text_to_audio"]["mAP@10"]["value"], abs=1e-5
    )
    assert report["either@1"] == direct["either@1"]
    assert evaluate_mixtures(model, dataset, store, queries, [A], n_boot=N_BOOT) is None


def test_cli_evaluate_adds_held_out_mixtures_for_a_recipe_with_mix_labels(setup, capsys):
    root, recipe, model_dir = setup
    report = evaluate(capsys, model_dir, recipe, "test", root / "cache", root / "eval")
    mixtures = report["held_out_mixtures"]
    assert (mixtures["pairs"], mixtures["mixtures"], mixtures["level_db"]) == (1, 4, LEVEL_DB)
    for metric in ("R@1", "R@10", "mAP@10"):
        lo, hi = mixtures["text_to_audio"][metric]["ci95"]
        assert 0 <= lo <= mixtures["text_to_audio"][metric]["value"] <= hi <= 1
    written = json.loads((root / "eval" / "report-test.json").read_text())
    assert written["held_out_mixtures"] == mixtures
