"""Held-out query scoring: known geometry through query_report; `earshot evaluate` on a recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earshot.cli import main
from earshot.config import AudioConfig, EncoderConfig, ModelConfig, TextConfig
from earshot.data.cache import build_feature_cache
from earshot.data.recipe import load_recipe
from earshot.eval.examples import example_report, example_vectors
from earshot.eval.queries import evaluate_queries, query_report
from earshot.model.io import build_model, load_model, save_model
from earshot.testing.datasets import write_labels_dataset

N_BOOT = 50


def unit(*xs) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


E = {lab: unit(*np.eye(4)[i]) for i, lab in enumerate("ABCD")}


def geometry(clip_labels, windows_per_clip=None):
    """Each clip's windows: its label's axis, plus a weaker off-axis window where asked."""
    vectors, owner = [], []
    for i, lab in enumerate(clip_labels):
        n = 1 if windows_per_clip is None else windows_per_clip[i]
        for k in range(n):
            vectors.append(E[lab] if k == 0 else unit(*(0.3 * E[lab] + np.ones(4))))
            owner.append(i)
    vectors = np.array(vectors, dtype=np.float32).reshape(-1, 4)
    return vectors, np.array(owner, dtype=np.int64)


def queries_for(labels_counts):
    labels = [lab for lab, n in labels_counts.items() for _ in range(n)]
    return np.stack([E[lab] for lab in labels]), labels


def test_perfect_geometry_scores_one():
    clip_labels = ["A", "A", "A", "B", "B", "C", "C", "C", "C"]
    windows, owner = geometry(clip_labels, [1, 2, 3, 1, 2, 1, 1, 2, 1])
    q, q_labels = queries_for({"A": 3, "B": 2, "C": 4})
    report = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert (report["queries"], report["clips"], report["labels"]) == (9, 9, 3)
    t2a = report["text_to_audio"]
    assert t2a["mAP@10"]["value"] == pytest.approx(1.0)
    assert t2a["mAP@10"]["ci95"] == pytest.approx([1.0, 1.0])
    assert t2a["R@1"]["value"] == pytest.approx(1.0)
    assert t2a["relevance"] == "multi" and t2a["n_queries"] == 9 and t2a["n_items"] == 9
    prompts = report["class_prompts"]
    assert prompts["accuracy"]["value"] == pytest.approx(1.0)
    assert prompts["accuracy"]["ci95"] == pytest.approx([1.0, 1.0])
    assert prompts["chance_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert prompts["clips"] == 9
    assert report["mAP@10_by_label"] == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert report["accuracy_by_label"] == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert 0 < report["chance_mAP@10"] < 1.0
    assert not any(k.startswith("source ") for k in report)  # no clip_groups given
    json.dumps(report)  # JSON-ready


def test_chance_follows_the_splits_relevance_structure():
    # One relevant clip in ten: random ranking scores mean(1/rank) = H(10)/10 ≈ 0.293.
    clip_labels = ["A"] + ["B"] * 9
    windows, owner = geometry(clip_labels)
    q, q_labels = queries_for({"A": 400})
    one_in_ten = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    harmonic = sum(1 / r for r in range(1, 11)) / 10
    assert one_in_ten["chance_mAP@10"] == pytest.approx(harmonic, abs=0.04)
    assert one_in_ten["text_to_audio"]["mAP@10"]["value"] == pytest.approx(1.0)
    # Every clip relevant: any ranking is perfect, chance included.
    clip_labels = ["A"] * 5
    windows, owner = geometry(clip_labels)
    q, q_labels = queries_for({"A": 3})
    everything = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert everything["chance_mAP@10"] == pytest.approx(1.0)
    # Same seed, same draw: the figure is reproducible.
    again = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert again == everything


def test_a_clip_without_windows_is_left_out():
    clip_labels = ["A", "A", "B", "B", "A"]
    windows, owner = geometry(clip_labels, [1, 1, 1, 1, 0])  # the last A has no window
    q, q_labels = queries_for({"A": 2, "B": 2})
    report = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert report["clips"] == 4 and report["class_prompts"]["clips"] == 4
    assert report["text_to_audio"]["n_items"] == 4
    # Were it counted, an unretrievable relevant clip would pull A's mAP below 1.
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx(1.0)
    assert report["class_prompts"]["accuracy"]["value"] == pytest.approx(1.0)


def test_queries_whose_label_has_no_clip_are_dropped():
    clip_labels = ["A", "A", "B"]
    windows, owner = geometry(clip_labels)
    q, q_labels = queries_for({"A": 2, "B": 1, "D": 3})
    report = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert report["queries"] == 3 and report["labels"] == 2
    assert report["text_to_audio"]["n_queries"] == 3
    assert set(report["mAP@10_by_label"]) == {"A", "B"}
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx(1.0)
    assert report["class_prompts"]["chance_accuracy"] == pytest.approx(0.5)


def test_clips_of_labels_without_queries_count_for_retrieval_not_accuracy():
    clip_labels = ["A", "B", "C", "C"]
    windows, owner = geometry(clip_labels)
    q, q_labels = queries_for({"A": 1, "B": 1})
    report = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert report["clips"] == 4  # C's clips are distractors in the ranking
    assert report["class_prompts"]["clips"] == 2  # but have no prompt to be classified by
    assert set(report["accuracy_by_label"]) == {"A", "B"}


def test_top5_accuracy_counts_a_clip_whose_label_is_among_its_five_best_prompts():
    # 8 labels, one query each on its own axis, so a clip's prompt scores are its coordinates.
    labels = list("ABCDEFGH")
    eye = np.eye(8, dtype=np.float32)
    falling = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], dtype=np.float32)
    clips = {"A": eye[0], "B": falling, "C": eye[2], "D": eye[3], "E": falling,
             "F": falling, "G": eye[6], "H": falling}  # fmt: skip
    windows = np.stack([v / np.linalg.norm(v) for v in clips.values()])
    report = query_report(eye, labels, windows, np.arange(8), list(clips), n_boot=N_BOOT)
    prompts = report["class_prompts"]
    # B is 2nd, E 5th (in the top 5), F 6th and H 8th (out): right 4 of 8, top-5 6 of 8.
    assert prompts["accuracy"]["value"] == pytest.approx(4 / 8)
    assert prompts["top5_accuracy"]["value"] == pytest.approx(6 / 8)
    assert prompts["chance_top5_accuracy"] == pytest.approx(5 / 8)
    lo, hi = prompts["top5_accuracy"]["ci95"]
    assert lo <= 6 / 8 <= hi


def test_imperfect_geometry_shows_per_label():
    # One B clip sounds like an A: retrieval for B and B's accuracy both suffer; A's do not
    # lose accuracy, though B's stray clip now ranks among A's.
    clip_labels = ["A", "A", "B", "B"]
    windows = np.stack([E["A"], E["A"], E["B"], unit(1, -0.1, 0, 0)])
    owner = np.arange(4)
    q, q_labels = queries_for({"A": 2, "B": 2})
    report = query_report(q, q_labels, windows, owner, clip_labels, n_boot=N_BOOT)
    assert report["accuracy_by_label"] == {"A": 1.0, "B": 0.5}
    assert report["class_prompts"]["accuracy"]["value"] == pytest.approx(0.75)
    by_label = report["mAP@10_by_label"]
    assert by_label["A"] == pytest.approx(1.0)
    # B's queries: the true B clip first, then the two As, then the stray B (rank 4).
    assert by_label["B"] == pytest.approx((1 + 2 / 4) / 2, abs=1e-4)
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx((1 + 0.75) / 2)
    assert report["text_to_audio"]["R@1"]["value"] == pytest.approx(1.0)


def test_prompts_are_the_mean_of_a_labels_queries():
    # A's two queries lean opposite ways off the A axis; their mean is the axis itself, so a
    # clip on the A axis is classified A even though each single query is closer to B or C.
    clip_labels = ["A", "B", "C"]
    windows, owner = geometry(clip_labels)
    q = np.stack([unit(1, 1.2, 0, 0), unit(1, 0, 1.2, 0), E["B"], E["C"]])
    report = query_report(q, ["A", "A", "B", "C"], windows, owner, clip_labels, n_boot=N_BOOT)
    assert report["accuracy_by_label"] == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert report["mAP@10_by_label"]["A"] < 1.0


def test_per_source_sections_when_groups_are_given():
    clip_labels = ["A", "A", "B", "B", "C", "C"]
    groups = ["street", "street", "street", "street", "digits", "digits"]
    windows = np.stack([E["A"], E["A"], E["B"], unit(1, -0.2, 0, 0), E["C"], E["C"]])
    owner = np.arange(6)
    q, q_labels = queries_for({"A": 1, "B": 1, "C": 2})
    report = query_report(
        q, q_labels, windows, owner, clip_labels, clip_groups=groups, n_boot=N_BOOT
    )
    assert {k for k in report if k.startswith("source ")} == {"source street", "source digits"}
    digits, street = report["source digits"], report["source street"]
    assert digits["mAP@10"]["value"] == pytest.approx(1.0)
    assert digits["class_prompt_accuracy"]["value"] == pytest.approx(1.0)
    assert street["class_prompt_accuracy"]["value"] == pytest.approx(0.75)
    assert street["class_prompt_top5_accuracy"]["value"] == 1.0  # 3 labels: all in the top 5
    # A's query finds both As first (AP 1); B's finds B, then 2 As and 2 Cs, then the stray B.
    assert street["mAP@10"]["value"] == pytest.approx((1 + (1 + 2 / 6) / 2) / 2)
    for section in (digits, street):
        for metric in section.values():
            lo, hi = metric["ci95"]
            assert lo <= metric["value"] <= hi
    # The overall figures pool both sources.
    assert report["class_prompts"]["accuracy"]["value"] == pytest.approx(5 / 6)


# --- `earshot evaluate` on a recipe's test split --------------------------------------------

RECIPE = """
root = "data"

