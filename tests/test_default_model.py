"""The default model shipped inside the package: present, small, offline, and it finds things.

The search checks run the real shipped weights over the librosa example recordings in
../shared/data (training data for this model; skipped where the folder is absent): if a
retrained model stopped hearing birds or whales, they fail. The held-out figures in the model
card are recomputed from ../shared/data too. The one check that always runs searches the sounds
earshot synthesises for the demo (earshot.demo_sounds): the repository holds no recordings.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import earshot
from earshot.cli import main
from earshot.demo_sounds import write_demo_sounds
from earshot.model.io import DEFAULT_DIR, load_model, model_id

REPO = Path(__file__).resolve().parents[1]
# The eight librosa examples the demo once bundled, and the montage it made of four of them:
# (file, seconds taken from its start; None = all of it).
EXAMPLES = [
    "198-209-0000.ogg",
    "3436-172162-0000.ogg",
    "456440__inspectorj__bird-whistling-robin-single-13.ogg",
    "5703-47212-0000.ogg",
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
    "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "glacier-bay-humpback.ogg",
    "sorohanro_-_solo-trumpet-06.ogg",
]
MONTAGE = {
    "humpback": ("glacier-bay-humpback.ogg", 12.0),
    "robin": ("456440__inspectorj__bird-whistling-robin-single-13.ogg", None),
    "reading": ("198-209-0000.ogg", 10.0),
    "trumpet": ("sorohanro_-_solo-trumpet-06.ogg", None),
}


@pytest.fixture(scope="module")
def model():
    return load_model("compact")


def write_montage(source: Path, path: Path) -> dict[str, tuple[float, float]]:
    """MONTAGE's parts one after another, 1 s of silence between them; returns their spans."""
    parts, spans, t = [], {}, 0.0
    for name, (file, seconds) in MONTAGE.items():
        x, sr = sf.read(source / file, dtype="float32")
        x = x[: int(seconds * sr)] if seconds else x
        parts += [x, np.zeros(sr, dtype=np.float32)]
        spans[name] = (t, t + len(x) / sr)
        t += len(x) / sr + 1.0
    sf.write(path, np.concatenate(parts[:-1]), sr)
    return spans


@pytest.fixture(scope="module")
def examples_index(shared_data, tmp_path_factory, model):
    """The examples and the montage in one folder (links, and the montage written here)."""
    folder = tmp_path_factory.mktemp("examples")
    source = shared_data / "librosa-examples" / "audio"
    for name in EXAMPLES:
        (folder / name).symlink_to(source / name)
    spans = write_montage(source, folder / "montage-whale-robin-reading-trumpet.flac")
    idx = earshot.Index(folder.parent / "examples.sqlite", model=model)
    summary = idx.add([folder])
    yield idx, summary, folder, spans
    idx.close()


def test_default_model_is_packaged_small_and_as_configured(model):
    weights = DEFAULT_DIR / "model.safetensors"
    assert weights.stat().st_size <= 30 * 2**20
    cfg = model.config
    assert cfg.encoder.name == "cnn10" and cfg.joint_dim == 300
    assert cfg.text.model == "all-MiniLM-L6-v2"
    assert (cfg.audio.window_s, cfg.audio.hop_s) == (4.0, 2.0)
    # The wheel must carry both files: pyproject's package-data names them.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["earshot"]
    assert {"models/default/config.json", "models/default/model.safetensors"} <= set(shipped)


def test_default_model_card_describes_the_shipped_weights(model):
    card = (REPO / "MODEL_CARD.md").read_text()
    assert model_id(model) in card
    assert "non-commercial" in card.lower()


@pytest.mark.realdata
def test_examples_index_cleanly(examples_index):
    _, summary, _, _ = examples_index
    assert summary.added == len(EXAMPLES) + 1 and not summary.skipped


EXAMPLE_QUERIES = {
    "a bird chirps": "robin",
    "a whale singing underwater": "humpback",
    "a trumpet playing": "trumpet",
    "a string orchestra": "Hungarian_Dance",
}


@pytest.mark.realdata
def test_example_queries_find_their_sound_near_the_top(examples_index):
    """Every query finds its recording in the top 3, and at least half of them first.

    The shipped model (9bf7b8c7) ranks the bird, the humpback and the trumpet first and the
    string orchestra second (behind the jazz tune by 0.002). The model before the last had all
    four first but a third of the held-out mAP@10; MODEL_CARD.md says so.
    """
    idx, _, _, spans = examples_index
    # The montage holds the robin, whale and trumpet too: it counts when its window is the span
    # where that sound was placed.
    ranks = {}
    for query, expected in EXAMPLE_QUERIES.items():
        hits = idx.search(query, k=3)

        def right(hit, expected=expected):
            name = Path(hit.path).name
            if "montage" in name:
                lo, hi = spans.get(expected, (-1.0, -1.0))
                return hit.start_s < hi and hit.end_s > lo
            return expected in name

        ranks[query] = next((i + 1 for i, h in enumerate(hits) if right(h)), None)
    assert all(rank is not None for rank in ranks.values()), ranks
    assert sum(rank == 1 for rank in ranks.values()) >= len(ranks) / 2, ranks


