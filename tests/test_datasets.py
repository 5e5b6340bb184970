"""Caption datasets: Clotho v2 folders, Clotho's long CSV, labels.csv folders, auto-detection."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from earshot.data.datasets import (
    LABEL_TEMPLATES,
    DatasetError,
    label_captions,
    load_clotho,
    load_dataset,
    load_labels_folder,
    load_long_csv,
    parse_split_filter,
)
from earshot.testing.audio import write_tone

SR = 16000


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_audio(root: Path, *names: str) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_tone(root / name, 0.5, SR, freq=300.0 + 100 * i, seed=i)


CLOTHO_HEADER = ["file_name", *(f"caption_{k}" for k in range(1, 6))]


def five(stem: str) -> list[str]:
    return [f"{stem} {k}" for k in range(1, 6)]


def write_clotho(root: Path, split: str, rows: list[list[str]], audio: list[str]) -> Path:
    write_csv(root / f"clotho_captions_{split}.csv", CLOTHO_HEADER, rows)
    write_audio(root / split, *audio)
    return root


# -- Clotho v2 ---------------------------------------------------------------------------------


def test_clotho_loads_clips_with_five_captions_in_order(tmp_path):
    root = write_clotho(
        tmp_path / "clotho",
        "development",
        [["b.wav", *five("bird")], ["a.wav", *five("rain")]],
        ["a.wav", "b.wav"],
    )
    ds = load_clotho(root, "development")
    assert ds.split == "development" and len(ds) == 2 and ds.problems == {}
    assert [c.key for c in ds.clips] == ["development/b.wav", "development/a.wav"]  # CSV order
    assert ds.clips[0].path == root / "development" / "b.wav"
    assert ds.clips[0].captions == tuple(five("bird"))
    assert ds.labels == [None, None]
    assert ds.captions() == [(c, 0) for c in five("bird")] + [(c, 1) for c in five("rain")]
    assert "2 clips, 10 captions" in ds.summary()


def test_clotho_counts_problems_warns_and_keeps_good_clips(tmp_path):
    rows = [
        ["good.wav", *five("good")],
        ["dup.wav", *five("first")],
        ["dup.wav", *five("second")],  # same file twice: captions merged, counted
        ["gone.wav", *five("gone")],  # no audio
        ["gaps.wav", "one", "", "  ", "four", "five"],  # two empty captions
        ["blank.wav", "", "", "", "", ""],  # no caption at all
    ]
    root = write_clotho(
        tmp_path / "clotho", "validation", rows, ["good.wav", "dup.wav", "gaps.wav", "blank.wav"]
    )
    with pytest.warns(UserWarning, match="1 missing audio files") as record:
        ds = load_clotho(root, "validation")
    message = str(record[0].message)
    assert "1 duplicate file names" in message and "7 empty captions" in message
    assert ds.problems == {
        "duplicate file names": 1,
        "missing audio files": 1,
        "empty captions": 7,
        "clips without any caption": 1,
    }
    by_key = {c.key: c for c in ds.clips}
    assert list(by_key) == ["validation/good.wav", "validation/dup.wav", "validation/gaps.wav"]
    assert by_key["validation/dup.wav"].captions == tuple(five("first") + five("second"))
    assert by_key["validation/gaps.wav"].captions == ("one", "four", "five")
    assert "dropped:" in ds.summary() and "1 missing audio files" in ds.summary()


def test_clotho_rejects_unknown_split_and_missing_csv(tmp_path):
    with pytest.raises(DatasetError, match="must be one of development, validation, evaluation"):
        load_clotho(tmp_path, "train")
    with pytest.raises(DatasetError, match="clotho_captions_evaluation.csv' does not exist"):
        load_clotho(tmp_path, "evaluation")


def test_clotho_without_any_audio_is_an_error(tmp_path):
    root = write_clotho(tmp_path / "c", "evaluation", [["x.wav", *five("x")]], [])
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no usable clips"):
        load_clotho(root, "evaluation")


def test_clotho_requires_caption_columns(tmp_path):
    write_csv(tmp_path / "clotho_captions_development.csv", ["file_name", "text"], [["a", "b"]])
    with pytest.raises(DatasetError, match="lacks column.*caption_1"):
        load_clotho(tmp_path, "development")


# -- Clotho's long CSV -------------------------------------------------------------------------


def test_long_csv_groups_rows_per_file(tmp_path):
    csv_path = write_csv(
        tmp_path / "captions.csv",
        ["fname", "raw_text", "text"],
        [
            ["dog.wav", "A dog barks.", "a dog barks"],
            ["car.wav", "A car passes.", "a car passes"],
            ["dog.wav", "Barking nearby.", "barking nearby"],
            ["dog.wav", "A dog barks.", "a dog barks"],  # repeated caption kept once
        ],
    )
    write_audio(tmp_path / "audio", "dog.wav", "car.wav")
    ds = load_long_csv(csv_path, tmp_path / "audio", "development")
    assert [c.key for c in ds.clips] == ["dog.wav", "car.wav"]
    assert ds.clips[0].captions == ("A dog barks.", "Barking nearby.")  # raw_text, not text
    assert ds.clips[1].path == tmp_path / "audio" / "car.wav"
    assert ds.captions() == [("A dog barks.", 0), ("Barking nearby.", 0), ("A car passes.", 1)]


def test_long_csv_requires_its_columns(tmp_path):
    csv_path = write_csv(tmp_path / "c.csv", ["file", "caption"], [["a.wav", "x"]])
    with pytest.raises(DatasetError, match="lacks column.*fname, raw_text"):
        load_long_csv(csv_path, tmp_path, "development")
    empty = write_csv(tmp_path / "e.csv", ["fname", "raw_text"], [])
    with pytest.raises(DatasetError, match="has no rows"):
        load_long_csv(empty, tmp_path, "development")


# -- labels.csv folders ------------------------------------------------------------------------


def test_labels_folder_with_captions_takes_several_rows_per_file(tmp_path):
    write_audio(tmp_path, "audio/a.wav", "audio/b.wav")
    write_csv(
        tmp_path / "labels.csv",
        ["file", "caption"],
        [
            ["audio/a.wav", "rain on a roof"],
            ["audio/b.wav", "a kettle whistles"],
            ["audio/a.wav", "heavy rain"],
        ],
    )
    ds = load_labels_folder(tmp_path)
    assert ds.split == "all" and ds.problems == {}
    assert [c.key for c in ds.clips] == ["audio/a.wav", "audio/b.wav"]
    assert ds.clips[0].captions == ("rain on a roof", "heavy rain")
    assert ds.clips[0].path == tmp_path / "audio" / "a.wav"
    assert ds.labels == [None, None]
    assert ds.captions() == [("rain on a roof", 0), ("heavy rain", 0), ("a kettle whistles", 1)]


def test_labels_folder_with_labels_makes_template_captions(tmp_path):
    write_audio(tmp_path, "x.wav", "y.wav")
    write_csv(
        tmp_path / "labels.csv", ["file", "label"], [["x.wav", "dog_bark"], ["y.wav", "rain"]]
    )
    ds = load_labels_folder(tmp_path, "all")
    assert ds.labels == ["dog_bark", "rain"]
    assert ds.clips[0].captions == label_captions("dog_bark")
    assert ds.clips[0].captions[:2] == ("dog bark", "the sound of dog bark")
    assert len(ds.clips[1].captions) == len(LABEL_TEMPLATES)
    assert [i for _, i in ds.captions()] == [0] * 5 + [1] * 5


def test_labels_folder_caption_and_label_keeps_both(tmp_path):
    write_audio(tmp_path, "x.wav")
    write_csv(tmp_path / "labels.csv", ["file", "caption", "label"], [["x.wav", "woof", "dog"]])
    (clip,) = load_labels_folder(tmp_path).clips
    assert clip.captions == ("woof",) and clip.label == "dog"


def test_labels_folder_counts_conflicting_labels(tmp_path):
    write_audio(tmp_path, "x.wav")
    write_csv(tmp_path / "labels.csv", ["file", "label"], [["x.wav", "dog"], ["x.wav", "cat"]])
    with pytest.warns(UserWarning, match="1 files with conflicting labels"):
        ds = load_labels_folder(tmp_path)
    assert ds.labels == ["dog"]  # the first one wins


@pytest.fixture
def folds(tmp_path) -> Path:
    """Six clips: fold 1..3 × split train/test, one per (fold, split) pair."""
    rows = []
    for fold in (1, 2, 3):
        for part in ("train", "test"):
            name = f"audio/{fold}-{part}.wav"
            write_audio(tmp_path, name)
            rows.append([name, f"class{fold}", str(fold), part])
    write_csv(tmp_path / "labels.csv", ["file", "label", "fold", "split"], rows)
    return tmp_path


def keys(ds) -> list[str]:
    return [c.key for c in ds.clips]


def test_labels_folder_split_filters(folds):
    assert keys(load_labels_folder(folds, "fold=1,2")) == [
        "audio/1-train.wav",
        "audio/1-test.wav",
        "audio/2-train.wav",
        "audio/2-test.wav",
    ]
    assert keys(load_labels_folder(folds, " fold = 3 ")) == [
        "audio/3-train.wav",
        "audio/3-test.wav",
    ]
    assert keys(load_labels_folder(folds, "test")) == [f"audio/{k}-test.wav" for k in (1, 2, 3)]
    assert keys(load_labels_folder(folds, "split=train")) == [
        f"audio/{k}-train.wav" for k in (1, 2, 3)
    ]
    assert len(load_labels_folder(folds, "all")) == 6
    assert load_labels_folder(folds, "fold=2").split == "fold=2"


def test_labels_folder_split_errors(folds):
    with pytest.raises(DatasetError, match="has no column 'speaker' to select split"):
        load_labels_folder(folds, "speaker=george")
    with pytest.raises(DatasetError, match="no rows of .* match split 'fold=9'"):
        load_labels_folder(folds, "fold=9")
    with pytest.raises(DatasetError, match="no rows of .* match split 'validation'"):
        load_labels_folder(folds, "validation")
    with pytest.raises(DatasetError, match="COLUMN=VALUE"):
        load_labels_folder(folds, "fold=")


def test_labels_folder_without_split_column(tmp_path):
    write_audio(tmp_path, "x.wav")
    write_csv(tmp_path / "labels.csv", ["file", "label"], [["x.wav", "dog"]])
    with pytest.raises(DatasetError, match="no column 'split' to select split 'test'"):
        load_labels_folder(tmp_path, "test")


def test_labels_folder_short_rows_do_not_crash_the_split_filter(tmp_path):
    write_audio(tmp_path, "x.wav", "y.wav")
    (tmp_path / "labels.csv").write_text("file,label,fold\nx.wav,dog,1\ny.wav,cat\n")
    assert keys(load_labels_folder(tmp_path, "fold=1")) == ["x.wav"]


def test_labels_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv' does not exist"):
        load_labels_folder(tmp_path)
    write_csv(tmp_path / "labels.csv", ["path", "label"], [["x.wav", "dog"]])
    with pytest.raises(DatasetError, match="lacks column.*file.*has: label, path"):
        load_labels_folder(tmp_path)
    write_csv(tmp_path / "labels.csv", ["file", "fold"], [["x.wav", "1"]])
    with pytest.raises(DatasetError, match="needs a 'caption' or a 'label' column"):
        load_labels_folder(tmp_path)
    write_csv(tmp_path / "labels.csv", ["file", "label"], [["x.wav", "dog"], ["y.wav", "cat"]])
    with (
        pytest.warns(UserWarning, match="2 missing audio files"),
        pytest.raises(DatasetError, match=r"labels:.* \[all\] has no usable clips"),
    ):
        load_labels_folder(tmp_path)


def test_parse_split_filter():
    assert parse_split_filter("fold=1, 2,") == ("fold", {"1", "2"})
    for bad in ("fold", "=1", "fold= ,"):
        with pytest.raises(DatasetError, match="COLUMN=VALUE"):
            parse_split_filter(bad)


# -- auto-detection ----------------------------------------------------------------------------


def test_load_dataset_detects_each_format(tmp_path):
    clotho = write_clotho(tmp_path / "clotho", "evaluation", [["a.wav", *five("a")]], ["a.wav"])
    ds = load_dataset(clotho, "evaluation")
    assert ds.name.startswith("clotho:") and ds.clips[0].key == "evaluation/a.wav"

    labels = tmp_path / "labels"
    write_audio(labels, "x.wav")
    write_csv(labels / "labels.csv", ["file", "label", "fold"], [["x.wav", "dog", "1"]])
    ds = load_dataset(str(labels), "fold=1")
    assert ds.name == "labels:labels" and ds.labels == ["dog"]

    long_csv = write_csv(tmp_path / "dev.csv", ["fname", "raw_text"], [["a.wav", "a tone"]])
    ds = load_dataset(long_csv, "development", clotho / "evaluation")
    assert ds.name == "captions:dev.csv" and ds.clips[0].captions == ("a tone",)


def test_load_dataset_errors(tmp_path):
    long_csv = write_csv(tmp_path / "dev.csv", ["fname", "raw_text"], [["a.wav", "a tone"]])
    with pytest.raises(DatasetError, match="holds captions only: pass the audio folder"):
        load_dataset(long_csv, "development")
    with pytest.raises(DatasetError, match="neither a folder nor a captions CSV"):
        load_dataset(tmp_path / "nowhere", "development")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is not a dataset: expected clotho_captions"):
        load_dataset(tmp_path / "empty", "development")


# -- the real data -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_urbansound_fold(shared_data):
    ds = load_dataset(shared_data / "urbansound8k-derived", "fold=3")
    assert len(ds) == 387 and ds.problems == {}
    assert all(label for label in ds.labels)
    assert ds.clips[0].captions == label_captions(ds.clips[0].label)
    assert all(c.path.is_file() for c in ds.clips)


@pytest.mark.realdata
def test_fsdd_test_split(shared_data):
    ds = load_dataset(shared_data / "fsdd", "test")
    assert len(ds) == 300 and ds.problems == {}
    assert set(ds.labels) == {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    }


@pytest.mark.realdata
def test_clotho_long_csv_without_audio(shared_data, tmp_path):
    with (
        pytest.warns(UserWarning, match="missing audio files"),
        pytest.raises(DatasetError, match=r"development.csv \[development\] has no usable clips"),
    ):
        load_dataset(shared_data / "clotho-captions" / "development.csv", "development", tmp_path)
