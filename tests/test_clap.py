"""CLAP through transformers as an earshot model: a tiny random checkpoint written here
(`earshot.testing.clap`), run through the normal commands, against transformers' own output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from earshot.cli import main
from earshot.errors import ModelLoadError, QueryModelUnavailable
from earshot.model.io import load_model, model_id
from earshot.testing.audio import tone, write_noise, write_tone
from earshot.testing.clap import write_tiny_clap


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clap(tmp_path_factory.mktemp("clap") / "other-clap", seed=2)


@pytest.fixture(scope="module")
def clap_dir(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clap-model") / "m"
    assert main(["init-model", str(out), "--clap", str(checkpoint)]) == 0
    return out


@pytest.fixture(scope="module")
def model(clap_dir):
    return load_model(clap_dir)


@pytest.fixture(scope="module")
def reference(checkpoint):
    """transformers' own model and processor on the same checkpoint."""
    from transformers import ClapModel, ClapProcessor

    return ClapModel.from_pretrained(checkpoint).eval(), ClapProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Synthetic recordings: a 23 s file that changes halfway (several windows), short ones."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("clap-lib") / "library"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    write_tone(root / "a" / "whistle.wav", 3.0, 22050, freq=3000.0)
    write_tone(root / "a" / "hum.flac", 2.0, 44100, channels=2, freq=150.0, seed=1)
    write_noise(root / "b" / "noise.ogg", 4.0, 32000, seed=2)
    x = tone(16, 16000, freq=400.0, seed=3)[:, 0]
    x[len(x) // 2 :] = np.clip(
        0.3 * np.random.default_rng(3).standard_normal(len(x) - len(x) // 2), -1, 1
    )
    sf.write(root / "b" / "long.wav", x, 16000, subtype="PCM_16")
    return root


def windows(n: int = 3, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, 480_000))).astype(np.float32)


