"""What the CLI commands share: choosing the model from the arguments, describing it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

UNTRAINED_WARNING = (
    "earshot: warning: using an UNTRAINED, randomly initialised model (--random-init); its "
    "vectors mean nothing for search. Use it to try the pipeline, not to find sounds."
)


def model_from_args(args: argparse.Namespace, catalogue=None, use: str = "all"):
    """The model `--model` / `--random-init` (and $EARSHOT_MODEL, the catalogue's own model,
    the shipped default) name, as `earshot.api.choose_model` decides for every command: a
    `ModelChoice` (model, untrained, source). Says so on stderr when it is untrained."""
    from earshot import api

    choice = api.choose_model(
        args.model,
        catalogue,
        use=use,
        random_init=args.random_init,
        encoder=args.encoder,
        seed=args.seed,
        device=args.device,
    )
    if choice.untrained:
        print(UNTRAINED_WARNING, file=sys.stderr)
    return choice


def model_summary(choice) -> dict[str, Any]:
    from earshot.model.io import model_id

    c = choice.model.config
    return {
        "id": model_id(choice.model),
        "encoder": c.encoder.name,
        "text_model": c.text.model,
        "dim": c.joint_dim,
        "untrained": choice.untrained,
    }
