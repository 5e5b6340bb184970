"""A model is a folder: `config.json` + `model.safetensors`, loadable with nothing else.

The sentence encoder is named in the config (`text.model`), not copied; a relative name that
exists inside the folder is a text encoder shipped with the model. A CLAP model (config kind
"clap", encoders/clap.py) is a folder with `config.json` alone: it names the checkpoint that
holds every weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from earshot.config import ModelConfig
from earshot.errors import ModelLoadError
from earshot.fsutil import atomic_path, give_default_mode

# torch is imported by the functions that need it: reading a folder's config, resolving a
# model name and `earshot.model.query` (a text search's torch-free model) need none of it.
if TYPE_CHECKING:
    from earshot.model.dual import JointModel

FORMAT = "earshot-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def build_model(config: ModelConfig, seed: int = 0) -> JointModel:
    """A randomly initialised model; the same seed gives the same weights."""
    import torch

    from earshot.model.dual import JointModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JointModel(config)
    return model.eval()


def model_id(model: JointModel) -> str:
    """Content hash of config + weights: two models share an id only if they compute the same.

    A `QueryModel` (earshot.model.query) carries the id, hashed the same way from its files."""
    known = getattr(model, "model_id", None)
    if isinstance(known, str):
        return known
    from earshot.hashing import state_dict_hash

    config = json.dumps(model.config.to_dict(), sort_keys=True).encode()
    return state_dict_hash(model.state_dict(), prefix=config)


def save_model(model: JointModel, directory: str | Path) -> Path:
    """Write the model folder; files land whole or not at all (write, then rename)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in _own_state(model).items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, p))
    return write_config(model.config, directory)


def write_config(config: ModelConfig, directory: str | Path) -> Path:
    """Write the folder's config.json (atomically); all a CLAP model folder holds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict()}
    _atomic_write(
        directory / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(data, indent=2) + "\n")
    )
    return directory


BACKBONE_PREFIX = "audio_encoder."


def _own_state(model: JointModel) -> dict:
    """What a model folder stores: every tensor, less a named backbone's (never ours to ship,
    resolved at load time instead: model/pretrained.py)."""
    from earshot.model.pretrained import has_backbone

    state = model.state_dict()
    if has_backbone(model.config):
        state = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    return state


def _atomic_write(target: Path, write) -> None:
    with atomic_path(target) as tmp:
        write(str(tmp))
        give_default_mode(tmp)  # safetensors writes 0600: a model folder is meant to be shared


def model_files(directory: str | Path) -> tuple[Path, ModelConfig, Path | None]:
    """A model folder (or name) resolved: its path, its config and its weights file, which
    must exist (None for a CLAP model, whose weights are all in the checkpoint it names)."""
    directory = resolve_model_dir(directory)
    config = read_config(directory)
    if config.kind == "clap":
        return directory, config, None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"'{directory}' has no {WEIGHTS_FILE}")
    return directory, config, weights


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"'{directory}' is not an earshot model folder: no {CONFIG_FILE}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read '{path}': {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelLoadError(f"'{path}' is not an earshot model config (format != {FORMAT!r})")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ModelLoadError(
            f"'{path}' was written by a newer earshot (format {raw['format_version']}); upgrade"
        )
    body = {k: v for k, v in raw.items() if k not in ("format", "format_version")}
    try:
        return ModelConfig.from_dict(body)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"invalid model config '{path}': {e}") from None


# Models shipped inside the package, by name (a folder of that name here wins):
# `general` (MODEL_CARD-general.md): heads on EfficientAT's AudioSet backbone, which it names
# and resolves at run time; `offline` (MODEL_CARD-offline.md): a student of the general model on
# our own encoder, all ours, works with no network at once; `compact` (MODEL_CARD.md): small,
# all ours, the ~25 sounds it was trained on (catalogues indexed by it stay bound to it).
# `default` is `general` where its backbone resolves, else `offline`, with a one-line notice;
# $EARSHOT_DEFAULT_MODEL (general | offline | compact) fixes the choice.
DEFAULT_NAME = "default"
DEFAULT_ENV = "EARSHOT_DEFAULT_MODEL"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_DIR = MODELS_DIR / "default"  # the compact model (the folder keeps its first name)
GENERAL_DIR = MODELS_DIR / "general"
OFFLINE_DIR = MODELS_DIR / "offline"
PACKAGED_NAMES = ("general", "offline", "compact")


def packaged_model_dir(name: str) -> Path:
    """The folder of a model shipped with earshot (`general`, `offline`, `compact`)."""
    folder = {"general": GENERAL_DIR, "offline": OFFLINE_DIR, "compact": DEFAULT_DIR}[name]
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"this installation has no default model ('{folder}' is missing or empty): "
            "pass --model DIR, or reinstall earshot"
        )
    return folder


def default_model_dir() -> Path:
    """The packaged compact model's folder (trained by `configs/default.toml`)."""
    return packaged_model_dir("compact")


