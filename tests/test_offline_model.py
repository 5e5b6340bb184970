"""The offline model: a student of the general model on our own encoder (train/student.py).

Tiny models from the production code (a fake EfficientAT teacher, a tiny CNN10 init) for the
training path; the shipped folder's checks need no ../shared except where marked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earshot.errors import ConfigError, EarshotError
from earshot.model.io import OFFLINE_DIR, load_model, model_id, save_model
from earshot.train.heads import LOG_FILE

REPO = Path(__file__).resolve().parents[1]


def test_pool_stats_widen_the_encoders_output_and_leave_other_ids_alone():
    from earshot.config import ModelConfig
    from earshot.model.dual import audio_head_inputs
    from earshot.testing.models import tiny_model

    plain = tiny_model("cnn10")
    config = plain.config
    widths = config.encoder.widths
    stats = ModelConfig.from_dict(
        {**config.to_dict(), "encoder": {**config.to_dict()["encoder"], "pool_stats": 2}}
    )
    assert "pool_stats" not in config.to_dict()["encoder"]  # older ids unchanged
    assert stats.to_dict()["encoder"]["pool_stats"] == 2
    assert audio_head_inputs(stats) == config.encoder.embed_dim + 3 * sum(widths[-2:])
    from earshot.model.io import build_model

    wide = build_model(stats)
    wide.audio_encoder.load_state_dict(plain.audio_encoder.state_dict())
    wide.eval()
    x = torch.randn(2, 1, 200, config.audio.n_mels)
    with torch.no_grad():
        got = wide.audio_encoder(x)
        want = plain.audio_encoder(x)
    assert got.shape == (2, audio_head_inputs(stats))
    # fc1's embedding last, unchanged; before it each block's time mean, max, std
    torch.testing.assert_close(got[:, -config.encoder.embed_dim :], want)
    mean, top, std = (
        got[:, : widths[-2]],
        got[:, widths[-2] : 2 * widths[-2]],
        got[:, 2 * widths[-2] :],
    )
    assert bool((top >= mean - 1e-6).all()) and bool((std[:, : widths[-2]] >= 0).all())
    with pytest.raises(ValueError, match="pool_stats"):
        ModelConfig.from_dict(
            {**config.to_dict(), "encoder": {**config.to_dict()["encoder"], "pool_stats": 9}}
        )


def _student_run(weights_env, tiny_text_dir, tmp_path) -> dict:
    from earshot.testing.backbone import fake_teacher_model
    from earshot.testing.datasets import write_labels_dataset
    from earshot.testing.models import tiny_model

    data = write_labels_dataset(tmp_path / "data", per_class={"1": 6, "2": 3}, seconds=1.0)
    teacher = save_model(fake_teacher_model(weights_env, tiny_text_dir, 12), tmp_path / "teacher")
    init = tiny_model("cnn10", text_model=str(tiny_text_dir), text_dim=16)
    init_dir = save_model(init, tmp_path / "init")
    return dict(
        init=str(init_dir),
        teacher=str(teacher),
        pool_stats=2,
        audio_hidden=16,
        dataset=str(data),
        train_split="fold=1",
        val_split="fold=2",
        epochs=3,
        steps_per_epoch=10,
        batch_size=8,
        lr=1e-2,
        distill=3.0,
        temperature=0.05,
        cache_dir=str(tmp_path / "cache"),
        out=str(tmp_path / "student"),
        progress=False,
    )


@pytest.mark.slow  # a training run: CI runs it (make test-all)
def test_a_student_keeps_our_encoder_and_the_teachers_text_side(
    weights_env, tiny_text_dir, tmp_path, capsys, monkeypatch
):
    import earshot
    from earshot.train.config import TrainConfig
    from earshot.train.loop import train

    settings = _student_run(weights_env, tiny_text_dir, tmp_path)
    result = train(TrainConfig(**settings))
    student = load_model(result.out)
    teacher = load_model(settings["teacher"])
    init = load_model(settings["init"], with_text=False)
    # Its encoder is init's, tensor for tensor; its text head the teacher's; its windows too.
    for name, value in init.audio_encoder.state_dict().items():
        torch.testing.assert_close(student.audio_encoder.state_dict()[name], value, rtol=0, atol=0)
    for name, value in teacher.text_head.state_dict().items():
        torch.testing.assert_close(student.text_head.state_dict()[name], value, rtol=0, atol=0)
    assert (student.config.audio.window_s, student.config.audio.hop_s) == (
        teacher.config.audio.window_s,
        teacher.config.audio.hop_s,
    )
    assert student.config.encoder.weights is None  # nothing named: it loads with no network
    log = json.loads((Path(result.out) / LOG_FILE).read_text())
    assert log["teacher"] == model_id(teacher) and log["init"] == model_id(init)
    assert log["history"][0]["step"] == 0 and len(log["history"]) == 4
    # It places a window nearer where the teacher does than its ridge start alone: the fit
    # moved toward the teacher (a 1 s window of noise, the windows' length here).
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((4, 32000)).astype(np.float32) * 0.1)

    def unit(model, head=None):
        with torch.no_grad():
            features = model.audio_features(model.frontend(x))[0]
            return F.normalize((head or model.audio_head)(features), dim=-1)

    t = unit(teacher)
    trained = float((unit(student) * t).sum(-1).mean())
    assert trained > 0.5, trained
    # `earshot info` says what its head reads.
    from earshot.cli import main

    assert main(["info", "--model", str(result.out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["audio_encoder"]
    assert info["pool_stats"] == 2 and info["head_inputs"] == student.audio_head.in_features
    # It indexes and searches like any model.
    with earshot.Index(tmp_path / "c.sqlite", model=student) as idx:
        idx.add([Path(settings["dataset"]) / "audio"])
        assert idx.search("a tone", k=3)
    # caption_loss 0: the teacher term alone (MODEL_CARD-offline.md's validation rows); the
    # cached features are reused, and the caption InfoNCE is never computed.
    import earshot.train.student as student_module

    def no_captions(*args, **kwargs):
        raise AssertionError("caption_loss = 0 computed the caption InfoNCE")

    monkeypatch.setattr(student_module, "caption_nce", no_captions)
    alone = {**settings, "caption_loss": 0.0, "epochs": 1, "out": str(tmp_path / "alone")}
    assert train(TrainConfig(**alone)).best_epoch is not None


def test_a_student_refuses_what_it_cannot_learn_from(weights_env, tiny_text_dir, tmp_path):
    from earshot.train.config import TrainConfig
    from earshot.train.loop import train

    settings = _student_run(weights_env, tiny_text_dir, tmp_path)
    with pytest.raises(ConfigError, match="pool_stats"):
        TrainConfig(**{**settings, "teacher": None})
    with pytest.raises(ConfigError, match="caption_loss"):
        TrainConfig(**{**settings, "pool_stats": 0, "teacher": None, "caption_loss": 0.0})
    with pytest.raises(ConfigError, match="caption_loss"):
        TrainConfig(**{**settings, "caption_loss": -1.0})
    with pytest.raises(EarshotError, match="init"):
        train(TrainConfig(**{**settings, "init": None}))
    # a named third-party backbone as the student's encoder: not ours to ship
    with pytest.raises(EarshotError, match="trained"):
        train(TrainConfig(**{**settings, "init": settings["teacher"]}))


def test_the_packaged_offline_model_is_all_ours():
    """Shipped whole (encoder and heads): its encoder is the compact model's, tensor for tensor
    (trained here from nothing), its text head the general model's; nothing names a backbone."""
    from safetensors.torch import load_file

    from earshot.model.io import DEFAULT_DIR, GENERAL_DIR

    config = json.loads((OFFLINE_DIR / "config.json").read_text())
    assert config["encoder"].get("weights") is None and config["encoder"]["pool_stats"] == 2
    state = load_file(str(OFFLINE_DIR / "model.safetensors"))
    compact = load_file(str(DEFAULT_DIR / "model.safetensors"))
    general = load_file(str(GENERAL_DIR / "model.safetensors"))
    encoder = {k for k in state if k.startswith("audio_encoder.")}
    assert encoder == {k for k in compact if k.startswith("audio_encoder.")}
    for k in encoder:
        assert torch.equal(state[k], compact[k]), k
    for k in ("text_head.weight", "text_head.bias"):
        assert torch.equal(state[k], general[k]), k
    shipped = json.loads((OFFLINE_DIR / "heldout.json").read_text())
    card = (REPO / "MODEL_CARD-offline.md").read_text()
    assert shipped["model_id"] in card
    assert model_id(load_model("offline", with_text=False)) == shipped["model_id"]
    for word in ("non-commercial", "MIT", "general model", "compact model"):
        assert word in card, word


