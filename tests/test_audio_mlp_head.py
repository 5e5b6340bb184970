"""The residual MLP audio head (model/heads.py, config `audio_hidden`): it starts as its linear
part exactly (so a general model still starts at the teacher space), it trains, fuses with its
start, saves and loads with its id, leaves older configs' ids alone, and configs refuse what
makes no sense."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from earshot.config import ModelConfig
from earshot.errors import ConfigError, EarshotError
from earshot.model.heads import ResidualMLPHead, audio_head, linear_part
from earshot.model.io import load_model, model_id, save_model
from earshot.testing.audio import chirp_mix
from earshot.testing.backbone import fake_teacher_model


def test_the_residual_head_starts_as_its_linear_part():
    torch.manual_seed(0)
    plain = nn.Linear(10, 4)
    head = ResidualMLPHead(10, 4, hidden=16)
    head.load_state_dict({**head.state_dict(), **plain.state_dict()})
    x = torch.randn(5, 10)
    assert torch.equal(head(x), plain(x))
    assert set(linear_part(head.state_dict())) == {"weight", "bias"}
    assert type(audio_head(10, 4)) is nn.Linear and isinstance(audio_head(10, 4, 8), nn.Linear)
    with torch.no_grad():
        head.fc2.weight.normal_()
    assert not torch.allclose(head(x), plain(x))  # the branch bends the map once trained
    with pytest.raises(ValueError, match="not zero"):
        linear_part(head.state_dict())  # a trained head is no start
    with pytest.raises(ValueError, match="hidden > 0"):
        ResidualMLPHead(10, 4, hidden=0)


def test_config_keeps_older_ids_and_refuses_nonsense(tmp_path):
    from earshot.train.config import TrainConfig, load_train_config
    from earshot.train.loop import train

    assert "audio_hidden" not in ModelConfig().to_dict()  # older models' ids unchanged
    config = ModelConfig(audio_hidden=32)
    assert config.to_dict()["audio_hidden"] == 32
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="audio_hidden must be"):
        ModelConfig(audio_hidden=-1)
    with pytest.raises(ConfigError, match="audio_hidden must be"):
        TrainConfig(audio_hidden=-1)
    with pytest.raises(EarshotError, match="audio_hidden is for heads trained on a named"):
        train(TrainConfig(encoder="cnn10", audio_hidden=8, dataset="x"))
    with pytest.raises(EarshotError, match="text_head_lr is for heads trained on a named"):
        train(TrainConfig(encoder="cnn10", text_head_lr=0.0, dataset="x"))
    with pytest.raises(ConfigError, match="text_head_lr must be >= 0"):
        TrainConfig(text_head_lr=-0.1)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[train]\naudio_hidden = 64\n")
    with pytest.raises(ConfigError, match=r"belongs in \[model\]"):
        load_train_config(wrong)
    right = tmp_path / "right.toml"
    right.write_text("[model]\naudio_hidden = 64\n")
    assert load_train_config(right).audio_hidden == 64


def test_train_general_fits_a_residual_head_fused_with_its_start(
    weights_env, tiny_text_dir, tmp_path
):
    """From a linear teacher folder: the run widens the audio head (step 0 is still the
    teacher, scored the same as a linear run's), trains the branch, fuses the trained head with
    the linear start, and the folder loads back to the same vectors and id."""
    from earshot.testing.backbone import small_heads_run
    from earshot.train.config import TrainConfig
    from earshot.train.heads import LOG_FILE, train_general

    common = small_heads_run(weights_env, tiny_text_dir, tmp_path)
    start = common["init"]
    linear = train_general(TrainConfig(**common, out=str(tmp_path / "linear")), progress=False)
    train_general(TrainConfig(**common, audio_hidden=16, out=str(tmp_path / "run")), False)
    log = json.loads((tmp_path / "run" / LOG_FILE).read_text())
    assert log["history"][0] == linear["history"][0]  # the same teacher start, step 0
    model = load_model(tmp_path / "run")
    assert model_id(model) == log["model_id"] != linear["model_id"]
    assert model.config.audio_hidden == 16 and model.config.joint_dim == 24
    trained = model.audio_head.trained
    assert isinstance(trained, ResidualMLPHead) and trained.hidden == 16
    if log["best_step"] > 0:
        assert trained.fc2.weight.abs().sum() > 0  # the branch learnt something
    began = load_model(start).audio_head
    assert type(model.audio_head.start) is nn.Linear
    assert torch.equal(model.audio_head.start.weight, began.weight)
    waves = torch.from_numpy(np.stack([chirp_mix(1.0, 32000, seed=s) for s in range(3)]))
    again = load_model(save_model(model, tmp_path / "again"))
    assert model_id(again) == model_id(model)
    assert torch.allclose(again.encode_audio(waves), model.encode_audio(waves), atol=1e-6)
    # An init that has its own residual MLP keeps it: a different width is refused.
    unfused = TrainConfig(**{**common, "fusion": 0.0}, audio_hidden=16, out=str(tmp_path / "u"))
    folder = train_general(unfused, progress=False)["out"]
    with pytest.raises(EarshotError, match="keeps its own residual MLP"):
        train_general(TrainConfig(**{**common, "init": str(folder)}, audio_hidden=8), False)


def test_with_heads_shares_the_backbone_and_changes_only_the_heads(weights_env, tiny_text_dir):
    import dataclasses

    model = fake_teacher_model(weights_env, tiny_text_dir, 12)
    wider = model.with_heads(dataclasses.replace(model.config, audio_hidden=8))
    assert wider.audio_encoder is model.audio_encoder and wider.frontend is model.frontend
    assert wider.tag_names == model.tag_names and wider.text_encoder is model.text_encoder
    assert isinstance(wider.audio_head, ResidualMLPHead) and not wider.training
    other = dataclasses.replace(model.config.encoder, n_tags=model.config.encoder.n_tags + 1)
    with pytest.raises(ValueError, match="heads only"):
        model.with_heads(dataclasses.replace(model.config, encoder=other))


def test_a_frozen_text_head_stays_at_its_start_while_the_audio_head_learns(
    weights_env, tiny_text_dir, tmp_path, monkeypatch
):
    """`text_head_lr = 0`: queries keep the start's map (the sentence encoder's PCA),
    so the saved text head is the init's exactly while the audio head trains; a run that
    trains both moves the text head. (Validation here saturates at step 0, so every scoring
    is made to improve: the last step is the one saved.)"""
    import itertools

    from earshot.testing.backbone import small_heads_run
    from earshot.train import heads
    from earshot.train.config import TrainConfig

    counter = itertools.count()
    monkeypatch.setattr(heads, "score_split", lambda model, split: float(next(counter)))
    common = {**small_heads_run(weights_env, tiny_text_dir, tmp_path), "fusion": 0.0}
    start = load_model(common["init"])
    runs = {}
    for name, text_lr in (("frozen", 0.0), ("both", 1.0)):
        out = str(tmp_path / name)
        cfg = TrainConfig(**common, audio_hidden=16, text_head_lr=text_lr, out=out)
        assert heads.train_general(cfg, progress=False)["best_step"] == 30
        runs[name] = load_model(out)
    frozen, both = runs["frozen"], runs["both"]
    for key, value in start.text_head.state_dict().items():
        assert torch.equal(frozen.text_head.state_dict()[key], value)
    assert not torch.equal(both.text_head.weight, start.text_head.weight)
    assert frozen.audio_head.fc2.weight.abs().sum() > 0  # the audio head's branch learnt
    assert not torch.equal(frozen.audio_head.weight, start.audio_head.weight)
