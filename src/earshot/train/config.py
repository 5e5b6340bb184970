"""Training settings: one frozen dataclass, read from TOML, any field overridable on the CLI."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earshot.errors import ConfigError

LOSSES = ("triplet", "infonce")


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = ""  # Clotho folder, labels.csv folder, or captions CSV (+ audio_dir)
    audio_dir: str | None = None
    train_split: str = "development"  # or a labels.csv filter such as "fold=1,2"
    val_split: str = "validation"
    # model
    init: str | None = None  # a model folder to start from; else built from the fields below
    # cnn14 | cnn10 (trained here), or mn04 | mn10: EfficientAT's AudioSet backbone, named by
    # the model folder, frozen; only the heads train, on its cached features (train/heads.py)
    encoder: str = "cnn14"
    widths: tuple[int, ...] | None = None  # conv widths; None = PANNs' own for `encoder`
    embed_dim: int | None = None
    panns: str | None = None  # PANNs checkpoint for the audio encoder
    text_model: str = "all-MiniLM-L6-v2"
    joint_dim: int = 300
    window_s: float = 10.0  # analysis window the model is trained on (and searches with)
    hop_s: float = 5.0
    freeze_audio: bool = False  # train the heads (and text, if unfrozen) only
    freeze_text: bool = True  # frozen: sentence embeddings come from the text cache
    # objective
    loss: str = "triplet"
    margin: float = 0.2
    triplet_variant: str = "sum"  # sum (VSE, the thesis) | hardest (VSE++)
    temperature: float = 0.07  # InfoNCE's initial temperature (learnable)
    # Added to the loss: each clip against one caption of every label (labelled data only)
    class_loss: float = 0.0  # its weight; 0 turns it off
    class_temperature: float = 0.1
    # Pretrained backbones (mn04, mn10): weight of the teacher-space term that keeps every
    # window near the text head's image of its AudioSet tags (train/heads.py); 0 = off
    distill: float = 0.0
    # optimisation
    epochs: int = 30
    steps_per_epoch: int | None = None  # default: one pass over the training clips
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float | None = None  # default: lr
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    spec_augment: bool = True
    mixup_alpha: float = 0.0  # 0 turns mixup off
    # log-mel augmentation (train/batches.py); mixtures need a recipe with `mix` labels
    mix_prob: float = 0.0  # share of clips mixed with a clip of another label + joint caption
    gain_db: float = 0.0  # random gain in [-gain_db, +gain_db]
    time_shift: bool = False  # random circular shift of the frames
    noise_prob: float = 0.0  # share of clips given coloured background noise at 10-30 dB SNR
    freq_shift: int = 0  # random shift of the mel bins in [-freq_shift, +freq_shift]
    filter_db: float = 0.0  # random smooth equaliser (FilterAugment), gains in ±filter_db dB
    precise_bn: int = (
        0  # >0: BatchNorm statistics from this many clean batches before each validation
    )
    # After the last epoch: the heads fitted again on clean features of the best encoder, kept
    # only where validation improves (train/refit.py); 0 turns it off
    refit_steps: int = 0
    refit_lr: float | None = None  # default: lr
    # The exponential moving average of the weights is what validation scores and the model
    # folder gets (train/ema.py); its decay per step, 0 turns it off (the raw weights)
    ema: float = 0.0
    patience: int = 5  # epochs without a better validation mAP@10 before stopping
    seed: int = 0
    # running
    device: str = "auto"  # auto = cuda when available
    precision: str = "fp32"  # bf16: autocast for the audio CNN, ~2x on CPUs with bf16
    out: str = "runs/earshot-model"
    cache_dir: str = ".earshot-cache"
    eval_batch_size: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not '{self.loss}'")
        if self.triplet_variant not in ("sum", "hardest"):
            raise ConfigError(
                f"triplet_variant must be sum or hardest, not '{self.triplet_variant}'"
            )
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, not '{self.precision}'")
        if not (0 <= self.mix_prob <= 1 and 0 <= self.noise_prob <= 1 and self.gain_db >= 0):
            raise ConfigError("mix_prob and noise_prob must lie in [0, 1] and gain_db be >= 0")
        if self.freq_shift < 0 or self.filter_db < 0:
            raise ConfigError("freq_shift (mel bins) and filter_db (dB) must be >= 0; 0 = off")
        if self.precise_bn < 0:
            raise ConfigError("precise_bn must be >= 0 (a number of batches; 0 turns it off)")
        if self.refit_steps < 0 or (self.refit_lr is not None and self.refit_lr <= 0):
            raise ConfigError("refit_steps must be >= 0 (0 turns it off) and refit_lr > 0")
        if self.refit_steps > 0 and not self.freeze_text:
            raise ConfigError(
                "refit_steps needs freeze_text = true: the refit works on cached sentence "
                "embeddings, and a fine-tuned text encoder has none"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(
                f"ema must lie in [0, 1): the average's decay per step, 0 = off; got {self.ema}"
            )
        if self.class_loss < 0 or self.class_temperature <= 0:
            raise ConfigError("class_loss must be >= 0 and class_temperature > 0")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2: in-batch negatives need company")
        if self.epochs < 1 or self.lr <= 0:
            raise ConfigError("epochs must be ≥ 1 and lr > 0")
        if self.widths is not None:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.widths is not None:
            d["widths"] = list(self.widths)
        return d


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


# Which [table] of a config file holds which setting; what no table lists goes in [train].
_DATA = ("dataset", "audio_dir", "train_split", "val_split")
_MODEL = (
    "init", "encoder", "widths", "embed_dim", "panns", "text_model", "joint_dim", "window_s",
    "hop_s", "freeze_audio", "freeze_text",
)  # fmt: skip


def _table_of(name: str) -> str:
    return "data" if name in _DATA else "model" if name in _MODEL else "train"


def _check_table(path: Path, table: str, values: dict[str, Any]) -> None:
    """A setting in the wrong table ([train] encoder = ...) is refused, not quietly taken."""
    if table not in ("data", "model", "train"):
        raise ConfigError(f"config '{path}': unknown table [{table}]; known: data, model, train")
    known = _field_types()
    for name in values:
        if name in known and _table_of(name) != table:
            raise ConfigError(
                f"config '{path}': '{name}' belongs in [{_table_of(name)}], not [{table}]"
            )


def load_train_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """TOML (flat, or in [data]/[model]/[train] tables) + overrides → a checked TrainConfig.

    Relative paths in the file are taken relative to the file's folder.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config '{path}': {e}") from None
        for key, value in doc.items():
            if isinstance(value, dict):
                _check_table(path, key, value)
                raw.update(value)
            else:
                raw[key] = value
        for key in ("dataset", "audio_dir", "init", "panns", "out", "cache_dir"):
            if isinstance(raw.get(key), str) and raw[key] and not Path(raw[key]).is_absolute():
                raw[key] = str((path.parent / raw[key]).resolve())
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = _field_types()
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
    try:
        return TrainConfig(**raw)
    except TypeError as e:
        raise ConfigError(f"invalid training config: {e}") from None


def add_override_flags(parser) -> None:
    """One `--field-name` flag per TrainConfig field, all defaulting to 'not given'."""
    for name, hint in _field_types().items():
        flag = "--" + name.replace("_", "-")
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if isinstance(hint, types.UnionType) else hint
        if base is bool:
            parser.add_argument(flag, dest=name, default=None, type=_parse_bool, metavar="BOOL")
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, dest=name, default=None, type=int, nargs="+")
        else:
            parser.add_argument(flag, dest=name, default=None, type=base)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")
