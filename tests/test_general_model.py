"""Models on a named pretrained backbone: the folder holds only our heads, the backbone resolves
at load time, the teacher space is exact, the heads train, and `default` picks the general
model only where its backbone resolves. A fake backbone (our own random weights in EfficientAT's
layout, `earshot.testing.backbone`) stands in for the real one; tests of the real one are at the
end and skip without ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earshot.errors import ModelLoadError
from earshot.model.dual import JointModel
from earshot.model.io import WEIGHTS_FILE, load_model, model_id, save_model
from earshot.model.teacher import pca_basis, teacher_matrix
from earshot.testing.audio import chirp_mix
from earshot.testing.backbone import fake_teacher_model, write_fake_backbone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def fake(fake_dir):
    return write_fake_backbone(fake_dir)


@pytest.fixture
def weights_env(fake, fake_dir, monkeypatch, tmp_path):
    """The fake backbone resolves through $EARSHOT_WEIGHTS_DIR; the cache is the test's own."""
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(fake_dir))
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    return fake


def test_folder_names_the_backbone_and_stores_only_heads(weights_env, tiny_text_dir, tmp_path):
    from safetensors.torch import load_file

    model = fake_teacher_model(weights_env, tiny_text_dir)
    assert model.tag_names[:2] == ("Tone", "Noise") and len(model.tag_names) == 527
    out = save_model(model, tmp_path / "m")
    stored = load_file(str(out / WEIGHTS_FILE))
    assert stored and not any(k.startswith("audio_encoder.") for k in stored)
    assert set(stored) == {
        "audio_head.weight",
        "audio_head.bias",
        "text_head.weight",
        "text_head.bias",
    }
    config = json.loads((out / "config.json").read_text())
    ref = config["encoder"]["weights"]
    assert ref["sha256"] == weights_env[0].sha256 and ref["url"].startswith("http")
    again = load_model(out)
    assert model_id(again) == model_id(model)
    x = torch.from_numpy(chirp_mix(1.0, seed=3))[None]
    v1, t1 = model.encode_audio_tagged(x)
    v2, t2 = again.encode_audio_tagged(x)
    assert torch.equal(v1, v2) and torch.equal(t1, t2)
    assert t1.shape == (1, 527) and float(t1.min()) >= 0 and float(t1.max()) <= 1


def test_a_missing_backbone_is_a_clear_error(weights_env, tiny_text_dir, tmp_path, monkeypatch):
    out = save_model(fake_teacher_model(weights_env, tiny_text_dir), tmp_path / "m")
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("EARSHOT_SHARED_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EARSHOT_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=weights_env[0].file):
        load_model(out)


def test_teacher_space_is_the_tag_weighted_sum_of_tag_sentences(weights_env, tiny_text_dir):
    model = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=16)  # identity: exact
    x = torch.from_numpy(np.stack([chirp_mix(1.0, seed=s) for s in range(3)]))
    vectors, tags = model.encode_audio_tagged(x)
    sentences = teacher_matrix(model)
    expected = F.normalize(tags.square() @ sentences, dim=-1)
    assert torch.allclose(vectors, expected, atol=1e-5)
    query = model.encode_text(["the sound of tone"])
    plain = F.normalize(model.text_encoder.encode(["the sound of tone"]).float(), dim=-1)
    assert torch.allclose(query, plain, atol=1e-6)


def test_tag_power_sets_what_the_head_reads_and_the_start_sums_by(
    weights_env, tiny_text_dir, tmp_path, capsys
):
    """At tag_power 1 the teacher space is Σ p · s(c), not Σ p² · s(c); the power is in the
    model's config (so in its id) only where it is not the squares every earlier model read,
    and the feature cache of a power-1 model is not a power-2 model's."""
    from earshot.train.features import features_folder

    squared = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=16)
    plain = fake_teacher_model(weights_env, tiny_text_dir, joint_dim=16, tag_power=1.0)
    x = torch.from_numpy(np.stack([chirp_mix(1.0, seed=s) for s in range(3)]))
    vectors, tags = plain.encode_audio_tagged(x)
    sentences = teacher_matrix(plain)
    assert torch.allclose(vectors, F.normalize(tags @ sentences, dim=-1), atol=1e-5)
    logmel = plain.frontend(x)
    feats, logits = plain.audio_features(logmel)
    assert torch.equal(feats[:, -527:], torch.sigmoid(logits))
    feats2, _ = squared.audio_features(logmel)
    assert torch.equal(feats2[:, -527:], torch.sigmoid(logits).square())
    assert "tag_power" not in squared.config.to_dict()["encoder"]
    assert plain.config.to_dict()["encoder"]["tag_power"] == 1.0
    assert model_id(plain) != model_id(squared)
    again = load_model(save_model(plain, tmp_path / "p1"))
    assert again.config.encoder.tag_power == 1.0 and model_id(again) == model_id(plain)
    from earshot.cli import main

    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "p1")]) == 0
    audio = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("audio"))
    assert "mn04 width 0.4 -> 384-d + its 527 tag probabilities, to the power 1" in audio
    assert features_folder(plain, tmp_path, "b") != features_folder(squared, tmp_path, "b")
    with pytest.raises(ValueError, match="tag_power"):
        fake_teacher_model(weights_env, tiny_text_dir, tag_power=0.0)