@pytest.mark.slow
@pytest.mark.realdata
def test_the_cards_demo_queries_regenerate(shared_data, tmp_path):
    """MODEL_CARD-offline.md's demo paragraph, as `bench/bench_demo.py --models offline
    --sets sfx` measures it among the sfx pool's 1,163 test clips: what it finds by sound
    alone (and what it misses), and what the demo's default (hybrid, names) finds."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_demo_t", REPO / "bench/bench_demo.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    got = bench.sfx_results(
        load_model("offline", lean_text=True), bench.sfx_test_clips(), tmp_path, 5
    )

    def labels(query, mode="sound"):
        return [h["label"] for h in got[query][mode]]

    assert labels("rain")[:2] == ["rain heard from indoors", "storm water running"]
    assert all(lab.startswith("footsteps on") for lab in labels("footsteps on gravel"))
    assert "footsteps on gravel" not in labels("footsteps on gravel")
    assert labels("a door slams")[1] == "car door slam"
    assert labels("glass breaking")[2] == "glass breaking"
    assert "bird" in labels("birds singing")[0]
    assert not any("dog" in lab for lab in labels("a dog barking"))  # its miss, stated
    # hybrid (the demo's default, the files keeping their names): each finds its sound first
    firsts = {q: labels(q, "default")[0] for q in got}
    assert firsts == {
        "rain": "rain heard from indoors",
        "footsteps on gravel": "footsteps on gravel",
        "a door slams": "steel door closing",
        "glass breaking": "glass breaking",
        "a dog barking": "dog barking",
        "birds singing": "birds chirping",
    }
