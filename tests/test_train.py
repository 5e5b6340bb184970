"""Training on synthetic labelled audio: loss falls, metrics rise, runs replay and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from earshot.cli import main
from earshot.model.io import load_model
from earshot.testing.datasets import write_labels_dataset
from earshot.train.config import ConfigError, load_train_config
from earshot.train.loop import CHECKPOINT, Trainer, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_labels_dataset(tmp_path_factory.mktemp("data") / "synth")


def settings(data, out, **over):
    base = dict(
        dataset=str(data),
        train_split="fold=1",
        val_split="fold=2",
        encoder="cnn10",
        widths=(8, 16, 16, 32),
        embed_dim=32,
        joint_dim=16,
        epochs=4,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=1,
        steps_per_epoch=15,
        out=str(out),
        cache_dir=str(out.parent / "cache"),
        progress=False,
        patience=10,
    )
    base.update(over)
    return load_train_config(None, base)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    trainer = Trainer(settings(data, out))
    before = trainer.validate()["text_to_audio"]["mAP@10"]["value"]
    result = trainer.fit()
    return before, result


def test_loss_falls_and_validation_rises(trained):
    before, result = trained
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.best_map10 >= before + 0.2, (before, result.best_map10)
    assert result.best_map10 == max(h["val_mAP@10"] for h in result.history)


def test_output_is_a_model_folder_with_logs(trained):
    _, result = trained
    out = result.out
    model = load_model(out)
    assert model.config.joint_dim == 16
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert json.loads((out / "train_config.json").read_text())["batch_size"] == 8
    report = json.loads((out / "validation.json").read_text())
    assert report["epoch"] == result.best_epoch
    assert report["text_to_audio"]["mAP@10"]["value"] == pytest.approx(result.best_map10)
    assert (out / "validation.md").is_file() and (out / CHECKPOINT).is_file()


@pytest.mark.slow  # several short training runs each; make test-all and CI run it
def test_same_seed_replays_and_resume_continues_exactly(data, tmp_path):
    straight = train(settings(data, tmp_path / "a", epochs=2, steps_per_epoch=4))
    first = train(settings(data, tmp_path / "b", epochs=1, steps_per_epoch=4))
    assert first.history[0] == straight.history[0] | {
        "train_s": first.history[0]["train_s"],
        "clips_per_s": first.history[0]["clips_per_s"],
    }
    resumed = train(settings(data, tmp_path / "b", epochs=2, steps_per_epoch=4), resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_settings(data, tmp_path):
    train(settings(data, tmp_path / "c", epochs=1, steps_per_epoch=2))
    with pytest.raises(Exception, match="settings changed since: lr"):
        train(settings(data, tmp_path / "c", epochs=2, steps_per_epoch=2, lr=1e-2), resume=True)
    with pytest.raises(Exception, match="nothing to resume"):
        train(settings(data, tmp_path / "none", epochs=1), resume=True)


def test_infonce_mixup_and_frozen_audio_run(data, tmp_path):
    result = train(
        settings(data, tmp_path / "d", epochs=1, steps_per_epoch=3, loss="infonce", mixup_alpha=0.4)
    )
    assert result.history[0]["loss"] > 0
    before = load_model(result.out, with_text=False).audio_encoder.state_dict()
    frozen = train(
        settings(
            data,
            tmp_path / "e",
            epochs=1,
            steps_per_epoch=3,
            init=str(result.out),
            freeze_audio=True,
        )
    )
    after = load_model(frozen.out, with_text=False).audio_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unfrozen_text_encoder_is_saved_inside_the_model(data, tmp_path, tiny_text_dir):
    result = train(
        settings(
            data,
            tmp_path / "f",
            epochs=1,
            steps_per_epoch=2,
            text_model=str(tiny_text_dir),
            freeze_text=False,
        )
    )
    model = load_model(result.out)
    assert model.config.text.model == "text" and (result.out / "text").is_dir()
    assert model.encode_text(["a low hum"]).shape == (1, 16)


def test_toml_config_with_tables_and_overrides(data, tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        f'[data]\ndataset = "{data}"\ntrain_split = "fold=1"\nval_split = "fold=2"\n'
        '[model]\nencoder = "cnn10"\nwidths = [4, 8, 8, 16]\njoint_dim = 8\n'
        '[train]\nepochs = 3\nloss = "infonce"\nout = "runs/x"\n'
    )
    cfg = load_train_config(path, {"epochs": 1, "lr": None})
    assert (cfg.epochs, cfg.loss, cfg.widths) == (1, "infonce", (4, 8, 8, 16))
    assert cfg.out == str((tmp_path / "runs" / "x").resolve())
    path.write_text("[train]\nepochs = 3\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match="unknown training setting.*learning_rate"):
        load_train_config(path)
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="loss must be one of"):
        load_train_config(None, {"loss": "hinge"})


def test_a_setting_in_the_wrong_table_is_refused(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[train]\nepochs = 3\nencoder = "cnn10"\n')
    with pytest.raises(ConfigError, match=r"'encoder' belongs in \[model\], not \[train\]"):
        load_train_config(path)
    path.write_text('[model]\ndataset = "x"\n')
    with pytest.raises(ConfigError, match=r"'dataset' belongs in \[data\], not \[model\]"):
        load_train_config(path)
    path.write_text("[optim]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown table \[optim\]"):
        load_train_config(path)
    path.write_text('encoder = "cnn10"\nepochs = 2\n')  # a flat file has no tables to mix up
    assert load_train_config(path).encoder == "cnn10"


def test_the_shipped_training_configs_put_every_setting_in_its_table():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    trains = [p for p in sorted(configs.glob("*.toml")) if "[train]" in p.read_text()]
    assert len(trains) >= 3
    for path in trains:
        load_train_config(path)


def test_cli_train_and_evaluate(data, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = main(
        [
            "train",
            "--dataset",
            str(data),
            "--train-split",
            "fold=1",
            "--val-split",
            "fold=2",
            "--encoder",
            "cnn10",
            "--widths",
            "4",
            "8",
            "8",
            "16",
            "--joint-dim",
            "8",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
            "--progress",
            "no",
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 1
    code = main(
        [
            "evaluate",
            "--model",
            str(out),
            "--dataset",
            str(data),
            "--split",
            "fold=2",
            "--cache-dir",
            str(tmp_path / "c"),
            "--n-boot",
            "50",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 12 and report["captions"] == 60
    assert 0 < report["chance_text_to_audio_mAP@10"] < 1
    assert set(report["text_to_audio"]) >= {"R@1", "R@5", "R@10", "mAP@10"}
    lo, hi = report["text_to_audio"]["mAP@10"]["ci95"]
    assert lo <= report["text_to_audio"]["mAP@10"]["value"] <= hi
    assert (out / "eval" / "report-fold_2.json").is_file()
    assert (out / "eval" / "report-fold_2.md").is_file()
    code = main(
        [
            "evaluate",
            "--model",
            str(out),
            "--dataset",
            str(tmp_path / "nope"),
            "--split",
            "validation",
        ]
    )
    assert code == 1 and "neither a folder nor a captions CSV" in capsys.readouterr().err


def _norms(model):
    return [m for m in model.audio_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.slow  # several short training runs each; make test-all and CI run it
def test_precise_bn_sets_statistics_from_clean_training_windows(data, tmp_path):
    trainer = Trainer(settings(data, tmp_path / "bn", epochs=1, steps_per_epoch=3))
    for clips in ([0, 1, 2, 3, 4, 5, 6, 7],) * 3:
        trainer.step(trainer.data.train_clips[clips])
    gen_state = trainer.state.gen.get_state()
    norms = _norms(trainer.state.model)
    for m in norms:  # whatever the statistics were before, they are replaced
        m.running_mean.fill_(1000.0)
        m.running_var.fill_(1e-6)
    trainer.recompute_batchnorm(40)
    first = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    trainer.recompute_batchnorm(40)
    again = [(m.running_mean, m.running_var) for m in norms]
    for (mean1, var1), (mean2, var2) in zip(first, again, strict=True):
        assert torch.equal(mean1, mean2) and torch.equal(var1, var2)
    assert torch.equal(trainer.state.gen.get_state(), gen_state)  # training draws untouched
    assert all(m.momentum == 0.1 for m in norms)  # restored after the cumulative average
    # bn0 normalises mel bins: its mean is the per-bin mean of the clean windows it saw
    # (320 uniform draws of 24 one-window clips), within sampling error.
    store = trainer.data.train_store
    rows = [w[0] for w in (store.clip_windows[c] for c in trainer.data.train_clips)]
    per_bin = store.logmel(np.array(rows))[:, 0].mean(dim=(0, 1))
    spread = float(per_bin.max() - per_bin.min())
    assert torch.allclose(norms[0].running_mean, per_bin, atol=max(3.0, 0.1 * spread))
    assert float(norms[0].running_mean.max()) < 100.0


@pytest.mark.slow  # several short training runs each; make test-all and CI run it
def test_precise_bn_runs_replay_and_resume_exactly(data, tmp_path):
    over = dict(epochs=2, steps_per_epoch=3, precise_bn=4)
    straight = train(settings(data, tmp_path / "a", **over))
    train(settings(data, tmp_path / "b", **{**over, "epochs": 1}))
    resumed = train(settings(data, tmp_path / "b", **over), resume=True)
    assert [h["val_mAP@10"] for h in resumed.history] == [h["val_mAP@10"] for h in straight.history]
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="precise_bn must be >= 0"):
        settings(data, tmp_path / "c", precise_bn=-1)


def test_a_fresh_run_into_an_old_folder_starts_its_log_over(data, tmp_path):
    for _ in range(2):
        train(settings(data, tmp_path / "same", epochs=1, steps_per_epoch=2))
    lines = (tmp_path / "same" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
