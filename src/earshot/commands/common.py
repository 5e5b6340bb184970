"""What the CLI commands share: choosing the model from the arguments, describing it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

UNTRAINED_WARNING = (
    "earshot: warning: using an UNTRAINED, randomly initialised model (--random-init); its "
    "vectors mean nothing for search. Use it to try the pipeline, not to find sounds."
)


def load_model_from_args(args: argparse.Namespace, with_text: bool = True):
    from earshot.model.io import build_model, load_model

    if args.model:
        return load_model(args.model, device=args.device, with_text=with_text)
    if not args.random_init:
        # No --model: the default model shipped inside the package.
        return load_model("default", device=args.device, with_text=with_text)
    from earshot.config import ModelConfig
    from earshot.encoders.audio import STANDARD_ENCODERS

    print(UNTRAINED_WARNING, file=sys.stderr)
    model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[args.encoder]), seed=args.seed)
    if with_text:
        from earshot.encoders.text import load_text_encoder

        model.attach_text_encoder(load_text_encoder(model.config.text.model, args.device))
    return model.to(args.device)


def model_summary(model, untrained: bool) -> dict[str, Any]:
    from earshot.model.io import model_id

    c = model.config
    return {
        "id": model_id(model),
        "encoder": c.encoder.name,
        "text_model": c.text.model,
        "dim": c.joint_dim,
        "untrained": untrained,
    }