@pytest.mark.realdata
def test_montage_hit_is_timestamped_at_the_robin(examples_index):
    idx, _, folder, spans = examples_index
    hits = idx.search("a bird chirps", k=10, folder=str(folder))
    montage = next(h for h in hits if "montage" in h.path)
    lo, hi = spans["robin"]
    assert montage.start_s < hi and montage.end_s > lo, montage


def test_cli_uses_the_default_model_without_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EARSHOT_MODEL", raising=False)
    db = str(tmp_path / "c.sqlite")
    sounds = tmp_path / "sounds"
    write_demo_sounds(sounds)
    assert main(["index", str(sounds), "--db", db, "--json"]) == 0
    capsys.readouterr()
    # The compact model knows sirens (UrbanSound8K): 0.74, the dial tone next at 0.60.
    assert main(["search", "a siren wailing", "--db", db, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert Path(hits[0]["path"]).name == "siren.wav"


@pytest.mark.slow
@pytest.mark.realdata
def test_model_card_figures_regenerate(shared_data, tmp_path, capsys, model):
    """`earshot evaluate` on the held-out split reproduces the shipped report."""
    shipped = json.loads((DEFAULT_DIR / "heldout.json").read_text())
    code = main(
        [
            "evaluate",
            "--model",
            "compact",
            "--dataset",
            str(REPO / "configs" / "default-data.toml"),
            "--split",
            "test",
            "--json",
            "--out",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--n-boot",
            str(shipped["n_boot"]),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("mAP@10", "R@1", "R@10"):
        got = report["held_out_text_to_audio"][key]["value"]
        assert got == pytest.approx(shipped["held_out_text_to_audio"][key], abs=0.005), key
    got = report["held_out_class_prompts"]["accuracy"]["value"]
    assert got == pytest.approx(shipped["held_out_class_prompt_accuracy"], abs=0.005)
    # The card's intervals too: over queries and clips, and resampling recordings.
    card = shipped["report"]
    for key in ("held_out_text_to_audio", "held_out_recordings resampled"):
        ci = report[key]["mAP@10"]["ci95"]
        assert ci == pytest.approx(card[key]["mAP@10"]["ci95"], abs=0.005), key
    for got, want in (
        (report["held_out_class_prompts"], card["held_out_class_prompts"]),
        (report["held_out_recordings resampled"], card["held_out_recordings resampled"]),
    ):
        key = "accuracy" if "accuracy" in got else "class_prompt_accuracy"
        assert got[key]["ci95"] == pytest.approx(want[key]["ci95"], abs=0.005)


@pytest.mark.realdata
def test_held_out_sounds_are_found_at_their_time_in_a_long_file(shared_data, tmp_path, model):
    """A 48 s file of held-out UrbanSound8K fold-3 clips: each query lands on its own span."""
    import csv

    import numpy as np
    import soundfile as sf

    root = shared_data / "urbansound8k-derived"
    rows = list(csv.DictReader((root / "labels.csv").read_text().splitlines()))
    wanted = ["dog_bark", "siren", "jackhammer", "children_playing"]
    parts, spans, t = [], {}, 0.0
    for label in wanted:
        row = next(r for r in rows if r["fold"] == "3" and r["label"] == label)
        x, sr = sf.read(root / row["file"], dtype="float32")
        gap = np.zeros(int(8.0 * sr), dtype=np.float32)
        parts += [x, gap]
        spans[label] = (t, t + len(x) / sr)
        t += (len(x) + len(gap)) / sr
    long_file = tmp_path / "street-walk.flac"
    sf.write(long_file, np.concatenate(parts), sr)
    idx = earshot.Index(tmp_path / "c.sqlite", model=model)
    try:
        idx.add([long_file])
        queries = {
            "dog_bark": "a dog barking",
            "siren": "a siren wailing",
            "jackhammer": "a jackhammer",
            "children_playing": "children playing",
        }
        found = {}
        for label, query in queries.items():
            hit = idx.search(query, k=1)[0]
            lo, hi = spans[label]
            found[label] = (hit.start_s, hit.end_s, lo, hi)
        right = [lab for lab, (s, e, lo, hi) in found.items() if s < hi and e > lo]
        # Three of four: the model is good, not perfect, on held-out clips (MODEL_CARD.md).
        assert len(right) >= 3, found
    finally:
        idx.close()