def test_pca_basis_is_orthonormal_and_keeps_most_length():
    rng = np.random.default_rng(0)
    low = rng.standard_normal((200, 4)) @ rng.standard_normal((4, 12))
    basis = pca_basis(low, 4)
    assert np.allclose(basis @ basis.T, np.eye(4), atol=1e-5)
    kept = np.linalg.norm(low @ basis.T, axis=1) / np.linalg.norm(low, axis=1)
    assert kept.min() > 0.999
    with pytest.raises(ValueError):
        pca_basis(low, 13)


def test_default_prefers_general_only_where_its_backbone_resolves(
    weights_env, tiny_text_dir, tmp_path, monkeypatch, capsys
):
    import earshot.model.io as model_io

    general = save_model(fake_teacher_model(weights_env, tiny_text_dir), tmp_path / "general")
    monkeypatch.setattr(model_io, "GENERAL_DIR", general)
    monkeypatch.setattr(model_io, "OFFLINE_DIR", tmp_path / "no-offline")
    monkeypatch.delenv("EARSHOT_DEFAULT_MODEL", raising=False)
    assert model_io.choose_default_model() == general
    assert capsys.readouterr().err == ""
    # Offline, nothing cached, no shared folder: the offline student where the installation
    # has it, else the compact model, and one line saying why.
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("EARSHOT_SHARED_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EARSHOT_OFFLINE", "1")
    assert model_io.choose_default_model() == model_io.DEFAULT_DIR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compact model" in err[0]
    assert "earshot weights fetch fake-mn04" in err[0]
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "config.json").write_text("{}")
    monkeypatch.setattr(model_io, "OFFLINE_DIR", offline)
    assert model_io.choose_default_model() == offline
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline model" in err[0]
    assert "earshot weights fetch fake-mn04" in err[0]
    monkeypatch.setenv("EARSHOT_DEFAULT_MODEL", "nonsense")
    with pytest.raises(ModelLoadError, match="EARSHOT_DEFAULT_MODEL"):
        model_io.choose_default_model()


@pytest.mark.slow  # subprocesses or a training run: CI runs it (make test-all)
def test_train_general_beats_or_keeps_its_teacher_start(weights_env, tiny_text_dir, tmp_path):
    """A run on a small synthetic recipe: step 0 (the teacher) is scored, the best step lands
    in the folder, and the folder loads with the backbone resolved again."""
    from earshot.testing.backbone import small_heads_run
    from earshot.train.config import TrainConfig
    from earshot.train.heads import LOG_FILE, train_general

    settings = small_heads_run(weights_env, tiny_text_dir, tmp_path)
    cfg = TrainConfig(**{**settings, "epochs": 4}, out=str(tmp_path / "run"))
    data, start = cfg.dataset, cfg.init
    result = train_general(cfg, progress=False)
    log = json.loads((tmp_path / "run" / LOG_FILE).read_text())
    scores = [h["val_mAP@10"] for h in log["history"]]
    assert log["history"][0]["step"] == 0 and len(scores) == 5
    assert result["best_val_mAP@10"] == max(scores) >= scores[0]
    model = load_model(tmp_path / "run")
    assert model_id(model) == log["model_id"]
    # Fused with where it started: twice the width, the start half is the teacher's heads.
    assert model.config.fusion == log["fusion"] == 0.25 and model.config.joint_dim == 24
    teacher = load_model(start)
    for fused, began in (
        (model.audio_head, teacher.audio_head),
        (model.text_head, teacher.text_head),
    ):
        assert torch.equal(fused.start.weight, began.weight)
        assert torch.equal(fused.start.bias, began.bias)
    # One cache file per clip; a second pass over the same audio runs no backbone at all.
    from earshot.data.datasets import load_dataset
    from earshot.train.features import backbone_features

    cached = list((tmp_path / "cache").glob("backbone-*/*/*.npz"))
    assert len(cached) == 27  # 3 classes x (6 train + 3 val) clips
    dataset = load_dataset(str(data), "fold=2")
    first = backbone_features(model, dataset, cfg.cache_dir, "x", progress=False)
    model.audio_features = None  # would fail if called
    again = backbone_features(model, dataset, cfg.cache_dir, "x", progress=False)
    assert np.array_equal(first.features, again.features)
    assert np.array_equal(first.window_clip, again.window_clip)


# -- the real backbone, where ../shared is present ---------------------------------------------


