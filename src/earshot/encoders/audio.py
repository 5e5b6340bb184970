"""PANNs' CNN14 and CNN10, with PANNs' parameter names so their checkpoints map one to one;
the registry of audio encoders, which also holds EfficientAT's MobileNets (`encoders.efficientat`).

The PANNs encoders take log-mel frames and return fc1's embedding; the frontend lives in
`earshot.audio.features` and the classifier (`fc_audioset`) is left out: earshot needs the
embedding, not AudioSet's 527 tags. The MobileNets ("mn04", "mn10") keep their tagger and
return `(embedding, logits)`; they take `config.EFFICIENTAT_AUDIO`'s front end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import EFFICIENTAT_AUDIO, AudioConfig, EncoderConfig
from earshot.encoders.efficientat import build_mn, mn_encoder_config


def init_layer(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        layer.bias.data.fill_(0.0)


def init_bn(bn: nn.Module) -> None:
    bn.bias.data.fill_(0.0)
    bn.weight.data.fill_(1.0)


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling (PANNs' `ConvBlock`, pool_type='avg')."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        init_layer(self.conv1)
        init_layer(self.conv2)
        init_bn(self.bn1)
        init_bn(self.bn2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool)
        return x


class PannsCnn(nn.Module):
    """The CNN-n family of PANNs: bn0 over mel bins, conv blocks, global pooling, fc1.

    Input (batch, 1, frames, n_mels) log-mel; output (batch, embed_dim) = PANNs' `embedding`,
    after the last `config.pool_stats` blocks' time statistics where it names any
    (`EncoderConfig.pool_stats`; `model.dual.audio_head_inputs` gives the width).
    """

    def __init__(self, config: EncoderConfig, n_mels: int, pools: list[tuple[int, int]]):
        super().__init__()
        if len(pools) != len(config.widths):
            raise ValueError(
                f"{config.name} has {len(pools)} conv blocks, got {len(config.widths)} widths"
            )
        self.config = config
        self.bn0 = nn.BatchNorm2d(n_mels)
        channels = [1, *config.widths]
        for i, pool in enumerate(pools):
            # setattr keeps PANNs' flat names (conv_block1, ...) rather than a ModuleList's.
            setattr(self, f"conv_block{i + 1}", ConvBlock(channels[i], channels[i + 1], pool))
        self.n_blocks = len(pools)
        self.fc1 = nn.Linear(config.widths[-1], config.embed_dim)
        init_bn(self.bn0)
        init_layer(self.fc1)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(
        self, logmel: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        # logmel: (batch, 1, frames, n_mels)
        x = logmel.transpose(1, 3)  # (batch, n_mels, frames, 1): bn0 normalises each mel bin
        x = self.bn0(x)
        x = x.transpose(1, 3)
        stats: list[torch.Tensor] = []
        if augment is not None:
            # PANNs applies SpecAugment and mixup here, after bn0: a zeroed stripe is then the
            # bin's mean level, not 0 dB.
            x = augment(x)
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"conv_block{i}")(x)
            if i > self.n_blocks - self.config.pool_stats:
                stats.extend(_time_stats(x))
            x = F.dropout(x, p=0.2, training=self.training)
        x = torch.mean(x, dim=3)  # (batch, channels, frames')
        x = torch.amax(x, dim=2) + torch.mean(x, dim=2)  # (batch, channels)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu_(self.fc1(x))
        x = F.dropout(x, p=0.5, training=self.training)  # (batch, embed_dim)
        return torch.cat([*stats, x], dim=1) if stats else x


def _time_stats(x: torch.Tensor) -> list[torch.Tensor]:
    """A conv block's (batch, channels, frames, mels) output → its mean over frequency's mean,
    maximum and standard deviation over time: three (batch, channels)."""
    x = x.mean(dim=3)
    return [x.mean(dim=2), x.amax(dim=2), x.std(dim=2)]


def build_cnn14(config: EncoderConfig, n_mels: int) -> PannsCnn:
    # Six blocks; the last one does not pool (PANNs: pool_size=(1, 1)).
    n = len(config.widths)
    return PannsCnn(config, n_mels, [(2, 2)] * (n - 1) + [(1, 1)])


def build_cnn10(config: EncoderConfig, n_mels: int) -> PannsCnn:
    return PannsCnn(config, n_mels, [(2, 2)] * len(config.widths))


AudioEncoderBuilder = Callable[[EncoderConfig, int], nn.Module]

AUDIO_ENCODERS: dict[str, AudioEncoderBuilder] = {
    "cnn14": build_cnn14,
    "cnn10": build_cnn10,
    "mn04": build_mn,
    "mn10": build_mn,
}

# Upstream's own sizes, for configs that name a standard architecture.
STANDARD_ENCODERS: dict[str, EncoderConfig] = {
    "cnn14": EncoderConfig("cnn14", (64, 128, 256, 512, 1024, 2048), 2048),
    "cnn10": EncoderConfig("cnn10", (64, 128, 256, 512), 512),
    "mn04": mn_encoder_config("mn04"),
    "mn10": mn_encoder_config("mn10"),
}

# The front end each standard encoder was trained with.
STANDARD_AUDIO: dict[str, AudioConfig] = {
    "cnn14": AudioConfig(),
    "cnn10": AudioConfig(),
    "mn04": EFFICIENTAT_AUDIO,
    "mn10": EFFICIENTAT_AUDIO,
}


def build_audio_encoder(config: EncoderConfig, n_mels: int) -> nn.Module:
    try:
        builder = AUDIO_ENCODERS[config.name]
    except KeyError:
        raise ValueError(
            f"unknown audio encoder '{config.name}'; known: {', '.join(sorted(AUDIO_ENCODERS))}"
        ) from None
    return builder(config, n_mels)
