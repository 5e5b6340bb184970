"""The EfficientAT fast path of `JointModel` (model/dual.py `fast_mn_encoder`): fp32 CPU inference
through an optimised copy of the MobileNet gives the plain eager path's results within 1e-5, is
deterministic, follows weight changes, and leaves training, bf16, state dicts and PANNs alone.

A randomly initialised mn04 (non-trivial BatchNorm statistics, as a trained one has), 2 s
windows: no weights needed, a few seconds in all."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from earshot.config import EFFICIENTAT_AUDIO, ModelConfig
from earshot.encoders.efficientat import mn_encoder_config
from earshot.model import dual
from earshot.model.dual import JointModel
from earshot.testing.models import tiny_model


def _random_mn04(seed: int = 0) -> JointModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        audio=dataclasses.replace(EFFICIENTAT_AUDIO, window_s=2.0, hop_s=1.0),
        encoder=dataclasses.replace(mn_encoder_config("mn04"), head_tags=True),
    )
    model = JointModel(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.audio_encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    model.tag_names = tuple(f"tag{i}" for i in range(model.config.encoder.n_tags))
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small convolutions on two threads of a busy 2-core machine spend most of their time
    # waiting for each other (10x slower); one thread keeps this file at seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> JointModel:
    return _random_mn04()


@pytest.fixture(scope="module")
def waves() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return 0.1 * torch.randn(5, 64000, generator=gen)


def _plain(model: JointModel, fn):
    model.fast_inference = False
    try:
        return fn()
    finally:
        model.fast_inference = True


def test_fast_path_is_built_and_matches_the_plain_path(model, waves):
    fast_v, fast_t = model.encode_audio_tagged(waves, batch_size=2)
    entry = dual._FAST_MN.get(model.audio_encoder)
    assert entry is not None and entry[1] is not None, "the optimised copy was not built"
    plain_v, plain_t = _plain(model, lambda: model.encode_audio_tagged(waves, batch_size=2))
    assert torch.allclose(fast_v, plain_v, atol=1e-5, rtol=0)
    assert torch.allclose(fast_t, plain_t, atol=1e-5, rtol=0)
    assert torch.allclose(model.encode_audio(waves), plain_v, atol=1e-5, rtol=0)
    with torch.no_grad():
        logmel = model.frontend(waves)
        f_fast, lg_fast = model.audio_features(logmel)
        f_plain, lg_plain = _plain(model, lambda: model.audio_features(logmel))
    assert torch.allclose(f_fast, f_plain, atol=1e-5, rtol=0)
    assert torch.allclose(lg_fast, lg_plain, atol=1e-4, rtol=1e-5)


def test_fast_path_is_deterministic_per_batch_size(model, waves):
    a = model.encode_audio(waves, batch_size=3)
    b = model.encode_audio(waves, batch_size=3)
    assert torch.equal(a, b)
    other = model.encode_audio(waves, batch_size=5)
    assert torch.allclose(a, other, atol=1e-5, rtol=0)
    twin = copy.deepcopy(model)  # the same weights in another module: the same numbers
    assert torch.equal(twin.encode_audio(waves, batch_size=3), a)


def test_fast_path_follows_changed_weights(waves):
    model = _random_mn04(seed=4)
    before = model.encode_audio(waves)
    other = _random_mn04(seed=5)
    model.load_state_dict(other.state_dict())  # in place: the version counters move
    after = model.encode_audio(waves)
    assert not torch.allclose(before, after, atol=1e-3)
    plain = _plain(model, lambda: model.encode_audio(waves))
    assert torch.allclose(after, plain, atol=1e-5, rtol=0)
    with torch.no_grad():
        model.audio_encoder.features[0][1].running_mean.add_(0.5)  # a buffer, in place
    plain = _plain(model, lambda: model.encode_audio(waves))
    assert torch.allclose(model.encode_audio(waves), plain, atol=1e-5, rtol=0)


def test_training_and_gradients_take_the_eager_module(model, waves):
    logmel = model.frontend(waves[:2])
    assert dual._fast_path_applies(model.audio_encoder, logmel) is False  # grad enabled here
    with torch.no_grad():
        assert dual._fast_path_applies(model.audio_encoder, logmel)
        model.audio_encoder.train()
        try:
            assert not dual._fast_path_applies(model.audio_encoder, logmel)
        finally:
            model.audio_encoder.eval()
        assert not dual._fast_path_applies(model.audio_encoder, logmel.double())
    features, _ = model.audio_features(logmel)  # with gradients: eager, differentiable
    features.sum().backward()
    assert model.audio_head.weight.grad is None  # the head was not in this graph
    model.zero_grad(set_to_none=True)


def test_bf16_path_still_works(model, waves):
    fp32 = model.encode_audio(waves[:2])
    bf16 = model.encode_audio(waves[:2], precision="bf16")
    cos = (fp32 * bf16).sum(dim=1)
    assert bf16.dtype == torch.float32 and float(cos.min()) > 0.99


def test_state_dict_and_copies_are_untouched(model, waves):
    model.encode_audio(waves[:1])
    keys = set(model.state_dict())
    assert not any("fast" in k for k in keys)
    assert keys == set(_random_mn04().state_dict())
    assert all(t.is_contiguous() for t in model.state_dict().values())  # save_model needs it
    copy.deepcopy(model)  # EMA and refits copy models that have been used


def test_panns_models_never_take_it(waves):
    model = tiny_model()  # a small PANNs-layout CNN on the PANNs front end
    logmel = model.frontend(waves[:1, :32000])
    with torch.no_grad():
        assert not dual._fast_path_applies(model.audio_encoder, logmel)
    out = model.encode_audio(np.zeros((1, 32000), dtype=np.float32))
    assert out.shape == (1, model.config.joint_dim)


def test_auto_precision_keeps_fp32_for_the_fast_path(model, monkeypatch):
    """`--precision auto` picks bf16 on CPUs with native bf16, but not for a model on the fp32
    fast path: bf16 would run it as slower eager autocast (dual.resolve_precision)."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert dual.resolve_precision("auto") == "bf16"
    assert dual.resolve_precision("auto", tiny_model()) == "bf16"  # PANNs: no fast path
    assert dual.resolve_precision("auto", model) == "fp32"
    assert dual.resolve_precision("bf16", model) == "bf16"  # asked for: given
    plain = copy.deepcopy(model)
    plain.fast_inference = False
    assert dual.resolve_precision("auto", plain) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert dual.resolve_precision("auto", tiny_model()) == "fp32"
