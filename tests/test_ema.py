"""The weight average (train/ema.py): its arithmetic, and a training run that scores it."""

from __future__ import annotations

import json

import pytest
import torch

from earshot.model.io import load_model
from earshot.testing.datasets import write_labels_dataset
from earshot.train.config import ConfigError
from earshot.train.ema import WeightAverage
from earshot.train.loop import CHECKPOINT, Trainer, train
from test_train import settings as train_settings


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_labels_dataset(tmp_path_factory.mktemp("data") / "synth")


def settings(data, out, **over):
    """test_train's tiny run, two short epochs."""
    return train_settings(data, out, **{"epochs": 2, "steps_per_epoch": 4, **over})


def _trained_parts(model):
    parts = (model.audio_encoder, model.audio_head, model.text_head)
    return {f"{i}.{k}": v for i, p in enumerate(parts) for k, v in p.state_dict().items()}


def test_the_average_follows_its_formula_and_swaps_in_and_out(data, tmp_path):
    trainer = Trainer(settings(data, tmp_path / "m"))
    model = trainer.state.model
    avg = WeightAverage(model, 0.75)
    avg.update()  # the first update copies
    first = {k: v.clone() for k, v in _trained_parts(model).items()}
    with torch.no_grad():
        for p in model.audio_head.parameters():
            p.add_(1.0)
        model.audio_encoder.bn0.running_mean.add_(2.0)
    avg.update()
    raw = {k: v.clone() for k, v in _trained_parts(model).items()}
    with avg.swapped():
        inside = _trained_parts(model)
        for k, v in first.items():
            if v.is_floating_point():
                assert torch.allclose(inside[k], 0.75 * v + 0.25 * raw[k]), k
        head = next(k for k in first if k.startswith("1."))
        assert torch.allclose(inside[head], first[head] + 0.25)
        assert not torch.equal(inside[head], raw[head])
    after = _trained_parts(model)
    assert all(torch.equal(after[k], raw[k]) for k in raw)  # the model's own weights are back
    with pytest.raises(RuntimeError, match="boom"), avg.swapped():
        raise RuntimeError("boom")
    assert all(torch.equal(_trained_parts(model)[k], raw[k]) for k in raw)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


@pytest.mark.slow  # several short training runs each; make test-all and CI run it
def test_a_run_with_the_average_trains_the_same_and_saves_the_average(data, tmp_path):
    plain = train(settings(data, tmp_path / "plain"))
    averaged = train(settings(data, tmp_path / "avg", ema=0.9))
    # Training is untouched: same losses, same raw weights, and the raw score is logged.
    assert [h["loss"] for h in averaged.history] == [h["loss"] for h in plain.history]
    assert [h["raw_val_mAP@10"] for h in averaged.history] == [
        h["val_mAP@10"] for h in plain.history
    ]
    a = torch.load(tmp_path / "plain" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "avg" / CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "ema" in b and "ema" not in a
    # The folder holds the average of the best epoch, whose score is the one logged.
    saved = load_model(tmp_path / "avg", with_text=False).state_dict()
    raw_last = b["model"]
    head = "audio_head.weight"
    assert not torch.equal(saved[head], raw_last[head])
    best = averaged.history[averaged.best_epoch - 1]
    report = json.loads((tmp_path / "avg" / "validation.json").read_text())
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx(best["val_mAP@10"])
    assert best["val_mAP@10"] != best["raw_val_mAP@10"]
    # One epoch: the best is the last, so the folder must equal the checkpoint's average.
    train(settings(data, tmp_path / "one", ema=0.9, epochs=1))
    one = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in one["ema"].items()}
    folder = load_model(tmp_path / "one", with_text=False).state_dict()
    for k in ema:
        if k != "n_averaged":
            assert torch.equal(folder[k], ema[k]), k
    assert not torch.equal(folder[head], one["model"][head])


@pytest.mark.slow  # several short training runs each; make test-all and CI run it
def test_a_resumed_run_continues_the_average_exactly(data, tmp_path):
    straight = train(settings(data, tmp_path / "a", ema=0.9))
    train(settings(data, tmp_path / "b", ema=0.9, epochs=1))
    resumed = train(settings(data, tmp_path / "b", ema=0.9), resume=True)
    assert [h["val_mAP@10"] for h in resumed.history] == [h["val_mAP@10"] for h in straight.history]
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["ema"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="settings changed since: ema"):
        train(settings(data, tmp_path / "b", ema=0.5, epochs=3), resume=True)


def test_bad_decays_are_refused(data, tmp_path):
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="ema must lie in"):
            settings(data, tmp_path / "x", ema=bad)


def test_a_fine_tuned_text_encoder_is_averaged_and_saved_averaged(data, tmp_path, tiny_text_dir):
    over = dict(epochs=1, text_model=str(tiny_text_dir), freeze_text=False)
    result = train(settings(data, tmp_path / "avg", ema=0.5, **over))
    state = torch.load(tmp_path / "avg" / CHECKPOINT, weights_only=True)
    averaged = {
        k.removeprefix("module.text_encoder."): v
        for k, v in state["ema"].items()
        if k.startswith("module.text_encoder.")
    }
    assert averaged and state["text_model"].keys() == averaged.keys()
    # The folder's sentence encoder is the average, not the raw weights training left.
    saved = load_model(result.out).text_encoder.model.state_dict()
    moved = [k for k in averaged if not torch.equal(averaged[k], state["text_model"][k])]
    assert moved
    for k in moved:
        assert torch.equal(saved[k].cpu(), averaged[k].cpu()), k
