"""The model a training run starts from, and the device it runs on."""

from __future__ import annotations

import torch

from earshot.config import AudioConfig, EncoderConfig, ModelConfig, TextConfig
from earshot.encoders.audio import STANDARD_ENCODERS
from earshot.errors import EarshotError
from earshot.model.dual import JointModel
from earshot.model.io import build_model, load_model
from earshot.train.config import TrainConfig


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_model(cfg: TrainConfig, device: torch.device) -> JointModel:
    """Built from the config's encoder settings, or loaded from `init`; PANNs weights on top."""
    from earshot.encoders.panns import load_panns_checkpoint
    from earshot.encoders.text import load_text_encoder

    if cfg.init:
        from earshot.model.io import read_config, resolve_model_dir

        if read_config(resolve_model_dir(cfg.init)).kind != "earshot":
            raise EarshotError(
                f"init '{cfg.init}' is a CLAP model, which earshot runs but does not train: "
                "fine-tune the checkpoint with its own tools, then `earshot init-model DIR "
                "--clap FOLDER`"
            )
        model = load_model(cfg.init, device="cpu")
    else:
        standard = STANDARD_ENCODERS.get(cfg.encoder)
        if standard is None:
            raise EarshotError(f"unknown encoder '{cfg.encoder}'; use cnn14 or cnn10")
        widths = cfg.widths or standard.widths
        enc = EncoderConfig(cfg.encoder, widths, cfg.embed_dim or widths[-1])
        text = load_text_encoder(cfg.text_model)
        config = ModelConfig(
            audio=AudioConfig(window_s=cfg.window_s, hop_s=cfg.hop_s),
            encoder=enc,
            text=TextConfig(cfg.text_model, text.dim),
            joint_dim=cfg.joint_dim,
        )
        model = build_model(config, seed=cfg.seed)
        model.attach_text_encoder(text)
    if cfg.panns:
        load_panns_checkpoint(cfg.panns, model.audio_encoder, model.config.audio)
    return model.to(device)
