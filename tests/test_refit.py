"""Head refit (train/refit.py): the heads fitted again on clean features of the best encoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from earshot.cli import main
from earshot.model.io import load_model
from earshot.train.config import ConfigError
from earshot.train.loop import CHECKPOINT, Trainer, train
from earshot.train.refit import clean_features, refit_heads
from test_train import data, settings  # noqa: F401  (the module-scoped synthetic dataset)


def _heads(model):
    return {
        k: v for k, v in model.state_dict().items() if k.startswith(("audio_head", "text_head"))
    }


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):  # noqa: F811
    """A short run without refit, whose checkpoint holds the best epoch's weights."""
    out = tmp_path_factory.mktemp("refit") / "run"
    result = train(settings(data, out, epochs=2, steps_per_epoch=6))
    return out, result


def _refit(data, finished, tmp_path, **over):  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    cfg = settings(data, out, epochs=2, steps_per_epoch=6, **over)
    trainer = Trainer(cfg)
    trainer.resume()
    return trainer, out


def test_refit_heads_fits_the_heads_only_and_replays(data, finished, tmp_path):  # noqa: F811
    trainer, _ = _refit(data, finished, tmp_path)
    model = trainer.state.model
    model.load_state_dict(trainer.state.best_state)
    encoder_before = {k: v.clone() for k, v in model.audio_encoder.state_dict().items()}
    features = clean_features(model.audio_encoder, trainer.data.train_store, trainer.state.device)
    assert features.shape == (len(trainer.data.train_store), 32)  # embed_dim of the tiny encoder

    def run(seed):
        model.load_state_dict(trainer.state.best_state)
        losses = refit_heads(
            model.audio_head,
            trainer.project_rows,
            list(model.text_head.parameters()),
            features,
            trainer.data.batches,
            trainer.data.train_clips,
            trainer.data.draw_p,
            trainer.pair_loss,
            steps=150,
            batch_size=8,
            lr=3e-3,
            weight_decay=1e-2,
            class_loss=0.0,
            class_temperature=0.1,
            generator=torch.Generator().manual_seed(seed),
        )
        return losses, {k: v.clone() for k, v in _heads(model).items()}

    losses, heads = run(1)
    assert np.mean(losses[-30:]) < np.mean(losses[:30]), (losses[:30], losses[-30:])
    assert not _equal(heads, _heads_of(trainer.state.best_state))  # the heads moved...
    assert _equal(model.audio_encoder.state_dict(), encoder_before)  # ...the encoder did not
    again, heads_again = run(1)
    assert again == losses and _equal(heads_again, heads)  # one generator, one result


def _heads_of(state):
    return {k: v for k, v in state.items() if k.startswith(("audio_head", "text_head"))}


def test_a_refit_that_helps_is_kept_and_logged(data, finished, tmp_path):  # noqa: F811
    trainer, out = _refit(data, finished, tmp_path, refit_steps=200)
    entry = trainer.refit()
    assert entry["of_epoch"] == trainer.state.best_epoch and entry["refit_steps"] == 200
    assert _log(out)[-1] == entry
    report = json.loads((out / "validation.json").read_text())
    saved = load_model(out, with_text=False).state_dict()
    assert entry["kept"] and entry["val_mAP@10"] > entry["before"]  # on this data it helps
    assert report["refit"] == entry and report["epoch"] == trainer.state.best_epoch
    assert report["text_to_audio"]["mAP@10"]["value"] == entry["val_mAP@10"]
    assert not _equal(_heads_of(saved), _heads_of(trainer.state.best_state))
    # the encoder in the folder is the best epoch's, whatever the refit did
    enc = [k for k in saved if k.startswith("audio_encoder")]
    assert all(torch.equal(saved[k], trainer.state.best_state[k].to(saved[k].device)) for k in enc)


def test_a_refit_that_hurts_is_not_kept(data, finished, tmp_path, monkeypatch):  # noqa: F811
    # A refit that scrambles the heads: validation falls, the folder keeps the trained epoch.
    def scramble(audio_head, project_text, text_params, *args, **kwargs):
        with torch.no_grad():
            for p in [*audio_head.parameters(), *text_params]:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        return [0.0]

    monkeypatch.setattr("earshot.train.refit.refit_heads", scramble)
    trainer, out = _refit(data, finished, tmp_path, refit_steps=60)
    entry = trainer.refit()
    assert not entry["kept"] and entry["val_mAP@10"] < entry["before"]
    assert _equal(load_model(out, with_text=False).state_dict(), trainer.state.best_state)
    report = json.loads((out / "validation.json").read_text())
    assert "refit" not in report and report["epoch"] == trainer.state.best_epoch
    assert report["text_to_audio"]["mAP@10"]["value"] == entry["before"]


def test_refitting_a_finished_run_again_starts_from_the_trained_heads(data, finished, tmp_path):  # noqa: F811
    """Resume with refit settings: the epoch loop has nothing left, the refit runs. A second
    refit starts from the best epoch as trained, not from the first refit's heads."""
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    del state["best_state"]  # as a checkpoint from before refits existed
    torch.save(state, out / CHECKPOINT)
    over = dict(epochs=2, steps_per_epoch=6, refit_steps=80)
    first = train(settings(data, out, **over), resume=True)
    heads1 = _heads(load_model(out, with_text=False))
    # the fallback read the trained weights from the folder and kept them in the checkpoint
    assert torch.load(out / CHECKPOINT, weights_only=True)["best_state"] is not None
    second = train(settings(data, out, **over), resume=True)
    heads2 = _heads(load_model(out, with_text=False))
    assert first.history == second.history  # no epoch ran again
    refits = [e for e in _log(out) if "refit_steps" in e]
    assert len(refits) == 2 and refits[0]["before"] == refits[1]["before"]
    assert refits[0]["val_mAP@10"] == refits[1]["val_mAP@10"]
    assert _equal(heads1, heads2)  # stacked refits would have moved the heads further


def test_refit_settings_are_checked(data, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="refit_steps must be >= 0"):
        settings(data, tmp_path / "a", refit_steps=-1)
    with pytest.raises(ConfigError, match="refit_lr > 0"):
        settings(data, tmp_path / "a", refit_steps=10, refit_lr=0.0)
    with pytest.raises(ConfigError, match="refit_steps needs freeze_text = true"):
        settings(data, tmp_path / "a", refit_steps=10, freeze_text=False)


def test_cli_refits_a_moved_finished_run_and_says_so(data, finished, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "moved"  # a run folder copied elsewhere resumes where it now is
    shutil.copytree(finished[0], out)
    args = ["train", "--dataset", str(data), "--train-split", "fold=1", "--val-split", "fold=2"]
    args += ["--encoder", "cnn10", "--widths", "8", "16", "16", "32", "--embed-dim", "32"]
    args += ["--joint-dim", "16", "--epochs", "2", "--steps-per-epoch", "6", "--batch-size", "8"]
    args += ["--lr", "3e-3", "--patience", "10", "--out", str(out), "--progress", "no"]
    args += ["--cache-dir", str(finished[0].parent / "cache"), "--refit-steps", "100", "--resume"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and summary["refit"]["refit_steps"] == 100
    assert summary["refit"] == _log(out)[-1]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"{summary['refit']['val_mAP@10']:.4f} after the head refit" in said
