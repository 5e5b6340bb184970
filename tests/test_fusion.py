"""Fused heads (model/fusion.py): a general model's trained heads beside the teacher start they
began from, one vector a side whose dot product is the weighted sum of the two cosines. It
saves and loads, the lean query path gives the same query vectors, and configs refuse what
makes no sense."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from earshot.config import ModelConfig
from earshot.errors import ConfigError, EarshotError
from earshot.model.fusion import FusedHead, fuse_with_start
from earshot.model.io import load_model, model_id, save_model
from earshot.testing.audio import chirp_mix
from earshot.testing.backbone import fake_teacher_model

SENTENCES = ["a dog barks", "rain on a tin roof", "a door slams", "birds"]


@pytest.fixture
def fused(fake_backbone, tiny_text_dir, monkeypatch, tmp_path):
    """(fused model, its trained heads alone, its start alone), fusion 0.3."""
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(fake_backbone[0]))
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    start = fake_teacher_model(fake_backbone[1], tiny_text_dir, joint_dim=12)
    trained = fake_teacher_model(fake_backbone[1], tiny_text_dir, joint_dim=12)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stands in for training: the heads moved away from the start
        for head in (trained.audio_head, trained.text_head):
            head.weight.add_(0.05 * torch.randn(head.weight.shape, generator=gen))
            head.bias.add_(0.05 * torch.randn(head.bias.shape, generator=gen))
    states = (start.audio_head.state_dict(), start.text_head.state_dict())
    return fuse_with_start(trained, states, 0.3), trained, start


def _waves():
    return torch.from_numpy(np.stack([chirp_mix(1.0, 32000, seed=s) for s in range(3)]))


def test_fused_cosine_is_the_weighted_sum_of_both(fused):
    model, trained, start = fused
    assert model.config.fusion == 0.3 and model.config.joint_dim == 24
    assert model.config.head_dim == 12
    a, t = model.encode_audio(_waves()), model.encode_text(SENTENCES)
    assert a.shape == (3, 24) and t.shape == (4, 24)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=1), torch.ones(4), atol=1e-5)
    want = 0.7 * (trained.encode_text(SENTENCES) @ trained.encode_audio(_waves()).T) + 0.3 * (
        start.encode_text(SENTENCES) @ start.encode_audio(_waves()).T
    )
    assert torch.allclose(t @ a.T, want, atol=1e-5)
    tagged = model.encode_audio_tagged(_waves())[1]
    assert torch.equal(tagged, start.encode_audio_tagged(_waves())[1])  # tags untouched


def test_fused_model_saves_loads_and_keeps_its_id(fused, tmp_path):
    model = fused[0]
    folder = save_model(model, tmp_path / "fused")
    config = json.loads((folder / "config.json").read_text())
    assert config["fusion"] == 0.3 and config["joint_dim"] == 24
    again = load_model(folder)
    assert model_id(again) == model_id(model)
    assert torch.allclose(again.encode_audio(_waves()), model.encode_audio(_waves()), atol=1e-6)
    assert torch.equal(again.encode_text(SENTENCES), model.encode_text(SENTENCES))
    # The lean query path (serve, search) reads both text heads from the file.
    from earshot.model.query import load_query_model

    lean = load_query_model(folder)
    assert lean.model_id == model_id(model)
    np.testing.assert_allclose(
        lean.encode_text(SENTENCES), model.encode_text(SENTENCES).numpy(), atol=1e-5
    )
    # An unfused model's config, and so its id, does not mention fusion at all.
    assert "fusion" not in ModelConfig().to_dict()


def test_fusion_is_refused_where_it_makes_no_sense(fused, tmp_path):
    from earshot.train.config import TrainConfig
    from earshot.train.heads import train_general
    from earshot.train.loop import train

    with pytest.raises(ValueError, match="fusion must be in"):
        ModelConfig(fusion=1.0)
    with pytest.raises(ValueError, match="even"):
        ModelConfig(joint_dim=301, fusion=0.5)
    with pytest.raises(ValueError, match="fusion must be in"):
        FusedHead(4, 2, 0.0)
    with pytest.raises(ValueError, match="fused already"):
        fuse_with_start(fused[0], ({}, {}), 0.3)
    with pytest.raises(ConfigError, match="fusion must lie in"):
        TrainConfig(fusion=-0.1)
    with pytest.raises(EarshotError, match="named backbone"):
        train(TrainConfig(encoder="cnn10", fusion=0.3, dataset="x"))
    folder = save_model(fused[0], tmp_path / "fused")
    with pytest.raises(EarshotError, match="fused heads"):
        train_general(TrainConfig(init=str(folder), encoder="mn04", dataset="x"))
