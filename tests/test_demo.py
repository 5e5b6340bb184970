"""`make demo` without committed recordings: the sounds earshot synthesises, and the choice of
what the demo indexes (the user's folder, ../shared/data, or those sounds)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earshot.demo_sounds import SAMPLE_RATE, SECONDS, SOUNDS, write_demo_sounds

REPO = Path(__file__).resolve().parents[1]
NAMES = [
    "siren.wav",
    "clock-ticking.wav",
    "rain.wav",
    "wind.wav",
    "ocean-waves.wav",
    "alarm-beeping.wav",
    "dial-tone.wav",
    "bird-chirp.wav",
    "engine-hum.wav",
    "footsteps.wav",
    "drum-beat.wav",
    "piano-chords.wav",
    "doorbell.wav",
    "car-horn.wav",
    "heartbeat.wav",
    "water-dripping.wav",
]


def load_demo_script():
    spec = importlib.util.spec_from_file_location("earshot_demo_script", REPO / "scripts/demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


demo = load_demo_script()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_demo_sounds_are_deterministic_distinct_labelled_and_not_silent(tmp_path):
    paths = write_demo_sounds(tmp_path / "a")
    assert [p.name for p in paths] == NAMES == list(SOUNDS)
    write_demo_sounds(tmp_path / "b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    write_demo_sounds(tmp_path / "c", seed=1)
    assert digests(tmp_path / "c")["rain.wav"] != digests(tmp_path / "a")["rain.wav"]

    spectra = []
    for path in paths:
        x, sr = sf.read(path, dtype="float32")
        assert sr == SAMPLE_RATE and x.shape == (int(SECONDS * SAMPLE_RATE),), path.name
        assert np.sqrt(np.mean(x**2)) > 0.01 and np.abs(x).max() < 1.0, path.name
        mag = np.abs(np.fft.rfft(x))
        spectra.append(mag / np.linalg.norm(mag))
    similarity = np.array(spectra) @ np.array(spectra).T
    np.fill_diagonal(similarity, 0.0)
    assert similarity.max() < 0.95, "two demo sounds have nearly the same spectrum"

    rows = list(csv.DictReader((tmp_path / "a" / "sounds.csv").open()))
    assert [r["file"] for r in rows] == NAMES
    assert all(r["synthesised"].startswith("yes") and r["description"] for r in rows)
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()


def test_demo_queries_describe_the_synthesised_sounds():
    queries = {s.query for s in SOUNDS.values()}
    assert set(demo.QUERIES["synthetic"]) <= queries
    assert set(demo.LIKE.values()) <= set(SOUNDS)


class Asked:
    def __init__(self, answer: bool):
        self.answer, self.calls = answer, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


@pytest.fixture
def shared(tmp_path) -> Path:
    (tmp_path / "shared" / "sfx-pool").mkdir(parents=True)
    return tmp_path / "shared"


def test_demo_indexes_shared_data_with_the_general_model_where_both_are_here(shared, tmp_path):
    ok = Asked(True)
    assert demo.choose_source(None, shared, None, ok) == demo.Source("shared", "general")
    assert ok.calls == 1
    # No sfx pool, or no general model, or another model asked for: the synthesised sounds.
    assert demo.choose_source(None, tmp_path / "none", None, Asked(True)).kind == "synthetic"
    assert demo.choose_source(None, shared, None, Asked(False)) == demo.Source(
        "synthetic", "offline"
    )
    assert demo.choose_source(None, shared, None, Asked(False), "compact").model == "compact"
    mine = demo.choose_source(None, shared, "runs/mine", Asked(True))
    assert mine == demo.Source("synthetic", "runs/mine")


def test_demo_indexes_the_folder_the_user_names_first(shared, tmp_path):
    got = demo.choose_source("~/Recordings", shared, None, Asked(True))
    assert got == demo.Source("folder", "general", Path.home() / "Recordings")
    got = demo.choose_source(str(tmp_path), shared, None, Asked(False))
    assert got == demo.Source("folder", "offline", tmp_path)
    ok = Asked(True)
    assert demo.choose_source(str(tmp_path), shared, "runs/mine", ok).model == "runs/mine"
    assert ok.calls == 0


def test_demo_arguments_and_make_variable():
    args = demo.parse_args(["--audio", "/x y", "a dog", "rain"])
    assert (args.audio, args.queries) == ("/x y", ["a dog", "rain"])
    assert demo.parse_args([]).audio is None
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(
        ["make", "-n", "-s", "demo", "AUDIO=/my recordings"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'scripts/demo.py --audio "/my recordings"' in dry
    assert (
        "--audio"
        not in subprocess.run(
            ["make", "-n", "-s", "demo"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    )


def test_demo_runs_end_to_end_on_synthesised_sounds(tmp_path, monkeypatch, capsys):
    """main() with nothing to index writes the sounds, indexes them and finds the siren (the
    compact model, pinned by conftest, ranks it first at 0.74, the dial tone next at 0.60)."""
    from earshot.cli import main as cli

    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EARSHOT_MODEL", raising=False)
    monkeypatch.setattr(demo, "SHARED", tmp_path / "no-shared")
    monkeypatch.setattr(demo, "earshot", lambda *args: cli(list(args)) and pytest.fail(args))
    demo.main(["a siren wailing"])
    out = capsys.readouterr().out
    folder = tmp_path / "cache" / "demo-sounds"
    assert sorted(p.name for p in folder.glob("*.wav")) == sorted(NAMES)
    assert "16 added" in out and "0 skipped" in out
    first = next(line for line in out.splitlines() if line.strip().startswith("1."))
    assert str(folder / "siren.wav") in first, out


def test_no_recordings_are_committed():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    audio = (".wav", ".flac", ".mp3", ".ogg", ".aif", ".aiff", ".m4a", ".opus")
    assert [f for f in files if f.lower().endswith(audio)] == []


def load_bench_demo():
    spec = importlib.util.spec_from_file_location(
        "earshot_bench_demo", REPO / "bench/bench_demo.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# "... for 6 of the 16 with the offline model, which ... (3 of the 6 above: siren, ...)"
README_RANKS = re.compile(
    r"(\d+) of the 16 with the (\w+) (?:model|one)[^(]*\((\d+) of the 6 above"
)


@pytest.mark.parametrize(
    "model", ["offline", "compact", pytest.param("general", marks=pytest.mark.realdata)]
)
def test_the_readmes_synthetic_demo_figures_regenerate(model, capsys):
    """The README's "ranks it first for N of the 16" per model is what bench/bench_demo.py
    measures (each sound's own query, by sound alone, among the sixteen)."""
    readme = " ".join((REPO / "README.md").read_text().split())
    stated = {name: (int(n), int(demo_n)) for n, name, demo_n in README_RANKS.findall(readme)}
    assert set(stated) == {"general", "offline", "compact"}, stated
    if model == "general":
        weights = REPO.parent / "shared" / "weights" / "efficientat" / "mn04_as_mAP_432.pt"
        if not weights.is_file():
            pytest.skip("the general model's backbone is not in ../shared/weights")
    bench = load_bench_demo()
    got = bench.main(["--models", model, "--sets", "synthetic"])["synthetic"][model]
    assert got["of"] == 16
    assert (len(got["first"]), len(got["demo_first"])) == stated[model], got


def test_bench_demo_refuses_an_unknown_set(capsys):
    with pytest.raises(SystemExit):
        load_bench_demo().parse_args(["--sets", "synthetic,sfxx"])
    assert "unknown set(s) sfxx" in capsys.readouterr().err
