"""The per-window gate (model/fusion.py `GatedHead`): a general model's trained audio head mixed
with the start it began from, by how well it knows each window (its top cosines to a bank of
training windows, or captions), in one vector of the heads' own width. The mix is what the
docstring says, a run with `window_gate` ships it (bank and all), it saves and loads to the
same vectors and id, the lean query path still reads its text head, and configs refuse what
cannot work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import ModelConfig, WindowGate
from earshot.errors import ConfigError, EarshotError
from earshot.model.fusion import GatedHead, gate_with_start
from earshot.model.io import load_model, model_id, save_model
from earshot.testing.audio import chirp_mix
from earshot.testing.backbone import fake_teacher_model, small_heads_run

SENTENCES = ["a dog barks", "rain on a tin roof", "a door slams", "birds"]


def _waves():
    return torch.from_numpy(np.stack([chirp_mix(1.0, 32000, seed=s) for s in range(3)]))


def test_the_gate_mixes_each_window_by_how_well_the_trained_head_knows_it():
    torch.manual_seed(0)
    x = torch.randn(5, 10)
    head = GatedHead(10, 4, WindowGate(tau=0.5, low=0.2, width=0.05, bank=3))
    t = F.normalize(head.trained(x), dim=-1)
    s = F.normalize(head.start(x), dim=-1)
    with torch.no_grad():
        head.bank.copy_(F.normalize(torch.randn(3, 4), dim=-1))
        head.bank[0] = t[0]  # window 0 is a training caption exactly: the trained head's
    k = (t @ head.bank.T).max(dim=1).values
    w = 0.2 + 0.8 * torch.sigmoid((k - 0.5) / 0.05)
    want = w[:, None] * t + (1 - w[:, None]) * s
    got = head(x)
    assert torch.allclose(got, want, atol=1e-6)
    assert w[0] > 0.99 and torch.allclose(F.normalize(got[0], dim=0), t[0], atol=1e-2)
    # top 2: k is the mean of the two largest cosines
    head.gate = WindowGate(tau=0.5, low=0.2, width=0.05, bank=3, top=2)
    k2 = (t @ head.bank.T).topk(2, dim=1).values.mean(dim=1)
    w2 = 0.2 + 0.8 * torch.sigmoid((k2 - 0.5) / 0.05)
    assert torch.allclose(head(x), w2[:, None] * t + (1 - w2[:, None]) * s, atol=1e-6)
    # low = 1: the trained head everywhere, whatever the bank says
    head.gate = WindowGate(tau=0.5, low=1.0, width=0.05, bank=3)
    assert torch.allclose(F.normalize(head(x), dim=-1), t, atol=1e-6)


def test_gated_model_scores_both_heads_with_one_query_and_round_trips(
    weights_env, tiny_text_dir, tmp_path, capsys
):
    start = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=12)
    trained = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=12)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # training stand-in: the audio head moved, the text head did not
        trained.audio_head.weight.add_(
            0.05 * torch.randn(trained.audio_head.weight.shape, generator=gen)
        )
    bank = trained.text_encoder.encode(SENTENCES[:2])
    model = gate_with_start(trained, start.audio_head.state_dict(), bank, 0.6, 0.5, 0.03)
    assert model.config.joint_dim == 12 and model.config.window_gate.bank == 2
    a, q = model.encode_audio(_waves()), model.encode_text(SENTENCES)
    assert a.shape == (3, 12) and torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(q, trained.encode_text(SENTENCES))  # queries are the text head's as is
    # each window's vector lies between the trained one and the start's
    t, s = trained.encode_audio(_waves()), start.encode_audio(_waves())
    k = (t @ trained.encode_text(SENTENCES[:2]).T).max(dim=1).values
    w = (0.5 + 0.5 * torch.sigmoid((k - 0.6) / 0.03))[:, None]
    assert torch.allclose(a, F.normalize(w * t + (1 - w) * s, dim=-1), atol=1e-5)
    assert torch.equal(
        model.encode_audio_tagged(_waves())[1], start.encode_audio_tagged(_waves())[1]
    )

    folder = save_model(model, tmp_path / "gated")
    config = json.loads((folder / "config.json").read_text())
    assert config["window_gate"] == {"tau": 0.6, "low": 0.5, "width": 0.03, "bank": 2, "top": 1}
    again = load_model(folder)
    assert model_id(again) == model_id(model) != model_id(trained)
    assert torch.allclose(again.encode_audio(_waves()), a, atol=1e-6)
    from earshot.model.query import load_query_model

    lean = load_query_model(folder)
    np.testing.assert_allclose(lean.encode_text(SENTENCES), q.numpy(), atol=1e-5)
    assert "window_gate" not in ModelConfig().to_dict()  # ungated ids unchanged
    from earshot.cli import main

    assert main(["info", "--model", str(folder)]) == 0
    assert "gated per window" in capsys.readouterr().out
    assert main(["info", "--model", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["heads"]["window_gate"] == config["window_gate"]


def test_a_run_with_window_gate_ships_the_gated_head_and_its_bank(
    weights_env, tiny_text_dir, tmp_path
):
    from earshot.train.config import TrainConfig
    from earshot.train.heads import LOG_FILE, train_general

    common = {**small_heads_run(weights_env, tiny_text_dir, tmp_path), "fusion": 0.0}
    cfg = TrainConfig(
        **common, audio_hidden=8, text_head_lr=0.0, window_gate=[0.6, 0.5, 0.03, 2],
        out=str(tmp_path / "run"),
    )  # fmt: skip
    log = train_general(cfg, progress=False)
    assert log["window_gate"] == [0.6, 0.5, 0.03, 2]
    model = load_model(tmp_path / "run")
    assert model_id(model) == json.loads((tmp_path / "run" / LOG_FILE).read_text())["model_id"]
    head = model.audio_head
    assert isinstance(head, GatedHead) and head.trained.hidden == 8
    assert type(head.start) is nn.Linear
    began = load_model(common["init"])
    assert torch.equal(head.start.weight, began.audio_head.weight)
    assert torch.equal(model.text_head.weight, began.text_head.weight)  # never trained
    assert model.config.window_gate.top == 2
    # the bank: the training split's windows, through the trained audio head
    from earshot.data.datasets import load_dataset
    from earshot.train.features import backbone_features

    train = load_dataset(common["dataset"], common["train_split"])
    bf = backbone_features(model, train, common["cache_dir"], model.config.encoder.weights.sha256)
    with torch.no_grad():
        want = F.normalize(head.trained(torch.as_tensor(bf.features)), dim=-1)
    assert head.bank.shape == (len(bf.features), 12)
    assert torch.allclose(head.bank, want, atol=1e-5)


def test_window_gate_is_refused_where_it_cannot_work(weights_env, tiny_text_dir, tmp_path):
    from earshot.train.config import TrainConfig
    from earshot.train.loop import train

    with pytest.raises(ValueError, match="not both"):
        ModelConfig(
            joint_dim=12,
            fusion=0.5,
            window_gate={"tau": 0.6, "low": 0.5, "width": 0.03, "bank": 2, "top": 1},
        )
    with pytest.raises(ValueError, match="low must be"):
        WindowGate(tau=0.6, low=1.5, width=0.03, bank=2)
    with pytest.raises(ConfigError, match="text_head_lr = 0"):
        TrainConfig(window_gate=[0.6, 0.5, 0.03, 1])  # a trained text head: one query can't serve
    with pytest.raises(ConfigError, match=r"\[tau, low, width, top\]"):
        TrainConfig(window_gate=[0.6, 0.5, 0.03], text_head_lr=0.0)
    with pytest.raises(ValueError, match="top <= bank"):
        WindowGate(tau=0.6, low=0.5, width=0.03, bank=2, top=3)
    with pytest.raises(EarshotError, match="named backbone"):
        train(
            TrainConfig(
                encoder="cnn10", window_gate=[0.6, 0.5, 0.03, 1], text_head_lr=0.0, dataset="x"
            )
        )
    start = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=12)
    bank = start.text_encoder.encode(SENTENCES)
    gated = gate_with_start(start, start.audio_head.state_dict(), bank, 0.6, 0.5, 0.03)
    with pytest.raises(ValueError, match="fused already"):
        gate_with_start(gated, start.audio_head.state_dict(), bank, 0.6, 0.5, 0.03)
    from earshot.train.heads import train_general

    folder = save_model(gated, tmp_path / "gated")
    with pytest.raises(EarshotError, match="window_gate set"):
        train_general(TrainConfig(init=str(folder), encoder="mn04", dataset="x"))
    with pytest.raises(ValueError, match="'text' or 'audio'"):
        gate_with_start(start, start.audio_head.state_dict(), bank, 0.6, 0.5, 0.03, side="x")
