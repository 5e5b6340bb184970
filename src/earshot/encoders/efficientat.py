"""EfficientAT's MobileNetV3 audio taggers ("mn04", "mn10", ...), with upstream's parameter names.

A re-implementation of the "mn" models of github.com/fschmid56/EfficientAT (Schmid, Koutini,
Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge Distillation",
ICASSP 2023) as upstream builds them for its AudioSet checkpoints (`models/mn/model.py`
`get_model` defaults: width_mult from the name, strides (2, 2, 2, 2), head_type "mlp",
se_dims "c", se_agg "max", se_r 4, 527 classes), so that e.g. `mn04_as_mAP_432.pt` loads with
`load_state_dict(strict=True)`:

- channels: every width of the inverted-residual table times the multiplier, rounded by
  `make_divisible(v, 8)` (`models/mn/utils.py`: to the nearest multiple of 8, at least 8, and
  bumped by 8 if rounding lost more than 10 %), see `adjust_channels`;
- the table (`_mobilenet_v3_conf`): MobileNetV3-Large's 15 bottlenecks, `INVERTED_RESIDUALS`;
- a block (`models/mn/block_types.py` `InvertedResidual`): 1x1 expansion (left out when the
  expanded width equals the input width), depthwise kxk with stride, channel squeeze-excitation
  on the expanded features where the table says so, 1x1 linear projection; a residual when
  stride is 1 and input and output widths match. Each conv is torchvision's
  `ConvNormActivation` layout: `.0` conv without bias, `.1` BatchNorm, then the activation;
- squeeze-excitation (`ConcurrentSEBlock` with se_dims [1] and `SqueezeExcitation`): mean over
  frequency and time, fc1 to make_divisible(channels // 4, 8), ReLU, fc2, sigmoid, a channel
  scale; upstream stacks its one branch and takes the max over it, which is the identity;
  its names are `conc_se_layers.0.fc1` / `.fc2`;
- BatchNorm everywhere with eps 1e-3 and momentum 0.01 (`MN.__init__`'s norm_layer);
- stem 3x3 stride 2 conv to the first block's input width, hardswish; after the blocks a 1x1
  conv to 6x the last width, hardswish (`features.16`);
- head "mlp" (`classifier`): global average pool, flatten, Linear(6 * last, adjust(1280)),
  hardswish, dropout 0.2, Linear(., n_classes): hence `classifier.2` and `classifier.5`;
- `MN._forward_impl` returns (logits, features) with features = the global average of the last
  conv's maps; we return them the other way round, `(embedding, logits)`.

Input: log-mel (batch, 1, n_mels, frames) from `audio.efficientat_frontend.EfficientAtLogMel`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import EncoderConfig
from earshot.errors import ModelLoadError

BN_EPS = 1e-3  # MN.__init__: partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
BN_MOMENTUM = 0.01
SE_REDUCTION = 4  # get_model: se_r=4
HEAD_DROPOUT = 0.2  # MN.__init__: dropout=0.2
AUDIOSET_TAGS = 527


@dataclass(frozen=True)
class Bottleneck:
    """One row of MobileNetV3-Large's table, before width scaling."""

    in_ch: int
    kernel: int
    expanded: int
    out_ch: int
    se: bool
    hardswish: bool  # "HS" (else "RE": ReLU)
    stride: int


# `_mobilenet_v3_conf` with strides (2, 2, 2, 2), no reduced tail and no dilation.
INVERTED_RESIDUALS: tuple[Bottleneck, ...] = (
    Bottleneck(16, 3, 16, 16, False, False, 1),
    Bottleneck(16, 3, 64, 24, False, False, 2),
    Bottleneck(24, 3, 72, 24, False, False, 1),
    Bottleneck(24, 5, 72, 40, True, False, 2),
    Bottleneck(40, 5, 120, 40, True, False, 1),
    Bottleneck(40, 5, 120, 40, True, False, 1),
    Bottleneck(40, 3, 240, 80, False, True, 2),
    Bottleneck(80, 3, 200, 80, False, True, 1),
    Bottleneck(80, 3, 184, 80, False, True, 1),
    Bottleneck(80, 3, 184, 80, False, True, 1),
    Bottleneck(80, 3, 480, 112, True, True, 1),
    Bottleneck(112, 3, 672, 112, True, True, 1),
    Bottleneck(112, 5, 672, 160, True, True, 2),
    Bottleneck(160, 5, 960, 160, True, True, 1),
    Bottleneck(160, 5, 960, 160, True, True, 1),
)
LAST_CHANNEL = 1280  # the head's hidden width before scaling
LAST_CONV_EXPANSION = 6  # features[-1]: 6 x the last block's width

# Upstream's names (helpers/utils.py NAME_TO_WIDTH) for the multipliers it ships.
MN_WIDTHS: dict[str, float] = {
    "mn01": 0.1,
    "mn02": 0.2,
    "mn04": 0.4,
    "mn05": 0.5,
    "mn06": 0.6,
    "mn08": 0.8,
    "mn10": 1.0,
    "mn12": 1.2,
    "mn14": 1.4,
    "mn16": 1.6,
    "mn20": 2.0,
    "mn30": 3.0,
    "mn40": 4.0,
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), one step up if that loses > 10 %.

    The TensorFlow MobileNet rule that EfficientAT's `models/mn/utils.py` uses.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def adjust_channels(channels: int, width: float) -> int:
    return make_divisible(channels * width, 8)


