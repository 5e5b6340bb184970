"""`earshot` command line. Each command parses, calls the library, prints; heavy imports inside."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from earshot.errors import EarshotError

UNTRAINED_WARNING = (
    "earshot: warning: using an UNTRAINED, randomly initialised model (--random-init); its "
    "vectors mean nothing for search. Use it to try the pipeline, not to find sounds."
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="DIR",
        default=os.environ.get("EARSHOT_MODEL"),
        help="model folder (config.json + model.safetensors); env EARSHOT_MODEL",
    )
    g.add_argument(
        "--random-init",
        action="store_true",
        help="use an untrained, randomly initialised model (testing only)",
    )
    g.add_argument(
        "--encoder",
        default="cnn14",
        choices=["cnn14", "cnn10"],
        help="architecture for --random-init (default: cnn14)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed for --random-init (default: 0)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _load_model(args: argparse.Namespace, with_text: bool = True):
    from earshot.model.io import build_model, load_model

    if args.model:
        return load_model(args.model, device=args.device, with_text=with_text)
    if not args.random_init:
        raise EarshotError(
            "no model given: pass --model DIR (or set EARSHOT_MODEL), or --random-init to try "
            "the pipeline with untrained weights"
        )
    from earshot.config import ModelConfig
    from earshot.encoders.audio import STANDARD_ENCODERS

    print(UNTRAINED_WARNING, file=sys.stderr)
    model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[args.encoder]), seed=args.seed)
    if with_text:
        from earshot.encoders.text import load_text_encoder

        model.attach_text_encoder(load_text_encoder(model.config.text.model, args.device))
    return model.to(args.device)


def _model_summary(model, untrained: bool) -> dict[str, Any]:
    from earshot.model.io import model_id

    c = model.config
    return {
        "id": model_id(model),
        "encoder": c.encoder.name,
        "text_model": c.text.model,
        "dim": c.joint_dim,
        "untrained": untrained,
    }


def cmd_embed(args: argparse.Namespace) -> int:
    from earshot.embed import embed_file

    model = _load_model(args, with_text=bool(args.text))
    summary = _model_summary(model, untrained=not args.model)
    results: list[dict[str, Any]] = []
    failed = 0
    if args.text:
        vectors = model.encode_text(args.text)
        results = [
            {"text": t, "vector": v.tolist()} for t, v in zip(args.text, vectors, strict=True)
        ]
    for path in args.audio or []:
        try:
            windows = embed_file(model, path, batch_size=args.batch_size, precision=args.precision)
        except EarshotError as e:
            failed += 1
            print(f"earshot: error: {e}", file=sys.stderr)
            results.append({"file": path, "error": str(e)})
            continue
        results.append(
            {
                "file": path,
                "windows": [
                    {
                        "start": round(w.start_s, 4),
                        "end": round(w.end_s, 4),
                        "vector": w.vector.tolist(),
                    }
                    for w in windows
                ],
            }
        )
    if args.json:
        json.dump({"model": summary, "results": results}, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_embeddings(summary, results)
    return 1 if failed else 0


def _print_embeddings(summary: dict[str, Any], results: list[dict[str, Any]]) -> None:
    print(f"model {summary['id']} ({summary['encoder']}, {summary['dim']}-d)")

    def head(v: list[float]) -> str:
        return " ".join(f"{x:+.4f}" for x in v[:6]) + " ..."

    for r in results:
        if "text" in r:
            print(f"text {r['text']!r}\n  [{head(r['vector'])}]")
        elif "windows" in r:
            print(f"audio {r['file']}: {len(r['windows'])} window(s)")
            for w in r["windows"]:
                print(f"  {w['start']:8.2f}-{w['end']:8.2f} s  [{head(w['vector'])}]")


def cmd_info(args: argparse.Namespace) -> int:
    from earshot.model.io import model_id

    model = _load_model(args, with_text=False)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "id": model_id(model),
        "model": args.model or f"random-init ({args.encoder}, seed {args.seed})",
        "untrained": not args.model,
        "joint_dim": c.joint_dim,
        "audio_encoder": {
            "name": c.encoder.name,
            "widths": list(c.encoder.widths),
            "embed_dim": c.encoder.embed_dim,
        },
        "text_model": {"name": c.text.model, "dim": c.text.dim},
        "frontend": {
            "sample_rate": c.audio.sample_rate,
            "n_fft": c.audio.n_fft,
            "win_length": c.audio.n_fft,
            "hop_length": c.audio.hop_length,
            "n_mels": c.audio.n_mels,
            "fmin": c.audio.fmin,
            "fmax": c.audio.fmax,
            "window": "hann (periodic)",
            "power": 2.0,
            "log": "10*log10(max(x, 1e-10))",
            "center": True,
            "pad_mode": "reflect",
        },
        "windows": {"window_s": c.audio.window_s, "hop_s": c.audio.hop_s},
        "parameters": n_params,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    f = info["frontend"]
    print(f"model       {info['model']}")
    print(f"id          {info['id']}{'  (UNTRAINED)' if info['untrained'] else ''}")
    print(f"space       {c.joint_dim}-d, cosine similarity")
    print(
        f"audio       {c.encoder.name} widths {list(c.encoder.widths)} -> {c.encoder.embed_dim}-d"
        f" -> head -> {c.joint_dim}-d ({n_params / 1e6:.1f} M parameters in all)"
    )
    print(f"text        {c.text.model} ({c.text.dim}-d) -> head -> {c.joint_dim}-d")
    print(
        f"frontend    {f['sample_rate']} Hz, n_fft {f['n_fft']} hann, hop {f['hop_length']}, "
        f"{f['n_mels']} mels {f['fmin']:g}-{f['fmax']:g} Hz, {f['log']}, centred reflect"
    )
    print(f"windows     {c.audio.window_s:g} s, hop {c.audio.hop_s:g} s")
    return 0


def cmd_init_model(args: argparse.Namespace) -> int:
    from earshot.config import ModelConfig, TextConfig
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.encoders.panns import load_panns_checkpoint
    from earshot.encoders.text import load_text_encoder
    from earshot.model.io import build_model, model_id, save_model

    text = load_text_encoder(args.text_model)
    config = ModelConfig(
        encoder=STANDARD_ENCODERS[args.encoder],
        text=TextConfig(args.text_model, text.dim),
        joint_dim=args.joint_dim,
    )
    model = build_model(config, seed=args.seed)
    if args.panns:
        load_panns_checkpoint(args.panns, model.audio_encoder, config.audio)
    save_model(model, args.out)
    print(
        f"wrote {args.out} (id {model_id(model)}): {args.encoder} "
        f"{'from ' + args.panns if args.panns else 'randomly initialised'}, text "
        f"{args.text_model}; the heads are untrained: train it before searching with it"
    )
    return 0


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
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"best epoch {result.best_epoch}: validation mAP@10 {result.best_map10:.4f}; "
            f"model folder: {result.out}"
        )
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
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    json_path, md_path = write_report(report, out, stem=f"report-{_safe(args.split)}")
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        print(f"\nwrote {json_path} and {md_path}")
    return 0


def _catalogue_and_model(args: argparse.Namespace, create: bool):
    from earshot.api import resolve_model
    from earshot.index.store import Catalogue, default_db_path

    db = Path(args.db) if args.db else default_db_path()
    if not create and not db.exists():
        raise EarshotError(f"no catalogue at '{db}': index some audio first (earshot index PATH)")
    catalogue = Catalogue(db)
    if args.random_init:
        return catalogue, _load_model(args)
    return catalogue, resolve_model(args.model, catalogue)


def cmd_index(args: argparse.Namespace) -> int:
    from earshot.index.build import Indexer

    catalogue, model = _catalogue_and_model(args, create=True)
    with catalogue:
        indexer = Indexer(
            catalogue,
            model,
            workers=args.workers,
            batch_size=args.batch_size,
            precision=args.precision,
            progress=not args.json,
        )
        summary = indexer.run(args.paths, keep_missing=args.keep_missing)
        stats = catalogue.stats()
    result = {"db": str(catalogue.path), **summary.as_dict(), "catalogue": stats}
    if args.json:
        print(json.dumps(result))
        return 0
    s = result
    print(
        f"{catalogue.path}: {s['added']} added, {s['updated']} updated, {s['removed']} removed, "
        f"{s['unchanged']} unchanged, {s['reused']} reused, {len(s['skipped'])} skipped "
        f"({s['segments_added']} windows embedded in {s['seconds']:.1f} s, "
        f"{s['files_per_s']:.1f} files/s)"
    )
    for item in s["skipped"]:
        print(f"  skipped {item['path']}: {item['reason']}")
    for problem in s["problems"]:
        print(f"  {problem}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from earshot.search import Filters, Searcher

    catalogue, model = _catalogue_and_model(args, create=False)
    filters = Filters(
        args.folder and str(Path(args.folder).expanduser().absolute()),
        args.min_duration,
        args.max_duration,
        tuple(args.format) if args.format else None,
    )
    with catalogue:
        searcher = Searcher(catalogue, model)

        def run(query: str | None) -> list:
            if args.like:
                return searcher.search_like(args.like, args.k, args.start, args.end, filters)
            if args.like_id is not None:
                return searcher.search_like_segment(args.like_id, args.k, filters)
            return searcher.search_text(query, args.k, filters, hybrid=args.hybrid)

        if args.queries:
            lines = Path(args.queries).read_text().splitlines()
            for line in (q.strip() for q in lines):
                if line:
                    hits = run(line)
                    print(
                        json.dumps({"query": line, "hits": [h.as_dict() for h in hits]}), flush=True
                    )
            return 0
        hits = run(args.query)
    if args.json:
        print(
            json.dumps(
                {
                    "query": args.query or args.like or args.like_id,
                    "hits": [h.as_dict() for h in hits],
                }
            )
        )
        return 0
    if not hits:
        print("no matches")
    for h in hits:
        print(
            f"{h.rank:3d}. {h.score:+.3f}  {_clock(h.start_s)}-{_clock(h.end_s)}  {h.path}  "
            f"[segment {h.segment_id}]"
        )
    return 0


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:05.2f}"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="turn sound files or sentences into vectors")
    p.add_argument(
        "--audio", nargs="+", metavar="FILE", help="audio file(s): one vector per window"
    )
    p.add_argument("--text", nargs="+", metavar="SENTENCE", help="sentence(s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--batch-size", type=int, default=8, help="windows per batch (default: 8)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: ~2x faster on CPUs with bf16, cosine >= 0.999 to fp32",
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="add folders of recordings to a catalogue")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument(
        "--keep-missing",
        action="store_true",
        help="keep files that vanished from disk in the catalogue",
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: cores - 1)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per CNN batch")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="find recordings by description or by example")
    p.add_argument("query", nargs="?", help="what you hear, e.g. 'a dog barks in the rain'")
    p.add_argument("-k", type=int, default=10, help="number of files (default: 10)")
    p.add_argument("--like", metavar="FILE", help="search by example: sounds like this file")
    p.add_argument("--start", type=float, help="with --like: start of the example span (s)")
    p.add_argument("--end", type=float, help="with --like: end of the example span (s)")
    p.add_argument("--like-id", type=int, metavar="SEGMENT", help="sounds like this segment")
    p.add_argument("--queries", metavar="FILE", help="one query per line -> one JSON line each")
    p.add_argument("--folder", help="only files under this folder")
    p.add_argument("--min-duration", type=float, metavar="S")
    p.add_argument("--max-duration", type=float, metavar="S")
    p.add_argument("--format", nargs="+", metavar="EXT", help="only these formats (wav flac ...)")
    p.add_argument(
        "--hybrid",
        action="store_true",
        help="fuse keyword matches on names and tags with the sound ranking",
    )
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="show the model and its frontend settings")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("init-model", help="write a new model folder (e.g. from PANNs weights)")
    p.add_argument("out", metavar="DIR", help="folder to write")
    p.add_argument("--encoder", default="cnn14", choices=["cnn14", "cnn10"])
    p.add_argument("--panns", metavar="PTH", help="PANNs checkpoint for the audio encoder")
    p.add_argument(
        "--text-model",
        default="all-MiniLM-L6-v2",
        help="sentence-transformers name or folder (default: all-MiniLM-L6-v2)",
    )
    p.add_argument("--joint-dim", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init_model)

    from earshot.train.config import add_override_flags

    p = sub.add_parser(
        "train",
        help="train a model on a caption dataset (TOML config)",
        description="Any setting of the config file can be overridden by its "
        "flag, e.g. --epochs 5 --batch-size 16.",
    )
    p.add_argument("--config", metavar="FILE.toml", help="training config")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint-last.pt")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_override_flags(p.add_argument_group("settings (override the config file)"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="retrieval metrics of a model on a dataset split")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--dataset", required=True, help="Clotho folder, labels.csv folder or CSV")
    p.add_argument(
        "--split",
        required=True,
        help="development | validation | evaluation, or COLUMN=V1,V2 for labels.csv",
    )
    p.add_argument("--audio-dir", help="audio folder for a captions CSV")
    p.add_argument("--out", help="report folder (default: MODEL/eval)")
    p.add_argument("--cache-dir", default=".earshot-cache", help="feature cache folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "embed" and not (args.audio or args.text):
        parser.error("embed needs --audio FILE... or --text SENTENCE...")
    if args.command == "search":
        given = [x for x in (args.query, args.like, args.like_id, args.queries) if x is not None]
        if len(given) != 1:
            parser.error("search takes one of: a query, --like FILE, --like-id N, --queries FILE")
        if (args.start is not None or args.end is not None) and not args.like:
            parser.error("--start/--end go with --like")
        if args.k < 1:
            parser.error("-k must be at least 1")
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None and batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        return args.func(args)
    except EarshotError as e:
        print(f"earshot: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("earshot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
