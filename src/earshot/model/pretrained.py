"""Models on a pretrained backbone that a model folder names and never stores.

The backbone's weights (EfficientAT's AudioSet MobileNet, MIT) and its class list (AudioSet's,
CC BY 4.0) come from elsewhere: the config names them (`encoder.weights`, `encoder.labels`:
id, file, sha256, size, URL) and `attach_backbone` resolves both at load time through
`earshot.weights` (a path, the cache, ../shared/weights, a download). What we trained, the two
heads, is what `model.safetensors` holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from earshot.config import EFFICIENTAT_AUDIO, ModelConfig, TextConfig

if TYPE_CHECKING:  # torch only where a model is built: `backbone_problem` needs none
    from earshot.model.dual import JointModel

# encoder name → its AudioSet checkpoint in earshot.weights.KNOWN_WEIGHTS
BACKBONES = {"mn04": "efficientat-mn04-as", "mn10": "efficientat-mn10-as"}
LABELS_ID = "audioset-labels"


def pretrained_config(
    encoder: str = "mn04",
    text_model: str = "all-MiniLM-L6-v2",
    text_dim: int = 384,
    joint_dim: int = 300,
    window_s: float = 10.0,
    hop_s: float = 5.0,
    pool_max: bool = False,
    tag_power: float = 2.0,
) -> ModelConfig:
    """A model config around an EfficientAT AudioSet backbone whose audio head reads the
    embedding and the tag probabilities at `tag_power` (squared by default; the teacher space
    is then a linear head)."""
    import dataclasses

    from earshot.encoders.efficientat import mn_encoder_config
    from earshot.weights import known_weights

    if encoder not in BACKBONES:
        raise ValueError(f"no pretrained backbone '{encoder}'; known: {', '.join(BACKBONES)}")
    enc = dataclasses.replace(
        mn_encoder_config(encoder),
        weights=known_weights(BACKBONES[encoder]),
        labels=known_weights(LABELS_ID),
        head_tags=True,
        pool_max=pool_max,
        tag_power=tag_power,
    )
    audio = dataclasses.replace(EFFICIENTAT_AUDIO, window_s=window_s, hop_s=hop_s)
    return ModelConfig(
        audio=audio, encoder=enc, text=TextConfig(text_model, text_dim), joint_dim=joint_dim
    )


def has_backbone(config: ModelConfig) -> bool:
    """Whether the config names third-party encoder weights (kept out of model.safetensors)."""
    return getattr(config.encoder, "weights", None) is not None


def attach_backbone(model: JointModel, path: str | None = None, progress: bool = True) -> None:
    """Load the named backbone weights into `model.audio_encoder` and its tag names.

    Raises `ModelLoadError` (from the resolver) when a file cannot be found or fetched.
    """
    from earshot.encoders.efficientat import load_efficientat_checkpoint
    from earshot.weights import read_audioset_labels, resolve_weights

    enc = model.config.encoder
    weights = resolve_weights(enc.weights, path=path, progress=progress)
    load_efficientat_checkpoint(weights, model.audio_encoder)
    for p in model.audio_encoder.parameters():
        p.requires_grad_(False)
    if enc.labels is not None:
        names = read_audioset_labels(resolve_weights(enc.labels, progress=progress), enc.n_tags)
        model.tag_names = tuple(names)


def backbone_problem(config: ModelConfig) -> str | None:
    """None when every file the config names resolves (downloading where allowed), else one
    sentence saying what is missing and how to fix it."""
    from earshot.errors import ModelLoadError
    from earshot.weights import resolve_weights

    enc = config.encoder
    for ref in (enc.weights, enc.labels):
        if ref is None:
            continue
        try:
            resolve_weights(ref)
        except ModelLoadError:
            return (
                f"the general model's backbone file {ref.file} is not available here "
                f"(offline, not cached); fix: `earshot weights fetch {ref.id}` on a machine "
                f"with network, or put the file in $EARSHOT_WEIGHTS_DIR"
            )
    return None
