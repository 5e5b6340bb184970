"""Recipes and caption mining: splits, caption language, held-out queries, the default recipe."""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earshot.data.datasets import DatasetError, load_dataset
from earshot.data.mining import (
    SECOND_EVENT,
    compile_rules,
    mine_captions,
    normalise,
    read_corpus,
)
from earshot.data.recipe import check_queries_held_out, load_recipe
from earshot.errors import EarshotError

REPO = Path(__file__).resolve().parents[1]

# --- mining ---------------------------------------------------------------------------------

RULES = {
    "dog_bark": {"include": r"\bbark"},
    "siren": {"include": r"\bsirens?\b", "exclude": r"\bpolice\b"},
}


def mine(sentences, rules=RULES, **kw):
    return mine_captions(sentences, compile_rules(rules), **kw)


def test_normalise_folds_case_spacing_and_final_punctuation():
    assert normalise("  A Dog   barks!  ") == "a dog barks"
    assert normalise("a dog barks.") == normalise("A DOG BARKS") == "a dog barks"
    assert normalise("a dog barks?!.") == "a dog barks"
    assert normalise("a dog, barks") == "a dog, barks"  # inner punctuation stays


def test_a_sentence_matching_two_labels_is_dropped():
    picked = mine(["A dog barks at a siren", "A dog barks", "A siren wails"])
    assert picked == {"dog_bark": ["A dog barks"], "siren": ["A siren wails"]}


def test_sentences_matching_no_label_are_ignored_and_every_label_has_a_list():
    picked = mine(["A cat meows", "Rain falls on a roof"])
    assert picked == {"dog_bark": [], "siren": []}


@pytest.mark.parametrize(
    "sentence",
    [
        "A dog barks while cars pass",
        "A dog barks and a woman speaks",
        "A dog barks, then stops",
        "A dog barks followed by silence",
        "A dog barks in the background",
        "A dog barks as people talk",
        "A dog barks along with a rooster",
        "A dog barks, growls, and whines",  # two commas: a list of events
    ],
)
def test_second_event_words_and_lists_drop_a_sentence(sentence):
    assert mine([sentence, "A dog barks loudly"]) == {
        "dog_bark": ["A dog barks loudly"],
        "siren": [],
    }


def test_second_event_pattern_spares_single_event_sentences():
    for ok in ["A dog barks loudly", "A dog barks, loudly", "A dog barks and barks"]:
        assert not SECOND_EVENT.search(ok), ok
    assert SECOND_EVENT.search("A dog barks and a woman speaks")
    assert SECOND_EVENT.search("A dog barks WHILE it rains")  # any case
    assert mine(["A dog barks, loudly"])["dog_bark"] == ["A dog barks, loudly"]  # one comma ok
    assert mine(["A dog barks and barks"])["dog_bark"] == ["A dog barks and barks"]


def test_global_and_per_label_exclude():
    sentences = ["A siren wails", "A police siren wails", "A dog barks at night", "A dog barks"]
    picked = mine(sentences, exclude=re.compile(r"\bnight\b"))
    assert picked["siren"] == ["A siren wails"]  # the label's own exclude
    assert picked["dog_bark"] == ["A dog barks"]  # the global exclude
    # A label's exclude only rules out its own sentences.
    rules = {"dog_bark": {"include": r"\bbark", "exclude": r"\bsiren"}, "siren": RULES["siren"]}
    assert mine(["A siren wails"], rules)["siren"] == ["A siren wails"]


def test_forbidden_sentences_are_never_picked_compared_normalised():
    sentences = ["A dog barks at the mailman.", "a DOG barks   loudly", "A dog barks"]
    picked = mine(sentences, forbidden=["a dog barks at the mailman", "A dog barks loudly!"])
    assert picked["dog_bark"] == ["A dog barks"]


def test_duplicates_are_picked_once():
    picked = mine(["A dog barks", "a dog barks.", " A dog barks "])
    assert len(picked["dog_bark"]) == 1 and normalise(picked["dog_bark"][0]) == "a dog barks"


def test_per_label_cap_and_max_words():
    sentences = [f"A dog barks number {i}" for i in range(20)]
    assert len(mine(sentences, per_label=7)["dog_bark"]) == 7
    assert mine(sentences, per_label=0)["dog_bark"] == []
    five, six = "A dog barks very loudly", "A dog barks very loudly today"
    assert mine([five, six], max_words=5)["dog_bark"] == [five]  # exactly max_words is kept
    assert sorted(mine([five, six], max_words=6)["dog_bark"]) == sorted([five, six])


