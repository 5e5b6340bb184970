"""TrainConfig documents itself: every setting has a help line and a flag, settings with a
fixed set of values say which, and the model settings take ModelConfig's defaults."""

import argparse
import dataclasses
import typing

import pytest

from earshot.config import AudioConfig, EncoderConfig, ModelConfig, TextConfig
from earshot.errors import ConfigError
from earshot.train.config import TrainConfig, add_override_flags, load_train_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="earshot train")
    add_override_flags(p)
    return p


def test_every_setting_has_a_documented_flag():
    actions = {a.dest: a for a in _parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions, f.name
        assert f.metadata["help"].strip(), f.name
        assert actions[f.name].help.startswith(f.metadata["help"])
    text = _parser().format_help()
    assert "--triplet-variant {sum,hardest}" in text
    assert "(default: 30)" in text  # epochs


def test_choices_come_from_literals_on_the_command_line_and_in_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--loss", "hinge"])
    assert "invalid choice: 'hinge'" in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text('[train]\nloss = "hinge"\n')
    with pytest.raises(ConfigError, match="loss must be one of triplet, infonce, not 'hinge'"):
        load_train_config(config)
    config.write_text('[train]\nprecision = "fp16"\n')
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        load_train_config(config)


def test_encoder_choices_are_the_registered_encoders():
    from earshot.encoders.audio import AUDIO_ENCODERS

    hint = typing.get_type_hints(TrainConfig)["encoder"]
    assert set(typing.get_args(hint)) == set(AUDIO_ENCODERS)


def test_model_defaults_are_model_configs():
    cfg = TrainConfig()
    assert cfg.joint_dim == ModelConfig().joint_dim
    assert (cfg.window_s, cfg.hop_s) == (AudioConfig().window_s, AudioConfig().hop_s)
    assert cfg.text_model == TextConfig().model
    assert cfg.encoder == EncoderConfig().name


def test_list_flags_parse_their_items_type():
    """`--window-gate 0.76 0.5 0.092 5` takes floats (it once parsed every list as ints and
    refused its own documented command); `--widths` stays whole numbers."""
    args = _parser().parse_args(
        ["--window-gate", "0.76", "0.5", "0.092", "5", "--widths", "8", "16"]
    )
    assert args.window_gate == [0.76, 0.5, 0.092, 5.0] and args.widths == [8, 16]
    cfg = TrainConfig(window_gate=args.window_gate, text_head_lr=0.0, tag_power=1.0)
    assert cfg.window_gate == (0.76, 0.5, 0.092, 5.0)
    with pytest.raises(SystemExit):
        _parser().parse_args(["--widths", "8.5"])
    with pytest.raises(ConfigError, match="tag_power"):
        TrainConfig(tag_power=-1.0)