def test_init_model_names_the_checkpoint_and_stores_no_weights(clap_dir, checkpoint, capsys):
    raw = json.loads((clap_dir / "config.json").read_text())
    assert raw["kind"] == "clap"
    assert raw["checkpoint"]["source"] == str(checkpoint.resolve())
    assert set(raw["checkpoint"]["files"]) >= {"config.json", "model.safetensors"}
    assert raw["audio"]["sample_rate"] == 48000 and raw["audio"]["frontend"] == "clap"
    assert (raw["audio"]["window_s"], raw["audio"]["hop_s"]) == (10.0, 5.0)
    assert raw["joint_dim"] == 16 and raw["text"]["dim"] == 16
    assert sorted(p.name for p in clap_dir.iterdir()) == ["config.json"]  # nothing else

    code, out, _ = run(capsys, "info", "--model", str(clap_dir), "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "clap" and info["joint_dim"] == 16
    assert info["id"] == model_id(load_model(clap_dir))
    code, out, _ = run(capsys, "info", "--model", str(clap_dir))
    assert code == 0 and "CLAP through transformers" in out and "no random crop" in out
    code, out, _ = run(capsys, "embed", "--model", str(clap_dir), "--text", "a bell", "--json")
    result = json.loads(out)
    assert code == 0 and result["model"]["id"] == info["id"] and result["model"]["dim"] == 16
    vector = np.array(result["results"][0]["vector"])
    assert np.allclose(vector, load_model(clap_dir).encode_text(["a bell"])[0].numpy(), atol=1e-6)


def test_audio_and_text_equal_transformers_own(model, reference):
    clap, processor = reference
    x = windows()
    features = processor.feature_extractor(list(x), sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        want = clap.get_audio_features(**features).pooler_output
    got = model.encode_audio(x, batch_size=2)
    assert got.shape == (3, 16)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert (got - want).abs().max() < 1e-5
    # fp32 always: bf16 (which `earshot index` picks on CPUs with native bf16) changes nothing
    assert torch.equal(model.encode_audio(x, batch_size=2, precision="bf16"), got)

    sentences = ["a dog barks", "rain falls on a tin roof, and a dog barks twice", "hum"]
    tokens = processor.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = clap.get_text_features(**tokens).pooler_output
    got = model.encode_text(sentences)
    assert (got - want).abs().max() < 1e-5
    # a search's one query equals the batch's row
    assert (model.encode_text(sentences[1:2])[0] - want[1]).abs().max() < 1e-5


@pytest.mark.parametrize("frontend", ["clap", "clap_htk"])
def test_frontend_is_the_extractors_log_mel(frontend):
    from earshot.config import AudioConfig
    from earshot.encoders.clap import ClapFrontend

    audio = AudioConfig(48000, 1024, 480, 64, 50.0, 14000.0, frontend=frontend)
    front = ClapFrontend(audio)
    x = windows(2, seed=4)
    x[1, 5000:] = 0.0  # a short sound, zero-padded by earshot's windowing
    want = front.extractor(list(x), sampling_rate=48000, return_tensors="pt")["input_features"]
    got = front(torch.from_numpy(x))
    assert got.shape == (2, 1, 1001, 64)
    assert (got - want[:, :1]).abs().max() < 1e-4  # dB; bit-equal here in practice
    assert torch.equal(front(torch.from_numpy(x[1:])), got[1:])  # the batch does not matter
    assert torch.equal(front(torch.from_numpy(x[1, :5000].copy())[None]), got[1:])  # padded
    with pytest.raises(ValueError, match="never crops"):
        front(torch.zeros(1, 480_001))


@pytest.mark.slow  # a second checkpoint written, loaded twice (~9 s on a busy 2-core machine)
def test_fused_checkpoint_never_fuses_at_random(tmp_path, capsys):
    from transformers import ClapModel, ClapProcessor

    ckpt = write_tiny_clap(tmp_path / "fused", fusion=True)
    assert main(["init-model", str(tmp_path / "m"), "--clap", str(ckpt)]) == 0
    model = load_model(tmp_path / "m")
    assert model.fusion and model.config.audio.frontend == "clap_htk"
    x = windows(2)
    first = model.encode_audio(x)
    np.random.seed(1)
    assert torch.equal(first, model.encode_audio(x))
    assert np.random.randint(1 << 30) == np.random.RandomState(1).randint(1 << 30)  # untouched
    clap, processor = ClapModel.from_pretrained(ckpt).eval(), ClapProcessor.from_pretrained(ckpt)
    features = processor.feature_extractor(list(x), sampling_rate=48000, return_tensors="pt")
    # transformers marks one window of the batch "longer" at random (random fusion); earshot
    # marks none: its vectors are transformers' with is_longer false
    assert features["is_longer"].sum() == 1
    with torch.no_grad():
        want = clap.get_audio_features(
            input_features=features["input_features"], is_longer=torch.zeros(2, 1, dtype=torch.bool)
        ).pooler_output
    assert (first - want).abs().max() < 1e-5


def test_same_file_same_vectors(model, library):
    from earshot.embed import embed_file

    path = library / "b" / "long.wav"
    first = embed_file(model, path)
    second = embed_file(model, path, batch_size=1)
    third = embed_file(model, path)
    assert [(w.start_s, w.end_s) for w in first] == [(0.0, 10.0), (5.0, 15.0), (10.0, 16.0)]
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(first, third, strict=True))
    assert all(
        np.allclose(a.vector, b.vector, atol=1e-5) for a, b in zip(first, second, strict=True)
    )
    # the two halves of the file sound different, and their windows say so
    assert float(first[0].vector @ first[-1].vector) < 0.999


@pytest.mark.slow  # two processes, each importing torch and transformers (~10 s on 2 cores)
def test_vectors_identical_across_processes(clap_dir, library):
    cmd = [sys.executable, "-m", "earshot.cli", "embed", "--model", str(clap_dir), "--json"]
    cmd += ["--audio", str(library / "a" / "whistle.wav"), "--text", "a whistle"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert first == second and json.loads(first)["results"][1]["windows"]


def test_text_search_needs_the_model_not_the_lean_path(clap_dir):
    from earshot.model.query import load_query_model

    with pytest.raises(QueryModelUnavailable, match="CLAP"):
        load_query_model(clap_dir)


def test_index_search_like_and_serve(clap_dir, model, library, tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    code, _, err = run(capsys, "index", str(library), "--db", str(db), "--model", str(clap_dir))
    assert code == 0, err
    from earshot.index.store import Catalogue

    with Catalogue(db, readonly=True) as cat:
        assert cat.model_id == model.model_id  # the catalogue records the CLAP model's id

    # text: the catalogue's own model, found from its record (no --model)
    code, out, err = run(capsys, "search", "a dog barks", "--db", str(db), "--json", "-k", "10")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert {h["name"] for h in hits} == {"whistle.wav", "hum.flac", "noise.ogg", "long.wav"}
    long_hit = next(h for h in hits if h["name"] == "long.wav")
    assert long_hit["end"] - long_hit["start"] > 0 and long_hit["duration"] == pytest.approx(
        16, abs=0.01
    )
    # the scores are the model's: the best window of each file against the query vector
    q = model.encode_text(["a dog barks"])[0].numpy()
    from earshot.embed import embed_file

    best = max(float(w.vector @ q) for w in embed_file(model, library / "b" / "long.wav"))
    assert long_hit["score"] == pytest.approx(best, abs=2e-3)  # fp16 in the catalogue

    # by example: the other files ranked by their best window against the example's vector
    # (the example file itself is left out, as for every model)
    code, out, err = run(
        capsys, "search", "--like", str(library / "a" / "whistle.wav"), "--db", str(db), "--json"
    )
    assert code == 0, err
    like = json.loads(out)["hits"]
    example = np.mean([w.vector for w in embed_file(model, library / "a" / "whistle.wav")], axis=0)
    example /= np.linalg.norm(example)
    best = {
        p.name: max(float(w.vector @ example) for w in embed_file(model, p))
        for p in library.rglob("*.*")
        if p.name != "whistle.wav"
    }
    assert [h["name"] for h in like] == sorted(best, key=best.get, reverse=True)
    assert all(h["score"] == pytest.approx(best[h["name"]], abs=2e-3) for h in like)

    # served: the same hits through the API
    from fastapi.testclient import TestClient

    from earshot.search import Searcher
    from earshot.serve import Settings, create_app

    with Catalogue(db, readonly=True) as cat:
        app = create_app(cat, model, Settings())
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            body = client.get("/api/search", params={"q": "a dog barks", "k": 10}).json()
            direct = Searcher(cat, model).search_text("a dog barks", k=10)
            assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in direct]
            assert [h["name"] for h in body["hits"]] == [h["name"] for h in hits]
            # an uploaded example, decoded at CLAP's 48 kHz and embedded by the model
            whistle = library / "a" / "whistle.wav"
            searcher = Searcher(cat, model)
            want = searcher.search_vector(searcher.embed_example(whistle, None, None), 3)
            r = client.post(
                "/api/search/like",
                params={"k": 3},
                files={"file": ("w.wav", whistle.read_bytes(), "audio/wav")},
            )
            assert r.status_code == 200, r.text
            assert [h["file_id"] for h in r.json()["hits"]] == [h.file_id for h in want]
            stats = client.get("/api/stats").json()["model"]
            assert stats["id"] == model.model_id and stats["audio_encoder"] == "clap"
            assert (stats["window_s"], stats["hop_s"]) == (10.0, 5.0)


@pytest.mark.slow  # a feature cache and a report (~10 s on a busy 2-core machine)
def test_evaluate_runs_a_clap_folder(clap_dir, tmp_path, capsys):
    from earshot.testing.datasets import write_labels_dataset

    data = write_labels_dataset(tmp_path / "data", per_class={"1": 1, "2": 2}, seconds=1.0)
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        str(clap_dir),
        "--dataset",
        str(data),
        "--split",
        "fold=2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "eval"),
        "--n-boot",
        "20",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["model_id"] == load_model(clap_dir).model_id
    assert report["clips"] == 6 and 0.0 <= report["text_to_audio"]["mAP@10"]["value"] <= 1.0


def test_changed_or_moved_checkpoint_is_refused(tmp_path, other_checkpoint):
    import shutil

    ckpt = shutil.copytree(other_checkpoint, tmp_path / "ck")
    assert main(["init-model", str(tmp_path / "m"), "--clap", str(ckpt)]) == 0
    cfg = ckpt / "config.json"
    cfg.write_text(cfg.read_text().replace('"projection_dim": 16', '"projection_dim": 16 '))
    with pytest.raises(ModelLoadError, match="changed since the model was made: config.json"):
        load_model(tmp_path / "m")
    ckpt.rename(tmp_path / "elsewhere")
    with pytest.raises(ModelLoadError, match="is gone"):
        load_model(tmp_path / "m")


def test_model_id_is_stable_and_pins_the_checkpoint(tmp_path, model, checkpoint, other_checkpoint):
    assert main(["init-model", str(tmp_path / "again"), "--clap", str(checkpoint)]) == 0
    assert load_model(tmp_path / "again").model_id == model.model_id
    # the same files elsewhere compute the same: the same id (the folder's place is not in it)
    import shutil

    moved = shutil.copytree(checkpoint, tmp_path / "copy")
    assert main(["init-model", str(tmp_path / "copied"), "--clap", str(moved)]) == 0
    assert load_model(tmp_path / "copied").model_id == model.model_id
    assert main(["init-model", str(tmp_path / "o"), "--clap", str(other_checkpoint)]) == 0
    assert load_model(tmp_path / "o").model_id != model.model_id


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "EARSHOT_OFFLINE"])
def test_hub_id_not_cached_fails_at_once_offline(tmp_path, capsys, monkeypatch, var):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(var, "1")
    start = time.monotonic()
    code, _, err = run(
        capsys, "init-model", str(tmp_path / "m"), "--clap", "laion/clap-htsat-unfused"
    )
    assert time.monotonic() - start < 5
    assert code == 1 and err.startswith("earshot: error: hub checkpoint 'laion/clap-htsat-unfused'")
    assert f"{var} is set" in err and str(tmp_path / "hub") in err
    assert "earshot weights fetch laion/clap-htsat-unfused" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_a_folder_naming_an_uncached_hub_commit_fails_at_once(
    tmp_path, capsys, monkeypatch, checkpoint
):
    from earshot.config import CheckpointConfig, ModelConfig
    from earshot.encoders.clap import clap_config
    from earshot.model.io import write_config

    config = clap_config(
        CheckpointConfig("laion/clap-htsat-unfused", revision="a" * 40), checkpoint
    )
    assert isinstance(config, ModelConfig)
    write_config(config, tmp_path / "m")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, _, err = run(capsys, "info", "--model", str(tmp_path / "m"))
    assert code == 1 and "at revision " + "a" * 40 in err and "HF_HUB_OFFLINE is set" in err