[templates]
np = ["{np}", "the sound of {np}"]

[[source]]
name = "synth"
folder = "synth"
train = "fold=1"
test = "fold=2"

[labels.low_hum]
np = ["a low hum"]
queries = ["a deep droning tone", "a bass drone"]

[labels.high_whistle]
np = ["a high whistle"]
queries = ["a shrill piercing tone"]

[labels.static_noise]
np = ["static noise"]
queries = ["white noise hissing", "radio static", "a hiss"]
"""


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, tiny_text_dir):
    return recipe_setup(tmp_path_factory.mktemp("eval-queries"), RECIPE, tiny_text_dir, 2)


def recipe_setup(root, recipe_text: str, text_dir, test_clips: int):
    """A synth dataset (1 train and `test_clips` test clips per label), the recipe, a tiny model."""
    write_labels_dataset(root / "data" / "synth", per_class={"1": 1, "2": test_clips}, seconds=1.0)
    recipe = root / "recipe.toml"
    recipe.write_text(recipe_text)
    config = ModelConfig(
        audio=AudioConfig(sample_rate=16000, fmax=8000.0, window_s=1.0, hop_s=1.0),
        encoder=EncoderConfig("cnn10", (4, 8, 8, 16), 16),
        text=TextConfig(str(text_dir), 16),
        joint_dim=8,
    )
    model_dir = save_model(build_model(config, seed=0), root / "model")
    return root, recipe, model_dir


def evaluate(capsys, model_dir, recipe, split, cache, out):
    code = main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--dataset",
            str(recipe),
            "--split",
            split,
            "--cache-dir",
            str(cache),
            "--out",
            str(out),
            "--n-boot",
            str(N_BOOT),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_cli_evaluate_scores_a_recipes_held_out_queries(tiny_setup, capsys):
    root, recipe, model_dir = tiny_setup
    report = evaluate(capsys, model_dir, recipe, "test", root / "cache", root / "eval")
    assert report["clips"] == 6 and report["captions"] == 2 * (2 + 1 + 3)  # queries per clip
    held = report["held_out_text_to_audio"]
    assert held["n_queries"] == 6 and held["n_items"] == 6
    for metric in ("R@1", "R@5", "R@10", "mAP@10"):
        lo, hi = held[metric]["ci95"]
        assert 0 <= lo <= held[metric]["value"] <= hi <= 1
    prompts = report["held_out_class_prompts"]
    assert prompts["clips"] == 6 and prompts["chance_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert 0 <= prompts["accuracy"]["value"] <= 1
    assert report["held_out_queries"] == 6 and report["held_out_labels"] == 3
    assert 0 < report["held_out_chance_mAP@10"] < 1
    assert set(report["held_out_mAP@10_by_label"]) == {"low_hum", "high_whistle", "static_noise"}
    assert "held_out_source synth" in report
    written = json.loads((root / "eval" / "report-test.json").read_text())
    assert written["held_out_text_to_audio"] == held


def test_cli_evaluate_adds_no_held_out_keys_outside_the_test_split(tiny_setup, capsys):
    root, recipe, model_dir = tiny_setup
    report = evaluate(capsys, model_dir, recipe, "train", root / "cache", root / "eval-train")
    assert report["clips"] == 3
    assert not any(k.startswith("held_out_") for k in report)


def test_evaluate_queries_matches_query_report(tiny_setup):
    from earshot.eval.evaluate import window_embeddings

    root, recipe_path, model_dir = tiny_setup
    recipe = load_recipe(recipe_path)
    dataset = recipe.dataset("test")
    model = load_model(model_dir)
    store = build_feature_cache(dataset, model.config.audio, root / "cache", progress=False)
    queries = recipe.queries()
    report = evaluate_queries(model, dataset, store, queries, n_boot=N_BOOT)
    texts = [q for qs in queries.values() for q in qs]
    direct = query_report(
        model.encode_text(texts).float().numpy(),
        [lab for lab, qs in queries.items() for _ in qs],
        window_embeddings(model, store),
        store.window_clip,
        [c.label for c in dataset.clips],
        clip_groups=["synth"] * len(dataset),
        n_boot=N_BOOT,
        clip_recordings=[c.recording for c in dataset.clips],
    )
    by_example = report.pop("search_by_example")
    assert report == direct
    assert by_example == example_report(
        window_embeddings(model, store),
        store.window_clip,
        [c.label for c in dataset.clips],
        [c.recording or c.key for c in dataset.clips],
        ["synth"] * len(dataset),
        n_boot=N_BOOT,
    )


def test_search_by_example_leaves_the_examples_own_recording_out():
    # Recording a1's two cuts are the same sound; a2 is label A too, from elsewhere, and
    # leans towards B. Left in, a1's other cut would come first and count as a miss.
    e1, e2 = np.eye(4, dtype=np.float32)[:2]
    a2 = unit(*(0.8 * e1 + 0.6 * e2))
    vectors = np.stack([e1, e1, a2, e2, unit(*(0.1 * e1 + e2))])
    labels, recordings = ["A", "A", "A", "B", "B"], ["a1", "a1", "a2", "b1", "b2"]
    report = example_report(vectors, np.arange(5), labels, recordings, n_boot=N_BOOT)
    assert report["examples"] == 5 and report["n_items"] == 5
    assert report["R@1"]["value"] == 1.0 and report["mAP@10"]["value"] == 1.0
    assert report["recordings resampled"]["recordings"] == 4
    assert 0 < report["chance_mAP@10"] < 1
    # An example is its windows' mean, normalised, as Searcher.embed_samples makes it.
    means = example_vectors(np.stack([e1, e2, e1]), np.array([0, 0, 1]), 2)
    assert np.allclose(means, [unit(*(e1 + e2)), e1])
    with pytest.raises(ValueError, match="another recording"):
        example_report(vectors, np.arange(5), labels, ["r"] * 5)
    # Other example vectors (a variant of embedding an example) are searched for instead:
    # a2 searching as B's e2 finds B's clips, not its own label's, and the figure falls.
    swapped = vectors.copy()
    swapped[2] = e2
    other = example_report(
        vectors, np.arange(5), labels, recordings, n_boot=N_BOOT, examples=swapped
    )
    assert other["mAP@10"]["value"] < 1.0 and other["examples"] == 5


VAL_RECIPE = """
root = "data"

