"""`earshot train` and `earshot evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    from earshot.eval.evaluate import evaluate_split
    from earshot.eval.report import format_table, write_report
    from earshot.model.io import load_model, model_id
    from earshot.train.cache import build_feature_cache
    from earshot.train.datasets import load_dataset

    model = load_model(args.model, device=args.device)
    dataset = load_dataset(args.dataset, args.split, args.audio_dir)
    store = build_feature_cache(dataset, model.config.audio, args.cache_dir, progress=not args.json)
    report = {
        "model": str(args.model),
        "model_id": model_id(model),
        **evaluate_split(
            model, dataset, store, batch_size=args.batch_size, seed=args.seed, n_boot=args.n_boot
        ),
    }
    if str(args.dataset).endswith(".toml") and args.split == "test":
        # A recipe's test split is scored with its held-out paraphrase queries too, and
        # with mixtures of its `mix` labels found by two of those queries joined.
        from earshot.eval.mixtures import evaluate_mixtures
        from earshot.eval.queries import evaluate_queries
        from earshot.train.recipe import recipe_for

        recipe = recipe_for(args.dataset)
        settings = dict(batch_size=args.batch_size, seed=args.seed, n_boot=args.n_boot)
        queries = recipe.queries()
        for key, value in evaluate_queries(model, dataset, store, queries, **settings).items():
            report[f"held_out_{key}"] = value
        mixable = [name for name, spec in recipe.labels.items() if spec.mix]
        mixtures = evaluate_mixtures(model, dataset, store, queries, mixable, **settings)
        if mixtures is not None:
            report["held_out_mixtures"] = mixtures
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    json_path, md_path = write_report(report, out, stem=f"report-{_safe(args.split)}")
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        print(f"\nwrote {json_path} and {md_path}")
    return 0


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
