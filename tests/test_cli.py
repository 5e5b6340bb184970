"""`earshot embed` and `earshot info` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from earshot.cli import main
from earshot.model.io import model_id
from earshot.testing.audio import make_corrupt_files, write_tone


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_tone(tmp_path_factory.mktemp("audio") / "clip.wav", 12.5, 48000, channels=2)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_audio_json(capsys, model_dir, clip):
    code, out, _ = run(capsys, "embed", "--model", str(model_dir), "--audio", str(clip), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model"]["dim"] == 12 and doc["model"]["untrained"] is False
    windows = doc["results"][0]["windows"]
    assert [(w["start"], w["end"]) for w in windows] == [(0, 10), (5, 12.5)]
    assert all(len(w["vector"]) == 12 for w in windows)
    assert abs(sum(x * x for x in windows[0]["vector"]) - 1) < 1e-4


def test_embed_text_json(capsys, model_dir):
    code, out, _ = run(
        capsys,
        "embed",
        "--model",
        str(model_dir),
        "--json",
        "--text",
        "a dog barks",
        "rain on a tin roof",
    )
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["text"] for r in results] == ["a dog barks", "rain on a tin roof"]
    assert all(len(r["vector"]) == 12 for r in results)


def test_embed_human_output(capsys, model_dir, clip):
    code, out, _ = run(capsys, "embed", "--model", str(model_dir), "--audio", str(clip))
    assert code == 0
    assert "2 window(s)" in out and "5.00-   12.50 s" in out


def test_bad_file_is_reported_and_good_ones_still_embedded(capsys, model_dir, clip, tmp_path):
    bad = make_corrupt_files(tmp_path)["html"]
    code, out, err = run(
        capsys, "embed", "--model", str(model_dir), "--json", "--audio", str(bad), str(clip)
    )
    assert code == 1
    assert f"cannot decode '{bad}'" in err
    results = json.loads(out)["results"]
    assert "error" in results[0] and len(results[1]["windows"]) == 2


def test_no_model_and_no_default_is_a_clear_error(capsys, monkeypatch, clip, tmp_path):
    import earshot.model.io as model_io

    monkeypatch.delenv("EARSHOT_MODEL", raising=False)
    monkeypatch.setattr(model_io, "DEFAULT_DIR", tmp_path / "gone")
    code, out, err = run(capsys, "embed", "--audio", str(clip))
    assert code == 1 and out == ""
    assert "has no default model" in err and "--model DIR" in err


def test_missing_model_folder(capsys, tmp_path, clip):
    code, _, err = run(capsys, "embed", "--model", str(tmp_path / "none"), "--audio", str(clip))
    assert code == 1 and "is not an earshot model folder" in err


def test_random_init_says_so(capsys, clip):
    code, out, err = run(capsys, "info", "--random-init", "--encoder", "cnn10", "--json")
    assert code == 0
    assert "UNTRAINED" in err
    info = json.loads(out)
    assert info["untrained"] is True and info["audio_encoder"]["name"] == "cnn10"


def test_info(capsys, model_dir):
    code, out, _ = run(capsys, "info", "--model", str(model_dir), "--json")
    assert code == 0
    info = json.loads(out)
    from earshot.model.io import load_model

    assert info["id"] == model_id(load_model(model_dir, with_text=False))
    assert (info["frontend"]["sample_rate"], info["frontend"]["hop_length"]) == (32000, 320)
    assert (info["frontend"]["n_mels"], info["frontend"]["fmin"], info["frontend"]["fmax"]) == (
        64,
        50.0,
        14000.0,
    )
    code, out, _ = run(capsys, "info", "--model", str(model_dir))
    assert code == 0
    assert "panns: 32000 Hz, n_fft 1024 (window 1024, hann (periodic)), hop 320" in out
    assert "64 mels 50-14000 Hz" in out


def test_usage_errors(capsys, model_dir):
    with pytest.raises(SystemExit) as e:
        main(["embed", "--model", str(model_dir)])
    assert e.value.code == 2
    assert "needs --audio" in capsys.readouterr().err


def test_init_model_from_panns_checkpoint(capsys, tmp_path, tiny_text_dir):
    pytest.importorskip("torchlibrosa", reason="torchlibrosa is a dev extra")
    from earshot.encoders.audio import STANDARD_ENCODERS, build_audio_encoder
    from earshot.model.io import load_model
    from earshot.testing.panns import write_panns_checkpoint

    panns = build_audio_encoder(STANDARD_ENCODERS["cnn10"], 64)  # full-size PANNs CNN10
    with torch.no_grad():
        panns.bn0.running_mean.fill_(0.25)
    ckpt = write_panns_checkpoint(tmp_path / "Cnn10.pth", panns)
    code, out, _ = run(
        capsys,
        "init-model",
        str(tmp_path / "m"),
        "--encoder",
        "cnn10",
        "--panns",
        str(ckpt),
        "--text-model",
        str(tiny_text_dir),
    )
    assert code == 0 and "heads are untrained" in out
    loaded = load_model(tmp_path / "m", with_text=False).audio_encoder
    for key, value in panns.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    ckpt.write_bytes(b"not a checkpoint")
    code, _, err = run(
        capsys,
        "init-model",
        str(tmp_path / "out"),
        "--encoder",
        "cnn10",
        "--panns",
        str(ckpt),
        "--text-model",
        str(tiny_text_dir),
    )
    assert code == 1 and "cannot read checkpoint" in err
    assert not (tmp_path / "out").exists()  # nothing half-written
    code, out, _ = run(
        capsys,
        "init-model",
        str(tmp_path / "out"),
        "--encoder",
        "cnn10",
        "--text-model",
        str(tiny_text_dir),
        "--joint-dim",
        "32",
    )
    assert code == 0 and "heads are untrained" in out
    code, out, _ = run(capsys, "info", "--model", str(tmp_path / "out"), "--json")
    assert json.loads(out)["joint_dim"] == 32


@pytest.mark.slow  # subprocesses or a training run: CI runs it (make test-all)
def test_vectors_identical_across_processes(model_dir, clip):
    cmd = [
        sys.executable,
        "-m",
        "earshot.cli",
        "embed",
        "--model",
        str(model_dir),
        "--audio",
        str(clip),
        "--json",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert first == second and json.loads(first)["results"][0]["windows"]
