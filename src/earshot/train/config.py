"""Training settings: one frozen dataclass, read from TOML, any field overridable on the CLI."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from earshot.config import MAX_TAG_POWER, AudioConfig, EncoderConfig, ModelConfig, TextConfig
from earshot.errors import ConfigError


def _s(default: Any, help: str) -> Any:
    """A setting: its default and the one line `earshot train --help` shows for it."""
    return field(default=default, metadata={"help": help})


Loss = Literal["triplet", "infonce"]
Encoder = Literal["cnn14", "cnn10", "mn04", "mn10"]  # = earshot.encoders.audio.AUDIO_ENCODERS
LOSSES = typing.get_args(Loss)


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = _s("", "Clotho folder, labels.csv folder, recipe TOML or captions CSV")
    audio_dir: str | None = _s(None, "audio folder for a captions CSV")
    train_split: str = _s("development", 'training split, or a labels.csv filter ("fold=1,2")')
    val_split: str = _s("validation", "validation split (scored after every epoch)")
    # model: defaults are ModelConfig's (earshot.config), not copies of them
    init: str | None = _s(None, "a model folder to start from; else one is built from below")
    encoder: Encoder = _s(  # noqa: RUF009 (a field(), as ruff sees for the other settings)
        EncoderConfig.name,
        "cnn14 | cnn10 (trained here) or mn04 | mn10 (EfficientAT's AudioSet backbone, "
        "named by the folder, frozen: only the heads train, on cached features)",
    )
    widths: tuple[int, ...] | None = _s(None, "conv widths (default: PANNs' own for encoder)")
    embed_dim: int | None = _s(None, "audio embedding size (default: the last width)")
    panns: str | None = _s(None, "PANNs checkpoint (.pth) to start the audio encoder from")
    text_model: str = _s(TextConfig.model, "sentence-transformers text encoder")
    joint_dim: int = _s(ModelConfig.joint_dim, "size of the joint text-audio space")
    window_s: float = _s(AudioConfig.window_s, "analysis window in seconds (train and search)")
    hop_s: float = _s(AudioConfig.hop_s, "hop between windows in seconds")
    audio_hidden: int = _s(
        ModelConfig.audio_hidden,
        "mn04/mn10: width of the residual MLP beside the linear audio head (model/heads.py); "
        "0 = a linear head",
    )
    teacher: str | None = _s(
        None,
        "a model folder (or `general`) whose audio vectors a student learns: the student keeps "
        "init's encoder, frozen, and the teacher's text head (train/student.py)",
    )
    pool_stats: int = _s(
        0,
        "student: its audio head also reads the last N conv blocks' time mean/max/std "
        "(EncoderConfig.pool_stats)",
    )
    freeze_audio: bool = _s(False, "train the heads (and the text side, if unfrozen) only")
    freeze_text: bool = _s(True, "frozen text encoder: sentence vectors from the text cache")
    # objective
    loss: Loss = _s("triplet", "triplet (the thesis) or infonce (DCASE 2023)")  # noqa: RUF009
    margin: float = _s(0.2, "triplet margin")
    triplet_variant: Literal["sum", "hardest"] = _s(
        "sum", "sum over negatives (VSE, the thesis) or the hardest one (VSE++)"
    )
    temperature: float = _s(0.07, "InfoNCE's initial temperature (learnable)")
    class_loss: float = _s(
        0.0, "weight of the class-caption loss (each clip against every label); 0 = off"
    )
    class_temperature: float = _s(0.1, "temperature of the class-caption loss")
    distill: float = _s(
        0.0, "mn04/mn10: weight of the teacher-space term (train/heads.py); 0 = off"
    )
    caption_loss: float = _s(
        1.0,
        "student (teacher set): weight of the caption InfoNCE beside the teacher term "
        "(distill); 0 = the teacher term alone",
    )
    text_head_lr: float = _s(
        1.0,
        "mn04/mn10: the text head's learning rate as a share of lr; 0 keeps it at its start "
        "(the sentence encoder's PCA), so queries our labels never taught stay where it puts them",
    )
    fusion: float = _s(
        0.0,
        "mn04/mn10: weight of the teacher start in every cosine of the shipped model, its "
        "heads kept beside the trained ones (model/fusion.py); 0 = off",
    )
    tag_power: float = _s(
        2.0,
        "mn04/mn10: the power of the tag probabilities the audio head reads and the teacher "
        "start sums by (2: their squares; 1: themselves, MODEL_CARD-general.md)",
    )
    window_gate: tuple[float, ...] | None = _s(
        None,
        "mn04/mn10, text_head_lr 0: [tau, low, width, top], the shipped audio head mixed per "
        "window with its start by how well it knows the window: the mean of its top cosines to "
        "the training windows (model/fusion.py GatedHead); unset = off",
    )
    # optimisation
    epochs: int = _s(30, "most epochs to train")
    steps_per_epoch: int | None = _s(None, "steps per epoch (default: one pass over the clips)")
    batch_size: int = _s(32, "clips per step (in-batch negatives)")
    lr: float = _s(1e-3, "learning rate (AdamW)")
    encoder_lr: float | None = _s(None, "learning rate of the audio encoder (default: lr)")
    weight_decay: float = _s(1e-2, "AdamW weight decay")
    warmup_epochs: float = _s(1.0, "linear warm-up before the cosine decay, in epochs")
    grad_clip: float = _s(1.0, "gradient norm clip; 0 = off")
    spec_augment: bool = _s(True, "SpecAugment time and frequency masks")
    mixup_alpha: float = _s(0.0, "mixup's Beta(alpha, alpha); 0 = off")
    # log-mel augmentation (train/batches.py); mixtures need a recipe with `mix` labels
    mix_prob: float = _s(0.0, "share of clips mixed with another label's clip + joint caption")
    gain_db: float = _s(0.0, "random gain in [-gain_db, +gain_db] dB")
    time_shift: bool = _s(False, "random circular shift of the frames")
    noise_prob: float = _s(0.0, "share of clips given coloured noise at 10-30 dB SNR")
    freq_shift: int = _s(0, "random shift of the mel bins in [-freq_shift, +freq_shift]")
    filter_db: float = _s(0.0, "random smooth equaliser (FilterAugment), gains in ±filter_db dB")
    precise_bn: int = _s(0, "BatchNorm statistics from this many clean batches before scoring")
    refit_steps: int = _s(
        0, "steps of a head refit on clean features after the last epoch (kept if better)"
    )
    refit_lr: float | None = _s(None, "learning rate of the head refit (default: lr)")
    ema: float = _s(0.0, "decay per step of the weight average that is scored and saved; 0 = off")
    patience: int = _s(5, "epochs without a better validation mAP@10 before stopping")
    seed: int = _s(0, "random seed (data order, augmentation, initial weights)")
    # running
    device: str = _s("auto", "torch device; auto = cuda when available")
    precision: Literal["fp32", "bf16"] = _s("fp32", "bf16: autocast for the audio CNN")
    out: str = _s("runs/earshot-model", "run folder: the model, checkpoints and logs")
    cache_dir: str = _s(".earshot-cache", "feature cache folder")
    eval_batch_size: int = _s(32, "windows per batch when scoring")
    progress: bool = _s(True, "progress bars")

    def __post_init__(self) -> None:
        for name, choices in _choices().items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name} must be one of {', '.join(choices)}, not '{getattr(self, name)}'"
                )
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
        if self.audio_hidden < 0:
            raise ConfigError(
                f"audio_hidden must be >= 0: the residual MLP's width, 0 = a linear audio head; "
                f"got {self.audio_hidden}"
            )
        if self.text_head_lr < 0:
            raise ConfigError(
                f"text_head_lr must be >= 0: a share of lr, 0 = the text head stays at its "
                f"start; got {self.text_head_lr}"
            )
        if not 0.0 <= self.fusion < 1.0:
            raise ConfigError(
                f"fusion must lie in [0, 1): the teacher start's weight in every cosine, 0 = "
                f"off; got {self.fusion}"
            )
        if not 0.0 < self.tag_power <= MAX_TAG_POWER:
            raise ConfigError(
                f"tag_power must lie in (0, {MAX_TAG_POWER:g}]: 2 squares the tag "
                f"probabilities, 1 keeps them; got {self.tag_power}"
            )
        if self.window_gate is not None:
            gate = tuple(float(v) for v in self.window_gate)
            if (
                len(gate) != 4 or not 0.0 <= gate[1] <= 1.0 or gate[2] <= 0 or gate[3] < 1
                or gate[3] != int(gate[3])
            ):  # fmt: skip
                raise ConfigError(
                    "window_gate is [tau, low, width, top]: low in [0, 1] (the trained head's "
                    "least share), width > 0, top a whole number >= 1; "
                    f"got {list(self.window_gate)}"
                )
            if self.fusion or self.text_head_lr != 0:
                raise ConfigError(
                    "window_gate mixes the audio heads under one query vector: it needs "
                    "text_head_lr = 0 (the text head at its start) and fusion = 0"
                )
            object.__setattr__(self, "window_gate", gate)
        if self.pool_stats < 0 or (self.pool_stats and not self.teacher):
            raise ConfigError(
                "pool_stats is a student's (teacher set): how many of the last conv blocks' "
                f"statistics its head reads, >= 0; got {self.pool_stats}"
            )
        if self.caption_loss < 0 or (self.caption_loss != 1.0 and not self.teacher):
            raise ConfigError(
                "caption_loss is a student's (teacher set): the caption InfoNCE's weight beside "
                f"the teacher term, >= 0 (0 = the teacher term alone); got {self.caption_loss}"
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
        for name in ("widths", "window_gate"):
            if getattr(self, name) is not None:
                d[name] = list(getattr(self, name))
        return d


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _choices() -> dict[str, tuple[str, ...]]:
    """The settings whose type is a Literal, and its values."""
    return {
        name: typing.get_args(hint)
        for name, hint in _field_types().items()
        if typing.get_origin(hint) is Literal
    }


# Which [table] of a config file holds which setting; what no table lists goes in [train].
_DATA = ("dataset", "audio_dir", "train_split", "val_split")
_MODEL = (
    "init", "encoder", "widths", "embed_dim", "panns", "text_model", "joint_dim", "window_s",
    "hop_s", "audio_hidden", "teacher", "pool_stats", "freeze_audio", "freeze_text",
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
        for key in _PATHS:
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
    hints = _field_types()
    for f in dataclasses.fields(TrainConfig):
        name, hint = f.name, hints[f.name]
        flag = "--" + name.replace("_", "-")
        default = "" if f.default in (None, "") else f" (default: {_shown(f.default)})"
        kw: dict[str, Any] = {"dest": name, "default": None, "help": f.metadata["help"] + default}
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if isinstance(hint, types.UnionType) else hint
        if base is bool:
            parser.add_argument(flag, type=_parse_bool, metavar="BOOL", **kw)
        elif typing.get_origin(base) is tuple:  # tuple[int, ...] or tuple[float, ...]
            item = typing.get_args(base)[0]
            metavar = {int: "N", float: "X"}.get(item, "X")
            parser.add_argument(flag, type=item, nargs="+", metavar=metavar, **kw)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(flag, choices=typing.get_args(base), **kw)
        else:
            metavar = "PATH" if name in _PATHS else {str: "TEXT", int: "N"}.get(base, "X")
            parser.add_argument(flag, type=base, metavar=metavar, **kw)


_PATHS = ("dataset", "audio_dir", "init", "teacher", "panns", "out", "cache_dir")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")