def names_a_folder(directory: str | Path) -> bool:
    """Whether `directory` is taken as a folder rather than a packaged model's name."""
    path = Path(directory)
    if str(directory) in (*PACKAGED_NAMES, DEFAULT_NAME):
        return (path / CONFIG_FILE).is_file()
    return path.is_dir()


def resolve_model_dir(directory: str | Path) -> Path:
    """A model folder path; the names `general` and `compact` mean the packaged models, and
    `default` the one `choose_default_model` picks, unless a model folder of that name (one
    with a config.json) exists here: any other folder of that name (`earshot evaluate`'s old
    reports, a folder of recordings) does not hide the packaged model."""
    name = str(directory)
    if names_a_folder(directory):
        return Path(directory)
    if name in PACKAGED_NAMES:
        return packaged_model_dir(name)
    if name == DEFAULT_NAME:
        return choose_default_model()
    return Path(directory)


def fallback_model_dir() -> Path:
    """The model `default` means where the general model's backbone cannot be resolved: the
    offline student where this installation has it, else the compact model."""
    return OFFLINE_DIR if (OFFLINE_DIR / "config.json").is_file() else default_model_dir()


def choose_default_model(quiet: bool = False) -> Path:
    """`default`: the general model where its backbone resolves (a path, the cache, the shared
    folder, or a download unless offline), else the offline model, saying so in one line."""
    import os

    from earshot.model.pretrained import backbone_problem

    fixed = os.environ.get(DEFAULT_ENV, "").strip()
    if fixed:
        if fixed not in PACKAGED_NAMES:
            raise ModelLoadError(
                f"${DEFAULT_ENV} must be one of {', '.join(PACKAGED_NAMES)}, not '{fixed}'"
            )
        return packaged_model_dir(fixed)
    fallback = fallback_model_dir()
    if not (GENERAL_DIR / "config.json").is_file():
        return fallback
    problem = backbone_problem(read_config(GENERAL_DIR))
    if problem is None:
        return GENERAL_DIR
    if not quiet:
        import sys

        what = (
            "the offline model (a smaller student of the general model)"
            if fallback == OFFLINE_DIR
            else "the compact model (knows ~25 sounds)"
        )
        print(f"earshot: using {what}: {problem}", file=sys.stderr)
    return fallback


def load_model(
    directory: str | Path, device: str = "cpu", with_text: bool = True, lean_text: bool = False
) -> JointModel:  # or a ClapJointModel (encoders/clap.py), for a folder of kind "clap"
    """Load a model folder strictly (every key must match); in eval mode on `device`.

    `directory` may be `default`: the model shipped with earshot. `lean_text`: the sentence
    encoder is the one for queries (`load_query_text_encoder`: NumPy, where it runs the model
    exactly), not sentence-transformers, whose import costs seconds; for encoding only.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from earshot.encoders.panns import check_state_dict
    from earshot.model.dual import JointModel
    from earshot.model.pretrained import attach_backbone, has_backbone

    directory, config, weights = model_files(directory)
    if weights is None:  # kind "clap": the checkpoint it names, through transformers
        from earshot.encoders.clap import load_clap_model

        clap = load_clap_model(config, device=device)
        clap.source = str(directory.resolve())
        return clap
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read '{weights}': {e}") from None
    model = JointModel(config)
    if has_backbone(config):
        # The backbone is named, not stored: resolve and load it, then the heads on top.
        attach_backbone(model)
        expected = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}
        state = {**expected, **state}
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    if has_backbone(config):
        # Its id hashes the backbone's tensors: remembered, so that a text search, which reads
        # the folder without torch (earshot.model.query), knows it.
        from earshot.model.query import remember_model_id

        remember_model_id(directory, config, model_id(model))
    if with_text:
        from earshot.encoders.text import load_query_text_encoder, load_text_encoder

        load_text = load_query_text_encoder if lean_text else load_text_encoder
        model.attach_text_encoder(load_text(config.text.model, device, base_dir=directory))
    model.source = str(directory.resolve())
    return model.to(device).eval()