def mn_embed_dim(width: float) -> int:
    """Width of the pooled embedding: 6 x the last block's scaled width (384 at 0.4, 960 at 1)."""
    return LAST_CONV_EXPANSION * adjust_channels(INVERTED_RESIDUALS[-1].out_ch, width)


def mn_encoder_config(name: str, n_tags: int = AUDIOSET_TAGS) -> EncoderConfig:
    """The EncoderConfig of upstream's model `name` ("mn04", "mn10", ...)."""
    width = MN_WIDTHS[name]
    return EncoderConfig(name, (), mn_embed_dim(width), width=width, n_tags=n_tags)


class ConvBnAct(nn.Sequential):
    """conv (no bias) → BatchNorm → activation; children named 0, 1, 2 as upstream's."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[], nn.Module] | None = None,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class ChannelSqueeze(nn.Module):
    """Squeeze-excitation over channels: global mean → fc1 → ReLU → fc2 → sigmoid → scale."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3))  # (batch, channels)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale[:, :, None, None]


class SqueezeExcite(nn.Module):
    """Holder that gives the channel SE upstream's name, `conc_se_layers.0` (one branch)."""

    def __init__(self, channels: int):
        super().__init__()
        squeezed = make_divisible(channels // SE_REDUCTION, 8)
        self.conc_se_layers = nn.ModuleList([ChannelSqueeze(channels, squeezed)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    def __init__(self, row: Bottleneck, width: float):
        super().__init__()
        in_ch = adjust_channels(row.in_ch, width)
        expanded = adjust_channels(row.expanded, width)
        out_ch = adjust_channels(row.out_ch, width)
        act = nn.Hardswish if row.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(ConvBnAct(in_ch, expanded, 1, activation=act))
        layers.append(
            ConvBnAct(expanded, expanded, row.kernel, row.stride, groups=expanded, activation=act)
        )
        if row.se:
            layers.append(SqueezeExcite(expanded))
        layers.append(ConvBnAct(expanded, out_ch, 1))
        self.block = nn.Sequential(*layers)
        self.residual = row.stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class EfficientAtMN(nn.Module):
    """MobileNetV3 "mn" tagger at `config.width`: log-mel → (embedding, AudioSet logits).

    Input (batch, 1, n_mels, frames); output `(embedding (batch, embed_dim), logits
    (batch, n_tags))`, plus, with `config.pool_max`, the feature map's maximum over time of its
    mean over frequency (batch, embed_dim). Any n_mels and frames work (fully convolutional,
    global pooling); the checkpoints were trained on 128 mels and 10 s (1000 frames).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.n_tags <= 0:
            raise ValueError(f"{config.name} needs n_tags > 0 (its classifier), got {config}")
        named = MN_WIDTHS.get(config.name)
        if named is not None and config.width != named:
            raise ValueError(
                f"{config.name} is EfficientAT's width-{named:g} model, config says width "
                f"{config.width:g}"
            )
        expected = mn_embed_dim(config.width)
        if config.embed_dim != expected:
            raise ValueError(
                f"{config.name} at width {config.width:g} has a {expected}-d embedding, "
                f"config says embed_dim {config.embed_dim}"
            )
        self.config = config
        self.embed_dim = expected
        self.n_tags = config.n_tags
        width = config.width
        first = adjust_channels(INVERTED_RESIDUALS[0].in_ch, width)
        last = adjust_channels(INVERTED_RESIDUALS[-1].out_ch, width)
        layers: list[nn.Module] = [ConvBnAct(1, first, 3, 2, activation=nn.Hardswish)]
        layers += [InvertedResidual(row, width) for row in INVERTED_RESIDUALS]
        layers.append(ConvBnAct(last, self.embed_dim, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        hidden = adjust_channels(LAST_CHANNEL, width)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(self.embed_dim, hidden),
            nn.Hardswish(),
            nn.Dropout(p=HEAD_DROPOUT),
            nn.Linear(hidden, config.n_tags),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # MN.__init__'s initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(
        self, logmel: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # logmel: (batch, 1, n_mels, frames)
        if logmel.dim() != 4 or logmel.shape[1] != 1:
            raise ValueError(
                f"{self.config.name} expects (batch, 1, n_mels, frames), got {tuple(logmel.shape)}"
            )
        if augment is not None:
            # On the network's input, where EfficientAT applies its masking and mixup.
            logmel = augment(logmel)
        x = self.features(logmel)  # (batch, embed_dim, f', t')
        embedding = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (batch, embed_dim)
        logits = self.classifier(x)
        if self.config.pool_max:
            # ours, not upstream's: the strongest moment of each channel, for the head
            return embedding, logits, x.mean(dim=2).amax(dim=2)
        return embedding, logits


def build_mn(config: EncoderConfig, n_mels: int) -> EfficientAtMN:
    """Registry builder: `n_mels` is accepted for the common signature; the channel-only SE of
    the AudioSet models makes the weights independent of it."""
    return EfficientAtMN(config)


def load_efficientat_checkpoint(path: str | Path, encoder: nn.Module) -> None:
    """Load an EfficientAT `.pt` (a plain state dict, e.g. `mn04_as_mAP_432.pt`) into `encoder`
    in place, strictly; `CheckpointMismatchError` names any missing, unexpected or mis-shaped
    key. Read with `weights_only=True`."""
    from earshot.encoders.panns import check_state_dict, read_checkpoint

    state = read_checkpoint(path)
    state = state.get("model", state) if isinstance(state.get("model"), Mapping) else state
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"'{path}' is not an EfficientAT checkpoint: expected a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    check_state_dict(encoder, state, str(path))
    encoder.load_state_dict(state, strict=True)