def test_pick_is_deterministic_and_independent_of_input_order():
    words = ["near", "far", "loudly", "softly", "twice", "again"]
    sentences = [f"A dog barks {w}" for w in ["at me", "at night", *words]]
    sentences += [f"A siren wails {w}" for w in words]
    first = mine(sentences, per_label=4)
    for seed in range(5):
        shuffled = sentences[:]
        random.Random(seed).shuffle(shuffled)
        assert mine(shuffled, per_label=4) == first
    # Adding a row that matches nothing changes no pick.
    assert mine([*sentences, "A cat meows"], per_label=4) == first
    assert all(len(v) == 4 for v in first.values())


def test_invalid_rules_name_the_label():
    with pytest.raises(EarshotError, match="'siren'"):
        compile_rules({"dog_bark": {"include": "bark"}, "siren": {"include": "(unclosed"}})
    with pytest.raises(EarshotError, match="'dog_bark'"):
        compile_rules({"dog_bark": {"include": "bark", "exclude": "[z-a]"}})
    with pytest.raises(EarshotError, match="'hum'"):
        compile_rules({"hum": {"exclude": "x"}})  # no include at all


def test_read_corpus(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,  A dog barks \n2,\n3,A siren\n", encoding="utf-8")
    assert read_corpus(path, "text") == ["A dog barks", "A siren"]
    with pytest.raises(EarshotError, match="no column 'caption'"):
        read_corpus(path, "caption")
    with pytest.raises(EarshotError, match="cannot read caption corpus"):
        read_corpus(tmp_path / "none.csv", "text")


# --- recipes on synthetic folders -----------------------------------------------------------


def write_folder(root: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A labels.csv folder whose first column names tiny WAV files (written here)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    for row in rows:
        path = root / row[0]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.zeros(160, dtype=np.float32), 16000)
    return root


STREET_LABELS = ["dog_bark", "siren", "hum"]
N_RECORDINGS = 12

RECIPE = """
root = "data"
val_captions = 3

[mining]
corpora = [["corpus.csv", "text"]]
per_label = 5
max_words = 10
exclude = '\\bwoman\\b'

[templates]
np = ["{np}", "the sound of {np}", "{np} nearby"]
s = ["{s}", "{s} outside"]
mixture = ["{s1} while {s2}", "{np1} and {np2}", "{s1} as {s2}"]

[[source]]
name = "street"
folder = "street"
train = "split=train"
test = "split=test"
val = { group = "recording", fraction = 0.5 }
tags = ["outdoors"]
weight = 3.0

[[source]]
name = "talk"
folder = "talk"
label_column = "key"
label_map = { d1 = "one" }
weight = 0.25

[tags]
dog = ["a dog", "dog sounds"]
outdoors = ["outdoor ambience"]
speech = ["someone speaking"]

[labels.dog_bark]
np = ["a dog barking", "a barking dog"]
s = ["a dog barks"]
captions = ["woof woof"]
tags = ["dog"]
mix = true
mine = { include = '\\bbark' }
queries = ["a hound yapping", "a canine woofing", "a dog barking at the mailman"]

[labels.siren]
np = ["a siren"]
s = ["a siren wails", "an alarm sounds"]
mix = true
mine = { include = '\\bsirens?\\b' }
queries = ["an ambulance rushing past"]
val_queries = ["a fire engine going by", "an ambulance siren fading away"]

[labels.hum]
np = ["a low hum"]
s = ["something hums"]
mix = true

[labels.one]
plain = true
np = ["the word one"]
s = ["someone says one"]
tags = ["speech"]
"""

CORPUS = [
    "A dog barks loudly.",
    "A dog is barking",
    "A dog Barking at the mailman.",  # a query, differing in case and the final period
    "A siren wails in the city",
    "A dog barks while a siren wails",  # two sounds
    "A woman hears a dog bark",  # the global exclude
    "Rain falls",  # no label
]


def write_recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    data = tmp_path / "data"
    rows = []
    for rec in range(N_RECORDINGS):
        label = STREET_LABELS[rec % 3]
        rows += [[f"audio/r{rec}-{k}.wav", label, f"rec{rec}", "train"] for k in range(3)]
    for k in range(2):
        rows += [[f"audio/t-{lab}-{k}.wav", lab, f"test{k}", "test"] for lab in STREET_LABELS]
    write_folder(data / "street", ["file", "label", "recording", "split"], rows)
    write_folder(
        data / "talk",
        ["file", "key"],
        [["a.wav", "d1"], ["b.wav", "d1"], ["c.wav", "d2"]],  # d2: a label the recipe lacks
    )
    with (data / "corpus.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([i, s] for i, s in enumerate(CORPUS))
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def recipe_path(tmp_path):
    return write_recipe(tmp_path)


@pytest.fixture
def recipe(recipe_path):
    return load_recipe(recipe_path)


@pytest.fixture
def splits(recipe):
    with pytest.warns(UserWarning):  # the unknown d2 row and the query-less hum test clips
        out = {s: recipe.dataset(s) for s in ("train", "val", "test")}
    return out


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_splits_are_disjoint_and_val_holds_whole_recordings(recipe_path, splits):
    keys = {s: {c.key for c in d.clips} for s, d in splits.items()}
    assert all(keys.values())
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    for d in splits.values():
        assert len({c.key for c in d.clips}) == len(d.clips)
    street = read_rows(recipe_path.parent / "data" / "street" / "labels.csv")

    def recordings(split):
        return {
            street[k.split("/", 1)[1]]["recording"] for k in keys[split] if k.startswith("street/")
        }

    train_recs, val_recs = recordings("train"), recordings("val")
    assert train_recs and val_recs and not train_recs & val_recs
    # Every recording sits wholly on one side: all three of its files.
    assert sum(k.startswith("street/") for k in keys["train"]) == 3 * len(train_recs)
    assert sum(k.startswith("street/") for k in keys["val"]) == 3 * len(val_recs)
    assert len(train_recs) + len(val_recs) == N_RECORDINGS
    # Train and val come from the train rows only; test from the test rows only.
    for split in ("train", "val"):
        assert all(
            street[k.split("/", 1)[1]]["split"] == "train"
            for k in keys[split]
            if k.startswith("street/")
        )
    assert {street[k.split("/", 1)[1]]["split"] for k in keys["test"]} == {"test"}


def test_clips_name_the_recording_they_were_cut_from(recipe_path, splits):
    # The column val is carved by names the recording; a source without it: each file its own.
    street = read_rows(recipe_path.parent / "data" / "street" / "labels.csv")
    for d in splits.values():
        for c in d.clips:
            source, file = c.key.split("/", 1)
            if source == "street":
                assert c.recording == f"street/{street[file]['recording']}"
            else:
                assert c.recording == c.key  # "talk/a.wav"
    test_recordings = {c.recording for c in splits["test"].clips}
    assert test_recordings == {"street/test0", "street/test1"}  # 4 query-bearing clips in 2


def test_every_label_puts_one_recording_of_each_label_in_val(tmp_path):
    # A carve of 1 % takes no recording here; `every_label` then takes, per label, its
    # recording with the lowest hash, and the label's other three still train.
    tiny = RECIPE.replace("fraction = 0.5 }", "fraction = 0.01 }")
    plain = load_recipe(write_recipe(tmp_path / "plain", tiny))
    with pytest.raises(EarshotError, match="no clips in split 'val'"):
        plain.dataset("val")
    every = tiny.replace("fraction = 0.01 }", "fraction = 0.01, every_label = true }")
    recipe = load_recipe(write_recipe(tmp_path / "every", every))
    val = recipe.dataset("val")
    with pytest.warns(UserWarning, match="does not describe"):  # talk's unknown d2 row
        train = recipe.dataset("train")
    street_val = [c for c in val.clips if c.key.startswith("street/")]
    by_label = {lab: {c.recording for c in street_val if c.label == lab} for lab in STREET_LABELS}
    assert all(len(recs) == 1 for recs in by_label.values()), by_label
    assert len(street_val) == 3 * len(STREET_LABELS)  # whole recordings, 3 clips each
    train_recs = {c.recording for c in train.clips if c.key.startswith("street/")}
    assert len(train_recs) == N_RECORDINGS - 3
    assert not train_recs & {c.recording for c in street_val}


def test_an_unknown_val_key_is_refused(tmp_path):
    path = write_recipe(tmp_path, RECIPE.replace("fraction = 0.5 }", "fraction = 0.5, by = 1 }"))
    with pytest.raises(EarshotError, match="unknown key.*by.*known: group, fraction, every_label"):
        load_recipe(path)


def test_val_carving_is_deterministic(recipe_path, splits):
    val = load_recipe(recipe_path).dataset("val")
    assert [c.key for c in val.clips] == [c.key for c in splits["val"].clips]


def test_a_source_without_val_gives_val_nothing(splits):
    # "talk" has no `val`: all of it trains, none of it validates.
    assert not any(c.key.startswith("talk/") for c in splits["val"].clips)
    assert sorted(c.key for c in splits["train"].clips if c.key.startswith("talk/")) == [
        "talk/a.wav",
        "talk/b.wav",
    ]


def test_test_clips_carry_exactly_their_labels_queries(recipe, splits):
    test = splits["test"]
    assert {c.label for c in test.clips} == {"dog_bark", "siren"}  # hum has no queries
    assert len(test) == 4
    assert test.problems == {"test clips of labels without queries": 2}
    for clip in test.clips:
        assert clip.captions == recipe.labels[clip.label].queries
        assert clip.caption_tags == tuple(frozenset([clip.label]) for _ in clip.captions)
    assert recipe.queries() == {
        "dog_bark": ["a hound yapping", "a canine woofing", "a dog barking at the mailman"],
        "siren": ["an ambulance rushing past"],
    }


def test_val_captions_come_from_label_captions(recipe, splits):
    """For labels without val queries."""
    val = splits["val"]
    assert val.clips
    for clip in val.clips:
        if recipe.labels[clip.label].val_queries:
            continue
        own = recipe.label_captions(clip.label)
        assert 1 <= len(clip.captions) <= 3  # val_captions
        assert len(clip.captions) == min(3, len(own))
        assert set(clip.captions) <= set(own)
        assert clip.caption_tags == tuple(frozenset([clip.label]) for _ in clip.captions)
        assert not set(clip.captions) & set(recipe.labels[clip.label].queries)


def test_val_clips_of_a_label_with_val_queries_carry_exactly_those(recipe, splits):
    """Val queries replace the template captions on val clips, so picking the best epoch
    rewards wording never trained on; labels without them keep their template captions."""
    by_label = {}
    for clip in splits["val"].clips:
        by_label.setdefault(clip.label, []).append(clip)
    assert "siren" in by_label and set(by_label) - {"siren"}
    for clip in by_label["siren"]:
        assert clip.captions == ("a fire engine going by", "an ambulance siren fading away")
    assert recipe.all_val_queries() == list(recipe.labels["siren"].val_queries)
    for clip in splits["train"].clips:  # never trained on
        assert not set(clip.captions) & set(recipe.all_val_queries())


def test_a_val_query_is_never_mined_as_a_training_caption(tmp_path):
    text = RECIPE.replace(
        'val_queries = ["a fire engine going by",', 'val_queries = ["A siren wails in the city",'
    )
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert "A siren wails in the city" in CORPUS
    assert all(normalise(c) != "a siren wails in the city" for c in recipe.mined()["siren"])


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        # a val query equal to a training caption of another label
        (
            'val_queries = ["a fire engine going by",',
            'val_queries = ["THE SOUND OF A LOW HUM.",',
            "held-out queries also used as training captions: THE SOUND OF A LOW HUM.",
        ),
        # a val query repeating a test query: selection would then be tuned on the test
        (
            'val_queries = ["a fire engine going by",',
            'val_queries = ["A canine woofing",',
            "val queries that repeat test queries: A canine woofing",
        ),
    ],
)
def test_a_val_query_that_is_not_held_out_is_refused(tmp_path, old, new, match):
    assert old in RECIPE
    with pytest.raises(DatasetError, match=match):
        load_recipe(write_recipe(tmp_path, RECIPE.replace(old, new)))