@pytest.fixture(scope="module")
def real_teacher(shared_data, tmp_path_factory):
    from earshot.cli import main

    out = tmp_path_factory.mktemp("teacher") / "m"
    assert main(["init-model", str(out), "--efficientat", "mn04", "--joint-dim", "384"]) == 0
    return load_model(out)


@pytest.mark.realdata
def test_init_model_writes_the_teacher_space_at_a_tag_power(shared_data, tmp_path):
    from earshot.cli import main

    out = tmp_path / "p1"
    assert main(["init-model", str(out), "--efficientat", "mn04", "--tag-power", "1"]) == 0
    model = load_model(out)
    assert model.config.encoder.tag_power == 1.0
    x = torch.from_numpy(chirp_mix(10.0, seed=2))[None]
    feats, logits = model.audio_features(model.frontend(x))
    assert torch.equal(feats[:, -527:], torch.sigmoid(logits))


@pytest.mark.realdata
def test_real_teacher_ranks_everyday_sounds(real_teacher, shared_data):
    from earshot.audio.windows import window_file

    clips = {
        "a jackhammer": shared_data / "urbansound8k-derived/audio/73623-7-6-0.ogg",
    }
    rows = [
        r.split(",") for r in (shared_data / "sfx-pool" / "labels.csv").read_text().splitlines()
    ]
    by_label = {}
    for r in rows[1:]:
        by_label.setdefault(r[1], r[0])
    for label in ("glass breaking", "footsteps on gravel", "rain", "door closing"):
        if label in by_label:
            clips[label] = shared_data / "sfx-pool" / by_label[label]
    vecs = []
    for path in clips.values():
        w = np.stack([x.samples for x in window_file(path, real_teacher.config.audio)])
        vecs.append(real_teacher.encode_audio(w).max(dim=0).values)
    audio = F.normalize(torch.stack(vecs), dim=-1)
    text = real_teacher.encode_text(list(clips))
    ranks = (text @ audio.T).argmax(dim=1)
    assert (ranks == torch.arange(len(clips))).float().mean() >= 0.6


def test_split_positives_agree_with_batches_holds():
    """The heads trainer's one-matmul positives equal `batches.holds` on random tag sets."""
    from earshot.data.datasets import CaptionDataset, Clip
    from earshot.train.batches import holds
    from earshot.train.features import BackboneFeatures
    from earshot.train.heads import _Split

    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(6)]
    clips = []
    for i in range(20):
        tags = frozenset(rng.choice(names, size=rng.integers(1, 4), replace=False))
        cap_tags = tuple(
            frozenset(rng.choice(sorted(tags), size=rng.integers(1, len(tags) + 1), replace=False))
            for _ in range(3)
        )
        clips.append(Clip(f"c{i}", Path(f"c{i}.wav"), ("a", "b", "c"), "x", tags, cap_tags))
    ds = CaptionDataset("t", "train", tuple(clips))
    bf = BackboneFeatures(
        np.zeros((20, 2), np.float32), np.zeros((20, 1), np.float32), np.arange(20)
    )
    split = _Split(ds, bf, {"a": np.zeros(4), "b": np.zeros(4), "c": np.zeros(4)})
    caps, idx = np.arange(len(split.captions)), np.arange(20)
    expected = holds(split.clip_tags[idx], split.caption_tags[caps]).T
    assert np.array_equal(split.positives(caps, idx), expected)
    assert expected.any() and not expected.all()


def test_pool_max_gives_the_head_the_strongest_moment():
    """With pool_max the head reads [average ; time-max ; tags²]; the time-max of a window
    whose sound fills a tenth of it stays near that sound's, where the average is diluted."""
    import dataclasses

    from earshot.config import EFFICIENTAT_AUDIO, ModelConfig
    from earshot.encoders.efficientat import mn_encoder_config
    from earshot.model.dual import audio_head_inputs

    enc = dataclasses.replace(mn_encoder_config("mn04"), head_tags=True, pool_max=True)
    config = ModelConfig(audio=EFFICIENTAT_AUDIO, encoder=enc, joint_dim=8)
    assert audio_head_inputs(config) == 2 * 384 + 527
    torch.manual_seed(0)
    model = JointModel(config).eval()
    burst = chirp_mix(1.0, seed=1)
    short = np.zeros(320000, np.float32)
    short[:32000] = burst
    long = np.tile(burst, 10).astype(np.float32)
    with torch.no_grad():
        feats, logits = model.audio_features(
            model.frontend(torch.from_numpy(np.stack([short, long])))
        )
    assert feats.shape == (2, 2 * 384 + 527) and logits.shape == (2, 527)
    avg, peak = feats[:, :384], feats[:, 384:768]
    assert torch.all(peak >= avg - 1e-5)  # a maximum over time is at least the mean
    dilution_avg = (avg[0] - avg[1]).norm() / avg[1].norm()
    dilution_max = (peak[0] - peak[1]).norm() / peak[1].norm()
    assert dilution_max < dilution_avg
    assert torch.allclose(feats[:, 768:], torch.sigmoid(logits).square())
