"""The default model shipped inside the package: present, small, offline, and it finds things.

The search checks run the real shipped weights over the bundled demo recordings (in the repo,
so they never skip): if a retrained model stopped hearing birds or whales, they fail. The
held-out figures in the model card are recomputed from ../shared/data where it is present.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import earshot
from earshot.cli import main
from earshot.model.io import DEFAULT_DIR, load_model, model_id

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "audio"


@pytest.fixture(scope="module")
def model():
    return load_model("compact")


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory, model):
    db = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    idx = earshot.Index(db, model=model)
    summary = idx.add([DEMO])
    yield idx, summary
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


def test_demo_is_small_and_credited():
    files = sorted(DEMO.glob("*.ogg"))
    assert sum(f.stat().st_size for f in files) <= 2 * 2**20
    credits = (DEMO.parent / "CREDITS.md").read_text()
    assert all(f.name in credits for f in files)
    assert "NC" not in credits.replace("No CC BY-NC file", "")


def test_demo_indexes_cleanly(demo_index):
    _, summary = demo_index
    assert summary.added == len(list(DEMO.glob("*.ogg"))) and not summary.skipped


DEMO_QUERIES = {
    "a bird chirps": "robin",
    "a whale singing underwater": "humpback",
    "a trumpet playing": "trumpet",
    "a string orchestra": "Hungarian_Dance",
}


def test_demo_queries_find_their_sound_near_the_top(demo_index):
    """Every demo query finds its recording in the top 3, and at least half of them first.

    The shipped model (9bf7b8c7) ranks the bird, the humpback and the trumpet first and the
    string orchestra second (behind the jazz tune by 0.002). The model before the last had all
    four first but a third of the held-out mAP@10; MODEL_CARD.md says so.
    """
    idx, _ = demo_index
    # The montage holds the robin, whale and trumpet too: it counts when its window is the span
    # where that sound was placed.
    spans = {"robin": (13.0, 15.7), "humpback": (0.0, 12.0), "trumpet": (27.7, 33.1)}
    ranks = {}
    for query, expected in DEMO_QUERIES.items():
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


def test_montage_hit_is_timestamped_at_the_robin(demo_index):
    idx, _ = demo_index
    hits = idx.search("a bird chirps", k=10, folder=str(DEMO))
    montage = next(h for h in hits if "montage" in h.path)
    assert montage.start_s < 15.7 and montage.end_s > 13.0, montage


def test_cli_uses_the_default_model_without_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EARSHOT_MODEL", raising=False)
    db = str(tmp_path / "c.sqlite")
    robin = next(DEMO.glob("456440_*robin*.ogg"))
    assert main(["index", str(robin), "--db", db, "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "a bird chirps", "--db", db, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert Path(hits[0]["path"]).name == robin.name


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