def test_label_captions_expand_templates_and_capitalise(recipe):
    assert recipe.label_captions("dog_bark") == [
        "A dog barking",
        "The sound of a dog barking",
        "A dog barking nearby",
        "A barking dog",
        "The sound of a barking dog",
        "A barking dog nearby",
        "A dog barks",
        "A dog barks outside",
        "Woof woof",
    ]


def test_plain_labels_use_their_phrases_verbatim(recipe, splits):
    assert recipe.label_captions("one") == ["The word one", "Someone says one"]
    talk = [c for c in splits["train"].clips if c.key.startswith("talk/")]
    for clip in talk:
        assert clip.label == "one"  # label_map: d1 → one
        assert clip.tags == frozenset({"one", "speech"})
        assert dict(zip(clip.captions, clip.caption_tags, strict=True)) == {
            "The word one": frozenset({"one"}),
            "Someone says one": frozenset({"one"}),
            "someone speaking": frozenset({"speech"}),
        }


def test_training_captions_hold_templates_mined_sentences_and_tag_captions(recipe, splits):
    mined = recipe.mined()
    assert mined["dog_bark"] and mined["siren"]
    assert {normalise(s) for s in mined["dog_bark"]} == {"a dog barks loudly", "a dog is barking"}
    assert mined["siren"] == ["A siren wails in the city"]
    assert "hum" not in mined  # no `mine` pattern, nothing mined
    dogs = [c for c in splits["train"].clips if c.label == "dog_bark"]
    assert dogs
    for clip in dogs:
        assert clip.tags == frozenset({"dog_bark", "dog", "outdoors"})
        tags = dict(zip(clip.captions, clip.caption_tags, strict=True))
        assert len(tags) == len(clip.captions)  # each caption once
        for caption in recipe.label_captions("dog_bark"):
            assert tags[caption] == frozenset({"dog_bark"})
        for caption in mined["dog_bark"]:
            assert tags[caption] == frozenset({"dog_bark"})
        assert tags["a dog"] == tags["dog sounds"] == frozenset({"dog"})
        assert tags["outdoor ambience"] == frozenset({"outdoors"})  # the source's tag
        assert set(tags) == (
            set(recipe.label_captions("dog_bark"))
            | set(mined["dog_bark"])
            | {"a dog", "dog sounds", "outdoor ambience"}
        )
        # Every caption's tags are among the clip's: each caption matches its own clip.
        assert all(t <= clip.tags for t in clip.caption_tags)
    # The mined sentence equal to a query (case, final period aside) was never taken.
    assert not any("mailman" in c for clip in splits["train"].clips for c in clip.captions)


