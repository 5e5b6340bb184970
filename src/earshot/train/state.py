"""What a training run is made of, as two explicit objects the loop, its checkpoint and the
head refit share (instead of each reading the other's attributes):

- `TrainState`: everything that changes as training runs and that a checkpoint saves and
  `--resume` restores (weights, optimiser, schedule, generator, weight average, counters,
  history, the best epoch's weights). `train/checkpoint.py` reads and writes only this.
- `TrainData`: what the run trains and validates on, fixed once the caches are built (splits,
  feature stores, the clips drawn from, the batch maker, frozen text features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from earshot.data.cache import FeatureStore
    from earshot.data.datasets import CaptionDataset
    from earshot.model.dual import JointModel
    from earshot.train.batches import BatchMaker
    from earshot.train.config import TrainConfig
    from earshot.train.ema import WeightAverage
    from earshot.train.losses import LearnableTemperature


@dataclass
class TrainState:
    cfg: TrainConfig
    out: Path
    device: torch.device
    model: JointModel
    temperature: LearnableTemperature
    optimizer: torch.optim.Optimizer
    scheduler: Any
    gen: torch.Generator
    ema: WeightAverage | None = None
    epoch: int = 0  # epochs finished
    best: float = -1.0  # the best validation text→audio mAP@10 so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    # The weights of the best epoch as training left them (before any head refit).
    best_state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class TrainData:
    train_set: CaptionDataset
    val_set: CaptionDataset
    train_store: FeatureStore
    val_store: FeatureStore
    train_clips: np.ndarray  # indices of the training clips with at least one window
    batches: BatchMaker
    draw_p: torch.Tensor | None  # per-clip draw probabilities (recipe weights), None: uniform
    train_text: np.ndarray | None  # frozen text: sentence vectors of the caption bank
    val_text: np.ndarray | None  # ... and of the validation captions
