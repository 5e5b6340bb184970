"""`earshot train` and `earshot evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from earshot.data.recipe import Recipe


def cmd_train(args: argparse.Namespace) -> int:
    from earshot.train.config import load_train_config
    from earshot.train.loop import train

    overrides = {k: v for k, v in vars(args).items() if k not in _TRAIN_OWN_ARGS}
    cfg = load_train_config(args.config, overrides)
    result = train(cfg, resume=args.resume)
    summary = {
        "out": str(result.out),
        "best_epoch": result.best_epoch,
        "best_val_mAP@10": result.best_map10,
        "epochs_run": len(result.history),
    }
    if result.refit is not None:
        summary["refit"] = result.refit
    if args.json:
        print(json.dumps(summary))
    else:
        refit = result.refit
        if refit is not None and refit["kept"]:
            scored = f"validation mAP@10 {refit['val_mAP@10']:.4f} after the head refit"
        else:
            scored = f"validation mAP@10 {result.best_map10:.4f}"
        print(f"best epoch {result.best_epoch}: {scored}; model folder: {result.out}")
    return 0


_TRAIN_OWN_ARGS = {"command", "func", "config", "resume", "json"}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from earshot.data.cache import build_feature_cache
    from earshot.data.datasets import load_dataset
    from earshot.eval.evaluate import evaluate_split, window_embeddings
    from earshot.eval.report import format_table, write_report
    from earshot.model.io import load_model, model_id

    model = load_model(args.model, device=args.device)
    dataset = load_dataset(args.dataset, args.split, args.audio_dir)
    store = build_feature_cache(dataset, model.config.audio, args.cache_dir, progress=not args.json)
    # Every report below scores the same clips: embed their windows once.
    windows = window_embeddings(model, store, args.batch_size)
    settings = dict(batch_size=args.batch_size, seed=args.seed, n_boot=args.n_boot, windows=windows)
    report = {
        "model": str(args.model),
        "model_id": model_id(model),
        **evaluate_split(model, dataset, store, **settings),
    }
    recipe, queries, prefix = _recipe_queries(args.dataset, args.split)
    if recipe is not None and queries:
        # A recipe's test split is scored with its held-out paraphrase queries per label, and
        # with mixtures of its `mix` labels found by two of those queries joined; its val split
        # the same way with the val paraphrases (the figures model selection looked at).
        from earshot.eval.mixtures import evaluate_mixtures
        from earshot.eval.queries import evaluate_queries

        for key, value in evaluate_queries(model, dataset, store, queries, **settings).items():
            report[f"{prefix}{key}"] = value
        if args.split == "test":
            # Labels read from file names: also scored with real human captions that name them.
            captions = recipe.caption_queries()
            if captions:
                scored = evaluate_queries(model, dataset, store, captions, **settings)
                for key, value in scored.items():
                    if key != "search_by_example":  # the same clips: given once, above
                        report[f"held_out_captions_{key}"] = value
        mixable = [name for name, spec in recipe.labels.items() if spec.mix]
        mixtures = evaluate_mixtures(model, dataset, store, queries, mixable, **settings)
        if mixtures is not None:
            report[f"{prefix}mixtures"] = mixtures
    out = Path(args.out) if args.out else default_report_dir(args.model)
    json_path, md_path = write_report(report, out, stem=f"report-{_safe(args.split)}")
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        print(f"\nwrote {json_path} and {md_path}")
    return 0


def default_report_dir(model: str) -> Path:
    """Where `earshot evaluate` writes without --out: MODEL/eval for a model folder; for a
    packaged model's name (general, offline, compact, default) earshot-eval/NAME here, never a
    folder named like the model, which would have hidden the packaged one from the next
    command."""
    from earshot.model.io import names_a_folder

    if names_a_folder(model):
        return Path(model) / "eval"
    return Path("earshot-eval") / _safe(str(model))


def _recipe_queries(
    dataset: str | Path, split: str
) -> tuple[Recipe | None, dict[str, list[str]], str]:
    """A recipe, its per-label query set for `split` and the report-key prefix it goes under
    (None, {}, "" for a dataset that is not a recipe or a split without its own queries)."""
    if not str(dataset).endswith(".toml") or split not in ("test", "val"):
        return None, {}, ""
    from earshot.data.recipe import recipe_for

    recipe = recipe_for(dataset)
    if split == "test":
        return recipe, recipe.queries(), "held_out_"
    return recipe, recipe.val_queries(), "val_queries_"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