def test_training_captions_method_matches_clips(recipe):
    pairs = recipe.training_captions("dog_bark")
    assert ("a dog", frozenset({"dog"})) in pairs
    assert ("A dog barks", frozenset({"dog_bark"})) in pairs
    # Source tags are added per clip, not per label.
    assert all(c != "outdoor ambience" for c, _ in pairs)


def test_source_weight_lands_on_every_clip(splits):
    for d in splits.values():
        for clip in d.clips:
            assert clip.weight == (3.0 if clip.key.startswith("street/") else 0.25)


def test_rows_the_recipe_does_not_describe_are_counted(splits):
    assert splits["train"].problems == {"talk rows with a label the recipe does not describe": 1}
    assert not any(c.key == "talk/c.wav" for c in splits["train"].clips)


def test_mixture_captions_only_for_mix_labels_tagged_with_both(recipe):
    mixes = recipe.mixture_captions(per_pair=2)
    mixable = {"dog_bark", "siren", "hum"}
    pairs = Counter(tags for _, tags in mixes)
    assert set(pairs) == {frozenset(p) for p in [("dog_bark", "siren"), ("dog_bark", "hum")]} | {
        frozenset(("siren", "hum"))
    }
    assert all(len(t) == 2 and t <= mixable for t in pairs)
    # per_pair caps each ordered pair: two orders per unordered pair.
    assert all(n == 4 for n in pairs.values())
    one = recipe.mixture_captions(per_pair=1)
    assert len(one) == 6  # 3 labels → 6 ordered pairs, one caption each
    assert all(c[0].isupper() for c, _ in mixes)
    assert not any("one" in c.lower().split() for c, _ in recipe.mixture_captions(per_pair=50))
    # "{s1} while {s2}" with the pair's own phrases.
    everything = {c for c, _ in recipe.mixture_captions(per_pair=100)}
    assert "A siren wails while a dog barks" in everything
    assert "A low hum and a dog barking" in everything
    assert recipe.mixture_captions(per_pair=2) == mixes  # deterministic


