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
    from earshot.train.state import TrainState

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


def save_checkpoint(state: TrainState) -> None:
    saved = {
        "epoch": state.epoch,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "history": state.history,
        "best_state": state.best_state,
        "model": state.model.state_dict(),
        "temperature": state.temperature.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "generator": state.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": state.cfg.to_dict(),
    }
    if state.ema is not None:
        saved["ema"] = state.ema.state_dict()
    if not state.cfg.freeze_text:
        saved["text_model"] = state.model.text_encoder.model.state_dict()
    write_checkpoint(state.out, saved)


def write_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write `state` as out/checkpoint-last.pt, atomically: a crash leaves the old one whole."""
    with atomic_path(out / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def resume(run: TrainState) -> None:
    """Load the run folder's checkpoint into `run`; refuse it if settings changed since."""
    path = run.out / CHECKPOINT
    if not path.is_file():
        raise EarshotError(f"nothing to resume: '{path}' does not exist")
    try:
        state = torch.load(path, map_location=run.device, weights_only=True)
        state["config"]
    except Exception as e:  # cut short or not ours: the unpickler fails in any way it likes
        raise EarshotError(
            f"cannot resume from '{path}': not a whole earshot checkpoint "
            f"({type(e).__name__}: {e}); delete it to start afresh"
        ) from None
    mine = {k: v for k, v in run.cfg.to_dict().items() if k not in RESUMABLE}
    theirs = {k: v for k, v in state["config"].items() if k not in RESUMABLE}
    # A setting added since the checkpoint was written ran at its default.
    defaults = TrainConfig().to_dict()
    changed = sorted(k for k in mine if mine[k] != theirs.get(k, defaults[k]))
    if changed:
        raise EarshotError(f"cannot resume '{path}': settings changed since: {', '.join(changed)}")
    run.model.load_state_dict(state["model"])
    if "text_model" in state:
        run.model.text_encoder.model.load_state_dict(state["text_model"])
    if run.ema is not None:  # the settings match, so the checkpoint has one
        run.ema.load_state_dict(state["ema"])
    run.temperature.load_state_dict(state["temperature"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    run.epoch, run.best = state["epoch"], state["best"]
    run.best_epoch, run.bad_epochs = state["best_epoch"], state["bad_epochs"]
    run.history = state["history"]
    run.best_state = state.get("best_state")
