"""A stand-in for a pretrained tagging backbone: our own random weights in EfficientAT's layout,
with a labels file, named by WeightsRefs exactly as a real one is, for tests that exercise
naming, resolving, loading and training without the real checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import torch

from earshot.config import ModelConfig, TextConfig
from earshot.encoders.efficientat import AUDIOSET_TAGS, EfficientAtMN, mn_encoder_config
from earshot.weights import WeightsRef

# Names the fake tagger "knows": the first few of its classes; the rest are numbered.
FAKE_TAGS = ("Tone", "Noise", "Silence", "Hum", "Whistle")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_fake_backbone(
    directory: str | Path, name: str = "mn04", seed: int = 0
) -> tuple[WeightsRef, WeightsRef]:
    """`directory/fake-<name>.pt` (a seeded random EfficientAtMN state dict) and
    `directory/fake-labels.csv` (527 classes); their WeightsRefs, pinned by sha256 and size.

    Point `EARSHOT_WEIGHTS_DIR` at `directory` to make them resolve; their URLs lead nowhere.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EfficientAtMN(mn_encoder_config(name))
        gen = torch.Generator().manual_seed(seed + 1)
        for module in net.modules():  # non-trivial BatchNorm statistics, as a trained net has
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    weights = directory / f"fake-{name}.pt"
    torch.save(net.state_dict(), weights)
    labels = directory / "fake-labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for i in range(AUDIOSET_TAGS):
            w.writerow([i, f"/m/fake{i}", FAKE_TAGS[i] if i < len(FAKE_TAGS) else f"Class {i}"])
    return (
        WeightsRef(
            id=f"fake-{name}",
            file=weights.name,
            sha256=_sha256(weights),
            size=weights.stat().st_size,
            url=f"http://127.0.0.1:9/{weights.name}",
            licence="ours (random, for tests)",
        ),
        WeightsRef(
            id="fake-labels",
            file=labels.name,
            sha256=_sha256(labels),
            size=labels.stat().st_size,
            url=f"http://127.0.0.1:9/{labels.name}",
            licence="ours (for tests)",
        ),
    )


def fake_general_config(
    weights: WeightsRef,
    labels: WeightsRef,
    text_model: str,
    text_dim: int,
    joint_dim: int,
    window_s: float = 1.0,
    hop_s: float = 0.5,
    tag_power: float = 2.0,
) -> ModelConfig:
    """The general model's config around the fake backbone (short windows: fast tests)."""
    from earshot.model.pretrained import pretrained_config

    config = pretrained_config(
        "mn04", text_model, text_dim, joint_dim, window_s, hop_s, tag_power=tag_power
    )
    enc = dataclasses.replace(config.encoder, weights=weights, labels=labels)
    return dataclasses.replace(config, encoder=enc, text=TextConfig(text_model, text_dim))


def fake_teacher_model(
    fake: tuple[WeightsRef, WeightsRef], text_dir, joint_dim: int = 16, tag_power: float = 2.0
):
    """A JointModel on the fake backbone (which must resolve: $EARSHOT_WEIGHTS_DIR) with the
    text encoder in `text_dir`, its heads at the teacher start (a PCA basis of the tag
    sentences where joint_dim is not the text encoder's width), summing the tag sentences by
    p^tag_power; in eval mode."""
    from earshot.encoders.text import load_text_encoder
    from earshot.model.dual import JointModel
    from earshot.model.pretrained import attach_backbone
    from earshot.model.teacher import init_teacher_heads, pca_basis, teacher_matrix

    text = load_text_encoder(str(text_dir))
    config = fake_general_config(*fake, str(text_dir), text.dim, joint_dim, tag_power=tag_power)
    model = JointModel(config)
    attach_backbone(model, progress=False)
    model.attach_text_encoder(text)
    teacher = teacher_matrix(model)
    basis = None if joint_dim == text.dim else pca_basis(teacher.numpy(), joint_dim)
    init_teacher_heads(model, teacher, basis)
    return model.eval()


def small_heads_run(fake: tuple[WeightsRef, WeightsRef], text_dir, folder: Path) -> dict:
    """TrainConfig settings for a seconds-long heads-only run on the fake backbone (which must
    resolve: $EARSHOT_WEIGHTS_DIR): a synthetic 3-class labels dataset (fold 1 train, fold 2
    val, 1 s clips) and a teacher folder of `fake_teacher_model` as the init, both written
    under `folder`; fused with the start at 0.25. Add `out` (and what the test varies)."""
    from earshot.model.io import save_model
    from earshot.testing.datasets import write_labels_dataset

    data = write_labels_dataset(folder / "data", per_class={"1": 6, "2": 3}, seconds=1.0)
    start = save_model(fake_teacher_model(fake, text_dir, 12), folder / "teacher")
    return dict(
        init=str(start),
        dataset=str(data),
        train_split="fold=1",
        val_split="fold=2",
        encoder="mn04",
        text_model=str(text_dir),
        joint_dim=12,
        window_s=1.0,
        hop_s=0.5,
        epochs=3,
        steps_per_epoch=10,
        batch_size=8,
        lr=1e-2,
        distill=0.5,
        fusion=0.25,
        cache_dir=str(folder / "cache"),
        progress=False,
    )