def test_no_mix_labels_no_mixture_captions(tmp_path):
    path = write_recipe(tmp_path, RECIPE.replace("mix = true\n", ""))
    assert load_recipe(path).mixture_captions() == []


def test_load_dataset_routes_a_toml_to_its_recipe(recipe_path, splits):
    with pytest.warns(UserWarning):
        test = load_dataset(str(recipe_path), "test")
    assert test.name == "recipe:recipe.toml" and test.split == "test"
    assert [c.key for c in test.clips] == [c.key for c in splits["test"].clips]
    with pytest.raises(DatasetError, match="one of train, val, test"):
        load_dataset(recipe_path, "development")


def test_unknown_label_keys_are_refused(tmp_path):
    path = write_recipe(tmp_path, RECIPE.replace('captions = ["woof woof"]', 'caption = ["x"]'))
    with pytest.raises(DatasetError, match=r"label 'dog_bark'.*unknown keys \['caption'\]"):
        load_recipe(path)


def test_missing_root_or_recipe_is_a_clear_error(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.replace('root = "data"', 'root = "nowhere"'), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"reads its audio from '.*nowhere', which does not"):
        load_recipe(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_recipe(tmp_path / "absent.toml")
    path.write_text("[labels\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="cannot read recipe"):
        load_recipe(path)


def test_a_recipe_without_sources_is_refused(tmp_path):
    path = write_recipe(tmp_path, 'root = "data"\n[labels.a]\nnp = ["a"]\n')
    with pytest.raises(DatasetError, match=r"lists no \[\[source\]\]"):
        load_recipe(path)


def test_bad_mining_rule_is_an_error_naming_the_label(tmp_path):
    text = RECIPE.replace("'\\bsirens?\\b'", "'(siren'")
    assert text != RECIPE
    path = write_recipe(tmp_path, text)
    with pytest.raises(EarshotError, match="'siren'"):
        load_recipe(path)


def test_a_missing_corpus_warns_and_mines_without_it(tmp_path):
    text = RECIPE.replace(
        'corpora = [["corpus.csv", "text"]]',
        'corpora = [["corpus.csv", "text"], ["absent.csv", "text"]]',
    )
    with pytest.warns(UserWarning, match=r"caption corpus .*absent\.csv'? not found"):
        recipe = load_recipe(write_recipe(tmp_path, text))
    assert recipe.mined()["siren"] == ["A siren wails in the city"]


def test_an_invalid_global_exclude_is_a_dataset_error(tmp_path):
    text = RECIPE.replace("exclude = '\\bwoman\\b'", "exclude = '(woman'")
    assert text != RECIPE
    with pytest.raises(DatasetError, match="mining.exclude is not a valid pattern"):
        load_recipe(write_recipe(tmp_path, text))


@pytest.mark.parametrize(
    "edits",
    [
        # a free-form caption equal to a query, differing in case and final period
        [('captions = ["woof woof"]', 'captions = ["A hound yapping."]')],
        # a template expansion ("the sound of {np}") equal to a query
        [
            ('np = ["a siren"]', 'np = ["a siren", "an ambulance"]'),
            ('queries = ["an ambulance rushing past"]', 'queries = ["the sound of an ambulance"]'),
        ],
        # a tag caption
        [('dog = ["a dog", "dog sounds"]', 'dog = ["a dog", "A CANINE WOOFING"]')],
        # a caption of a label that carries no queries itself
        [('np = ["a low hum"]', 'np = ["a low hum", "a dog barking at the mailman!"]')],
        # a tag caption that only a source's `tags` bring in
        [('outdoors = ["outdoor ambience"]', 'outdoors = ["an ambulance rushing past"]')],
    ],
)
def test_a_query_used_as_a_training_caption_is_refused(tmp_path, edits):
    text = RECIPE
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(DatasetError, match="held-out queries also used as training captions"):
        load_recipe(write_recipe(tmp_path, text))


def test_a_query_used_as_a_mixture_caption_is_refused(tmp_path):
    text = RECIPE.replace(
        'queries = ["an ambulance rushing past"]',
        'queries = ["an ambulance rushing past", "A siren wails while a dog barks"]',
    )
    with pytest.raises(DatasetError, match="A siren wails while a dog barks"):
        load_recipe(write_recipe(tmp_path, text))


def test_check_queries_held_out_takes_extra_captions(recipe):
    check_queries_held_out(recipe)  # the recipe itself is clean
    with pytest.raises(DatasetError, match="a hound yapping"):
        check_queries_held_out(recipe, extra=["A hound yapping."])


# --- the default recipe on the real data ----------------------------------------------------


@pytest.fixture(scope="module")
def default_recipe(shared_data):
    import warnings

    recipe = load_recipe(REPO / "configs" / "default-data.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = {s: recipe.dataset(s) for s in ("train", "val", "test")}
    return recipe, splits


def _source_rows(recipe, name):
    source = next(s for s in recipe.sources if s.name == name)
    return read_rows(source.folder / "labels.csv")


@pytest.mark.realdata
def test_default_recipe_loads_with_every_split(default_recipe):
    recipe, splits = default_recipe
    assert all(len(d) > 0 for d in splits.values())
    for d in splits.values():
        for clip in d.clips:
            assert clip.label in recipe.labels and clip.path.is_file()
            assert len(clip.captions) == len(clip.caption_tags) > 0
            assert all(t <= clip.tags for t in clip.caption_tags)
    keys = {s: {c.key for c in d.clips} for s, d in splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


@pytest.mark.realdata
def test_default_recipe_holds_its_queries_out(default_recipe):
    recipe, splits = default_recipe
    queries = {normalise(q) for q in recipe.all_queries()}
    assert queries
    training = {normalise(c) for clip in splits["train"].clips for c in clip.captions}
    training |= {normalise(c) for clip in splits["val"].clips for c in clip.captions}
    training |= {normalise(c) for c, _ in recipe.mixture_captions()}
    for label in recipe.labels:
        training |= {normalise(c) for c, _ in recipe.training_captions(label)}
    assert not queries & training
    for label, qs in recipe.queries().items():
        assert len(qs) >= 5, label
    test_captions = {normalise(c) for clip in splits["test"].clips for c in clip.captions}
    assert test_captions <= queries


@pytest.mark.realdata
def test_default_recipe_never_splits_a_freesound_recording(default_recipe):
    recipe, splits = default_recipe
    rows = _source_rows(recipe, "urbansound")

    def ids(split):
        return {
            rows[c.key.split("/", 1)[1]]["freesound_id"]
            for c in splits[split].clips
            if c.key.startswith("urbansound/")
        }

    train, val, test = ids("train"), ids("val"), ids("test")
    assert train and val and test
    assert not train & val and not train & test and not val & test


@pytest.mark.realdata
def test_default_recipe_urbansound_test_is_fold_three_only(default_recipe):
    recipe, splits = default_recipe
    rows = _source_rows(recipe, "urbansound")

    def folds(split):
        return Counter(
            rows[c.key.split("/", 1)[1]]["fold"]
            for c in splits[split].clips
            if c.key.startswith("urbansound/")
        )

    assert set(folds("test")) == {"3"}
    assert sum(folds("test").values()) == sum(r["fold"] == "3" for r in rows.values())
    assert "3" not in folds("train") and "3" not in folds("val")


@pytest.mark.realdata
def test_default_recipe_fsdd_and_long_recordings(default_recipe):
    recipe, splits = default_recipe
    rows = _source_rows(recipe, "fsdd")
    fsdd = {s: [c for c in d.clips if c.key.startswith("fsdd/")] for s, d in splits.items()}
    assert len(fsdd["test"]) == sum(r["split"] == "test" for r in rows.values())
    assert {rows[c.key.split("/", 1)[1]]["split"] for c in fsdd["test"]} == {"test"}
    for split in ("train", "val"):
        assert {rows[c.key.split("/", 1)[1]]["split"] for c in fsdd[split]} == {"train"}
    assert all("speech" in c.tags and c.weight == 0.5 for c in fsdd["train"])
    long = [c for c in splits["train"].clips if c.key.startswith("long/")]
    assert long and all(c.weight == 12.0 for c in long)
    assert not any(c.key.startswith("long/") for c in splits["test"].clips)
    assert {c.label for c in long} >= {"man_reading", "woman_reading"}


@pytest.mark.realdata
def test_default_recipe_mines_real_captions(default_recipe):
    recipe, _ = default_recipe
    mined = recipe.mined()
    assert sum(len(v) for v in mined.values()) > 100
    for sentences in mined.values():
        assert len(sentences) <= 40
        for s in sentences:
            assert len(s.split()) <= 14 and not SECOND_EVENT.search(s) and s.count(",") <= 1


@pytest.mark.parametrize("train", ["all", "split=train,test"])
def test_train_and_test_filters_that_overlap_are_refused(tmp_path, train):
    text = RECIPE.replace('train = "split=train"', f'train = "{train}"')
    assert text != RECIPE
    recipe = load_recipe(write_recipe(tmp_path, text))
    for split in ("train", "val", "test"):  # whichever split is asked for first
        with pytest.raises(DatasetError, match=r"source 'street': \d+ file\(s\) are in both"):
            recipe.dataset(split)