[templates]
np = ["{np}", "the sound of {np}"]

[[source]]
name = "synth"
folder = "synth"
train = "fold=1"
test = "fold=2"
val = { group = "file", fraction = 0.5 }

[labels.low_hum]
np = ["a low hum"]
mix = true
queries = ["a deep droning tone"]
val_queries = ["a humming drone", "a low steady tone"]

[labels.high_whistle]
np = ["a high whistle"]
mix = true
queries = ["a shrill piercing tone"]
val_queries = ["a whistling sound"]

[labels.static_noise]
np = ["static noise"]
mix = true
queries = ["white noise hissing"]
val_queries = ["radio static", "a hiss", "noise like a detuned radio"]
"""


@pytest.fixture(scope="module")
def val_setup(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("eval-val-queries")
    write_labels_dataset(root / "data" / "synth", per_class={"1": 6, "2": 2}, seconds=1.0)
    (root / "recipe.toml").write_text(VAL_RECIPE)
    _, _, model_dir = recipe_setup(root / "m", RECIPE, tiny_text_dir, 1)
    return root, root / "recipe.toml", model_dir


def test_cli_evaluate_scores_the_val_split_with_the_val_queries(val_setup, capsys):
    root, recipe_path, model_dir = val_setup
    recipe = load_recipe(recipe_path)
    val = recipe.dataset("val")
    labels_in_val = {c.label for c in val.clips}
    assert 0 < len(val) < 18 and len(labels_in_val) >= 2  # the carve took some clips, not all
    report = evaluate(capsys, model_dir, recipe_path, "val", root / "cache", root / "eval")
    assert report["clips"] == len(val)
    n_val_queries = sum(len(recipe.labels[lab].val_queries) for lab in labels_in_val)
    assert report["val_queries_queries"] == n_val_queries
    assert report["val_queries_text_to_audio"]["n_queries"] == n_val_queries
    assert set(report["val_queries_mAP@10_by_label"]) == labels_in_val
    assert report["val_queries_class_prompts"]["clips"] == len(val)
    # The mix labels in val are mixed and found by two val queries joined.
    mixtures = report["val_queries_mixtures"]
    n_pairs = len(labels_in_val) * (len(labels_in_val) - 1) // 2
    assert mixtures["pairs"] == n_pairs and mixtures["queries"] == 4 * n_pairs
    assert 0 <= mixtures["text_to_audio"]["mAP@10"]["value"] <= 1
    assert not any(k.startswith("held_out_") for k in report)  # test queries never touch val
    written = json.loads((root / "eval" / "report-val.json").read_text())
    assert written["val_queries_text_to_audio"] == report["val_queries_text_to_audio"]


def test_cli_evaluate_embeds_the_splits_windows_once(tiny_setup, capsys, monkeypatch):
    import earshot.eval.evaluate as ev
    import earshot.eval.mixtures as mx
    import earshot.eval.queries as qs

    calls = []
    real = ev.window_embeddings

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    for module in (ev, mx, qs):
        monkeypatch.setattr(module, "window_embeddings", counted)
    root, recipe, model_dir = tiny_setup
    report = evaluate(capsys, model_dir, recipe, "test", root / "cache", root / "eval-once")
    assert "held_out_text_to_audio" in report
    assert len(calls) == 1


def test_passing_window_vectors_gives_the_same_reports(tiny_setup):
    from earshot.eval.evaluate import evaluate_split, window_embeddings

    root, recipe_path, model_dir = tiny_setup
    recipe = load_recipe(recipe_path)
    dataset = recipe.dataset("test")
    model = load_model(model_dir)
    store = build_feature_cache(dataset, model.config.audio, root / "cache", progress=False)
    windows = window_embeddings(model, store)
    assert evaluate_split(model, dataset, store, n_boot=N_BOOT, windows=windows) == (
        evaluate_split(model, dataset, store, n_boot=N_BOOT)
    )
    queries = recipe.queries()
    assert evaluate_queries(model, dataset, store, queries, n_boot=N_BOOT, windows=windows) == (
        evaluate_queries(model, dataset, store, queries, n_boot=N_BOOT)
    )
    # Vectors that are not the split's own change the figures: the argument is really used.
    shuffled = windows[np.random.default_rng(0).permutation(len(windows))]
    other = evaluate_queries(model, dataset, store, queries, n_boot=N_BOOT, windows=-shuffled)
    assert other != evaluate_queries(model, dataset, store, queries, n_boot=N_BOOT)


def test_recording_cis_sit_beside_the_clip_cis():
    clip_labels = ["A"] * 6 + ["B"] * 6
    windows, owner = geometry(clip_labels)
    windows[3:6] = E["B"]  # A's second recording sounds like B
    q, q_labels = queries_for({"A": 4, "B": 4})
    own = [f"r{i:03d}" for i in range(12)]  # every clip its own recording
    two_each = ["a1"] * 3 + ["a2"] * 3 + ["b1"] * 3 + ["b2"] * 3
    args = (q, q_labels, windows, owner, clip_labels)
    plain = query_report(*args, n_boot=N_BOOT)
    assert "recordings resampled" not in plain
    alone = query_report(*args, n_boot=N_BOOT, clip_recordings=own)["recordings resampled"]
    assert alone["recordings"] == 12
    accuracy = plain["class_prompts"]["accuracy"]
    assert alone["class_prompt_accuracy"]["value"] == accuracy["value"]
    assert alone["class_prompt_accuracy"]["ci95"] == pytest.approx(accuracy["ci95"])  # same CI
    report = query_report(*args, n_boot=N_BOOT, clip_recordings=two_each, clip_groups=["s"] * 12)
    grouped = report["recordings resampled"]
    assert grouped["recordings"] == 4
    assert grouped["mAP@10"]["value"] == pytest.approx(report["text_to_audio"]["mAP@10"]["value"])
    width = lambda m: m["ci95"][1] - m["ci95"][0]  # noqa: E731
    assert width(grouped["class_prompt_accuracy"]) > width(accuracy)  # 4 recordings, not 12 clips
    assert width(grouped["mAP@10"]) > width(report["text_to_audio"]["mAP@10"])
    assert report["source s"]["recordings resampled"] == grouped  # one source: the same figures


def test_evaluate_queries_resamples_the_recipes_recordings(tiny_setup):
    root, recipe_path, model_dir = tiny_setup
    recipe = load_recipe(recipe_path)
    dataset = recipe.dataset("test")
    model = load_model(model_dir)
    store = build_feature_cache(dataset, model.config.audio, root / "cache", progress=False)
    report = evaluate_queries(model, dataset, store, recipe.queries(), n_boot=N_BOOT)
    # The synth folder has no recording column: each file is its own recording.
    assert report["recordings resampled"]["recordings"] == len(dataset)


def test_cli_evaluate_refuses_a_bad_n_boot_before_any_work(capsys, monkeypatch):
    """--n-boot 0 once failed only after scoring the whole split: now argparse refuses it."""
    import earshot.commands.train as train_cmds

    def never(args):
        raise AssertionError("evaluate ran with --n-boot 0")

    monkeypatch.setattr(train_cmds, "cmd_evaluate", never)
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--model", "m", "--dataset", "d", "--n-boot", bad])
        assert exc.value.code == 2
        assert "--n-boot" in capsys.readouterr().err
