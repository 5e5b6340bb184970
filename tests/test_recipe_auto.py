"""Recipes whose labels come from a CSV (`auto_labels`): zero-shot labels, real-caption queries
and the real captions mined for training (`[auto_mining]`), on a synthetic folder."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from earshot.data.mining import label_words, normalise
from earshot.data.recipe import load_recipe
from earshot.data.splits import is_zeroshot

LABELS = [
    "rain", "door slam", "glass breaking", "dog bark", "footsteps on gravel", "car engine",
    "bird song", "thunder", "wind", "church bell", "cat meow", "water drip",
]  # fmt: skip
ZEROSHOT = 0.25


def _phrase(label: str) -> str:
    return f"the {' '.join(label_words(label))} sound"


def _sentences(label: str, corpus: str) -> list[str]:
    return [f"{corpus} {k}: {_phrase(label)} number {k}" for k in range(6)]


def write_pool(tmp_path: Path, auto_mining: bool) -> Path:
    data = tmp_path / "data"
    pool = data / "pool"
    pool.mkdir(parents=True)
    rows = []
    for label in LABELS:
        for rec in range(8):
            name = f"{label.replace(' ', '_')}_{rec}.wav"
            sf.write(pool / name, np.zeros(160, dtype=np.float32), 16000)
            rows.append([name, label, f"{label}:{rec}"])
    with (pool / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["file", "label", "recording"], *rows])
    for corpus in ("train", "eval"):
        with (data / f"{corpus}.csv").open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["text"])
            for label in LABELS:
                out.writerows([s] for s in _sentences(label, corpus))
            out.writerow(["rain"])  # a test query as written: never a training caption
    mining = (
        '[auto_mining]\ncorpora = [["train.csv", "text"]]\nper_label = 4\n' if auto_mining else ""
    )
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f"""root = "data"
[zeroshot]
fraction = {ZEROSHOT}
[templates]
auto = ["the sound of {{np}}"]
[[source]]
name = "pool"
folder = "pool"
label_column = "label"
auto_labels = true
test = {{ group = "recording", fraction = 0.25, every_label = 3 }}
val = {{ group = "recording", fraction = 0.25 }}
{mining}
[caption_queries]
corpora = [["eval.csv", "text"]]
per_label = 3
""",
        encoding="utf-8",
    )
    return recipe


def _load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_recipe(path)


def test_auto_mining_trains_the_pools_labels_on_real_captions_but_never_zero_shot_ones(tmp_path):
    held = {label for label in LABELS if is_zeroshot(label, ZEROSHOT)}
    assert held and len(held) < len(LABELS)  # the fixture holds some labels out, not all
    recipe = _load(write_pool(tmp_path, auto_mining=True))
    mined = recipe.auto_mined()
    assert set(mined) == set(LABELS) - held
    for label, sentences in mined.items():
        assert 0 < len(sentences) <= 4
        for s in sentences:
            assert s.startswith("train ")  # only the named corpora
            assert all(w in s for w in label_words(label))
    train = _load(write_pool(tmp_path / "again", auto_mining=True)).dataset("train")
    assert len({clip.label for clip in train.clips}) >= len(LABELS) // 2
    for clip in train.clips:
        assert set(mined[clip.label]) <= set(clip.captions)
    trained_on = {c for clip in train.clips for c in clip.captions}
    assert not {c for c in trained_on for label in held if _phrase(label) in c}
    assert "rain" not in {normalise(c) for c in trained_on}  # the test query as written


def test_auto_mining_leaves_the_test_queries_as_they_were(tmp_path):
    plain = _load(write_pool(tmp_path / "plain", auto_mining=False))
    mining = _load(write_pool(tmp_path / "mining", auto_mining=True))
    assert plain.auto_mined() == {}
    queries = mining.caption_queries()
    assert queries == plain.caption_queries()
    assert queries and all(s.startswith("eval ") for v in queries.values() for s in v)
    assert mining.queries() == plain.queries()
    # held-out labels keep their queries: they are what the zero-shot figures score
    held = {label for label in LABELS if is_zeroshot(label, ZEROSHOT)}
    assert held <= set(mining.queries())