def test_a_hub_snapshot_in_the_cache_is_used_and_pinned(tmp_path, capsys, monkeypatch, checkpoint):
    """A snapshot laid out as huggingface_hub caches it resolves offline to its commit."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--laion--clap-htsat-unfused"
    snap = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, err = run(
        capsys, "init-model", str(tmp_path / "m"), "--clap", "laion/clap-htsat-unfused"
    )
    assert code == 0, err
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["checkpoint"] == {
        "source": "laion/clap-htsat-unfused",
        "revision": commit,
        "files": None,
    }
    assert f"commit {commit}" in out
    assert load_model(tmp_path / "m").encode_text(["a bell"]).shape == (1, 16)
    code, out, _ = run(capsys, "weights", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows["laion/clap-htsat-unfused"]["path"] == str(snap)
    assert rows["laion/clap-htsat-fused"]["path"] is None


def test_transformers_is_imported_only_when_a_clap_model_loads():
    code = (
        "import sys, earshot.cli, earshot.model.io, earshot.model.query, earshot.weights, "
        "earshot.config, earshot.api; print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_from_a_clap_folder_is_refused_clearly(clap_dir):
    from types import SimpleNamespace

    from earshot.errors import EarshotError
    from earshot.train.start import initial_model

    with pytest.raises(EarshotError, match="CLAP model, which earshot runs but does not train"):
        initial_model(SimpleNamespace(init=str(clap_dir)), torch.device("cpu"))
