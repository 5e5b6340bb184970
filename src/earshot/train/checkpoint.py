"""A training run's checkpoint: everything needed to continue it exactly where it stopped.

`checkpoint-last.pt` in the run folder holds the weights (and their average, when on), the
optimiser, the schedule, both random generators, the history, the best epoch's weights as
training left them (a head refit starts from these) and the settings. It is written after
every epoch, atomically. A run resumes only under the settings it was started with, apart from
the few in `RESUMABLE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from earshot.errors import EarshotError
from earshot.fsutil import atomic_path
from earshot.train.config import TrainConfig

if TYPE_CHECKING:
    from earshot.train.loop import Trainer

CHECKPOINT = "checkpoint-last.pt"

# Settings that may differ between a run and its resumption.
RESUMABLE = {
    "epochs",
    "patience",
    "progress",
    "device",
    "eval_batch_size",
    "cache_dir",
    "out",  # a run folder may be moved or copied and resumed where it now is
    "refit_steps",  # the refit follows the last epoch: a finished run can be refitted
    "refit_lr",
}


def save_checkpoint(trainer: Trainer) -> None:
    state = {
        "epoch": trainer.epoch,
        "best": trainer.best,
        "best_epoch": trainer.best_epoch,
        "bad_epochs": trainer.bad_epochs,
        "history": trainer.history,
        "best_state": trainer.best_state,
        "model": trainer.model.state_dict(),
        "temperature": trainer.temperature.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "generator": trainer.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": trainer.cfg.to_dict(),
    }
    if trainer.ema is not None:
        state["ema"] = trainer.ema.state_dict()
    if not trainer.cfg.freeze_text:
        state["text_model"] = trainer.model.text_encoder.model.state_dict()
    write_checkpoint(trainer.out, state)


def write_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write `state` as out/checkpoint-last.pt, atomically: a crash leaves the old one whole."""
    with atomic_path(out / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def resume(trainer: Trainer) -> None:
    """Load the run folder's checkpoint into `trainer`; refuse it if settings changed since."""
    path = trainer.out / CHECKPOINT
    if not path.is_file():
        raise EarshotError(f"nothing to resume: '{path}' does not exist")
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
        state["config"]
    except Exception as e:  # cut short or not ours: the unpickler fails in any way it likes
        raise EarshotError(
            f"cannot resume from '{path}': not a whole earshot checkpoint "
            f"({type(e).__name__}: {e}); delete it to start afresh"
        ) from None
    mine = {k: v for k, v in trainer.cfg.to_dict().items() if k not in RESUMABLE}
    theirs = {k: v for k, v in state["config"].items() if k not in RESUMABLE}
    # A setting added since the checkpoint was written ran at its default.
    defaults = TrainConfig().to_dict()
    changed = sorted(k for k in mine if mine[k] != theirs.get(k, defaults[k]))
    if changed:
        raise EarshotError(f"cannot resume '{path}': settings changed since: {', '.join(changed)}")
    trainer.model.load_state_dict(state["model"])
    if "text_model" in state:
        trainer.model.text_encoder.model.load_state_dict(state["text_model"])
    if trainer.ema is not None:  # the settings match, so the checkpoint has one
        trainer.ema.load_state_dict(state["ema"])
    trainer.temperature.load_state_dict(state["temperature"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    trainer.epoch, trainer.best = state["epoch"], state["best"]
    trainer.best_epoch, trainer.bad_epochs = state["best_epoch"], state["bad_epochs"]
    trainer.history = state["history"]
    trainer.best_state = state.get("best_state")
