"""Tiny models built from production code, for tests and benchmarks that must run in seconds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from earshot.config import EncoderConfig, ModelConfig, TextConfig
from earshot.model.dual import JointModel
from earshot.model.io import build_model


def tiny_encoder_config(name: str = "cnn14") -> EncoderConfig:
    widths = (4, 8, 8, 8, 8, 16) if name == "cnn14" else (4, 8, 8, 16)
    return EncoderConfig(name, widths, 16)


def tiny_config(
    name: str = "cnn14",
    text_model: str = "all-MiniLM-L6-v2",
    text_dim: int = 384,
    joint_dim: int = 12,
) -> ModelConfig:
    return ModelConfig(
        encoder=tiny_encoder_config(name),
        text=TextConfig(text_model, text_dim),
        joint_dim=joint_dim,
    )


def tiny_model(name: str = "cnn14", seed: int = 0, **kwargs) -> JointModel:
    """A randomly initialised tiny model whose BatchNorm statistics are not the identity.

    Fresh BatchNorm layers (mean 0, var 1) hide mistakes in how running statistics are saved
    and loaded, so they get seeded random statistics here.
    """
    model = build_model(tiny_config(name, **kwargs), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def write_tiny_text_model(directory: str | Path, hidden: int = 16, seed: int = 0) -> Path:
    """A one-layer BERT sentence-transformers folder using MiniLM's tokenizer (random weights)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    from earshot.encoders.text import DEFAULT_TEXT_MODEL, resolve_text_model

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    tmp = tempfile.TemporaryDirectory()
    raw = Path(tmp.name)
    tokenizer = BertTokenizerFast.from_pretrained(resolve_text_model(DEFAULT_TEXT_MODEL))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = Transformer(str(raw), max_seq_length=64)
    pooling = Pooling(hidden, pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(directory))
    tmp.cleanup()
    return directory
