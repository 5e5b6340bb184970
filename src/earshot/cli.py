"""`earshot` command line. Each command parses, calls the library, prints; heavy imports inside."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from earshot.commands import catalogue as catalogue_cmds
from earshot.commands import export as export_cmds
from earshot.commands import model as model_cmds
from earshot.commands import scale as scale_cmds
from earshot.commands import search as search_cmds
from earshot.commands import serve as serve_cmds
from earshot.commands import train as train_cmds
from earshot.commands import weights as weights_cmds
from earshot.errors import EarshotError


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, refused before any work starts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="turn sound files or sentences into vectors")
    p.add_argument(
        "--audio", nargs="+", metavar="FILE", help="audio file(s): one vector per window"
    )
    p.add_argument("--text", nargs="+", metavar="SENTENCE", help="sentence(s)")
    # Caught only to say where it belongs: `earshot embed "rain"` is refused with the fix.
    p.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--batch-size", type=int, default=8, help="windows per batch (default: 8)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: ~2x faster on CPUs with bf16, cosine >= 0.999 to fp32",
    )
    _add_model_args(p)
    p.set_defaults(func=model_cmds.cmd_embed)

    p = sub.add_parser(
        "index",
        help="add folders of recordings to a catalogue",
        description="Index files and folders (recursively) into a catalogue. Files that cannot "
        "be indexed are listed with the reason and never stop the run. A PATH that is not there "
        "(an unplugged drive), or an empty folder where the catalogue has files (an unmounted "
        "one), is reported unavailable and its catalogue entries are kept (see --prune). One "
        "index run at a time per catalogue: a second one, while another process indexes into "
        "it, waits 2 s and then stops with an error naming that process (searching and serving "
        "are never held up). Exit "
        "status: 0; 1 if some PATH was unavailable (the others are indexed) or on an error, "
        "e.g. when no PATH exists.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    gone = p.add_mutually_exclusive_group()
    gone.add_argument(
        "--keep-missing",
        action="store_true",
        help="keep files that vanished from disk in the catalogue",
    )
    gone.add_argument(
        "--prune",
        action="store_true",
        help="also remove the catalogue's files under a PATH that is unavailable (missing, or "
        "an empty folder); without it they are kept, as on an unplugged drive",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="decoding processes (default: cores - 1, at most 4; 0 on 2 cores); 0 decodes in "
        "the indexer, where a decoder crash ends the run and the next run skips that file",
    )
    p.add_argument("--batch-size", type=int, default=8, help="windows per CNN batch")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto (default): bf16 where the CPU has native bf16 (not for EfficientAT models: "
        "their fp32 fast path is faster), else fp32",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    scale_cmds.add_index_arguments(p)
    _add_model_args(p)
    p.set_defaults(func=search_cmds.cmd_index)

    p = sub.add_parser("search", help="find recordings by description or by example")
    p.add_argument(
        "query",
        nargs="?",
        help="what you hear, e.g. 'a dog barks in the rain'; also -word, \"exact phrase\", "
        "dur:<30 ext:wav tag:dog folder:foley sr:>=48000 ch:2 (see the README)",
    )
    p.add_argument("-k", type=int, default=10, help="number of files (default: 10)")
    p.add_argument("--offset", type=int, default=0, help="files to pass over first (paging)")
    p.add_argument(
        "--sort",
        choices=["score", "name", "duration", "date"],
        default="score",
        help="score (default); name, duration or date reorder the 200 best files by score, "
        "the good matches first, then the weak",
    )
    p.add_argument(
        "--spans", type=int, default=1, metavar="N", help="each file's best N spans (default: 1)"
    )
    p.add_argument(
        "--all",
        action="store_true",
        dest="show_weak",
        help="also list the weak matches after the good ones (left out by default)",
    )
    p.add_argument(
        "--like",
        metavar="FILE",
        help="search by example: sounds like this file (a query beside it holds only filters: "
        "'dur:<5 ext:wav -rain')",
    )
    p.add_argument("--start", type=float, help="with --like: start of the example span (s)")
    p.add_argument("--end", type=float, help="with --like: end of the example span (s)")
    p.add_argument("--like-id", type=int, metavar="SEGMENT", help="sounds like this segment")
    p.add_argument("--queries", metavar="FILE", help="one query per line -> one JSON line each")
    p.add_argument("--folder", help="only files under this folder")
    p.add_argument("--min-duration", type=float, metavar="S")
    p.add_argument("--max-duration", type=float, metavar="S")
    p.add_argument("--format", nargs="+", metavar="EXT", help="only these formats (wav flac ...)")
    p.add_argument(
        "--tag",
        action="append",
        metavar="NAME",
        help="only files with this sound tag, e.g. Dog (repeatable: all; alone: list them)",
    )
    p.add_argument("--tag-min", type=float, metavar="P", help="a tag counts from P (default 0.3)")
    p.add_argument(
        "--hybrid",
        action="store_const",
        const=True,
        default=None,
        help="fuse keyword matches on names, tags and embedded metadata with the sound ranking "
        "(the default where the catalogue holds embedded descriptions, or where a word of the "
        "query picks files out by name or folder)",
    )
    p.add_argument(
        "--no-hybrid",
        action="store_const",
        const=False,
        dest="hybrid",
        help="the sound ranking alone, even where files carry descriptions or names match",
    )
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument("--json", action="store_true", help="print JSON")
    scale_cmds.add_search_arguments(p)
    _add_model_args(p)
    p.set_defaults(func=search_cmds.cmd_search)

    p = sub.add_parser(
        "skipped",
        help=catalogue_cmds.SKIPPED_HELP,
        description=catalogue_cmds.SKIPPED_DESCRIPTION,
    )
    catalogue_cmds.add_arguments(p)
    p.set_defaults(func=catalogue_cmds.cmd_skipped)

    p = sub.add_parser(
        "export", help=export_cmds.EXPORT_HELP, description=export_cmds.EXPORT_DESCRIPTION
    )
    export_cmds.add_arguments(p)
    p.set_defaults(func=export_cmds.cmd_export)

    p = sub.add_parser("serve", help="the web page and HTTP API over a catalogue")
    serve_cmds.add_arguments(p)
    _add_model_args(p)
    p.set_defaults(func=serve_cmds.cmd_serve)

    scale_cmds.add_merge_parser(sub)

    p = sub.add_parser("info", help="show the model and its frontend settings")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p)
    p.set_defaults(func=model_cmds.cmd_info)

    p = sub.add_parser("init-model", help="write a new model folder (e.g. from PANNs weights)")
    p.add_argument("out", metavar="DIR", help="folder to write")
    p.add_argument("--encoder", choices=["cnn14", "cnn10"], help="default: cnn14")
    p.add_argument(
        "--panns",
        metavar="cnn14|cnn10|PTH",
        help="PANNs checkpoint for the audio encoder: cnn14 / cnn10 (the official one, "
        "resolved and verified by `earshot weights`) or a .pth file",
    )
    p.add_argument(
        "--clap",
        metavar="HUB_ID|DIR",
        help="a CLAP checkpoint run whole through transformers (e.g. laion/clap-htsat-unfused, "
        "or a save_pretrained folder); the model folder names it and does not copy it",
    )
    p.add_argument("--revision", help="with --clap: the hub commit or tag (default: main)")
    p.add_argument(
        "--efficientat",
        choices=["mn04", "mn10"],
        help="EfficientAT's AudioSet backbone, named (not copied), with the heads set to its "
        "teacher space: the no-training baseline (--joint-dim 384 makes it exact)",
    )
    p.add_argument(
        "--text-model",
        default="all-MiniLM-L6-v2",
        help="sentence-transformers name or folder (default: all-MiniLM-L6-v2)",
    )
    p.add_argument("--joint-dim", type=int, default=300)
    p.add_argument(
        "--tag-power",
        type=float,
        default=2.0,
        help="with --efficientat: sum the tag sentences by p(c)^POWER (default 2, the squares; "
        "the general model's recipe is in its config, configs/general.toml)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=model_cmds.cmd_init_model)

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
    p.set_defaults(func=train_cmds.cmd_train)

    p = sub.add_parser("evaluate", help="retrieval metrics of a model on a dataset split")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--dataset", required=True, help="Clotho folder, labels.csv folder or CSV")
    p.add_argument(
        "--split",
        required=True,
        help="development | validation | evaluation, or COLUMN=V1,V2 for labels.csv",
    )
    p.add_argument("--audio-dir", help="audio folder for a captions CSV")
    p.add_argument(
        "--out",
        help="report folder (default: MODEL/eval for a model folder, earshot-eval/NAME for a "
        "packaged model's name)",
    )
    p.add_argument("--cache-dir", default=".earshot-cache", help="feature cache folder")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument(
        "--n-boot", type=_positive_int, default=1000, help="bootstrap resamples for the CIs"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=train_cmds.cmd_evaluate)

    p = sub.add_parser("weights", help="third-party weights: list, fetch ID, path ID")
    weights_cmds.add_arguments(p)
    p.set_defaults(func=weights_cmds.cmd_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "embed" and args.stray:
        first = args.stray[0]
        flag = "--audio" if os.path.exists(first) else "--text"
        parser.error(
            f"embed takes --audio FILE... or --text SENTENCE...: write {flag} before "
            f"{shlex.quote(first)}"
        )
    if args.command == "embed" and not (args.audio or args.text):
        parser.error("embed needs --audio FILE... or --text SENTENCE...")
    if args.command == "search":
        # Beside --like / --like-id, the query holds only fields and operators (dur:<5
        # -rain): filters for the search by example (Searcher.example_filters).
        example = [x for x in (args.like, args.like_id) if x is not None]
        text = [x for x in (args.query, args.queries) if x is not None]
        clash = len(example) > 1 or len(text) > 1 or (example and args.queries is not None)
        if clash or not (example or text or args.tag):
            parser.error("search takes one of: a query, --like FILE, --like-id N, --queries FILE")
        if example and args.query is not None:
            from earshot.query_syntax import QuerySyntaxError, parse_query

            try:
                said = parse_query(args.query).text.strip()
            except QuerySyntaxError as e:
                parser.error(str(e))
            if said:
                parser.error(
                    f"beside --like/--like-id the query holds filters only (dur:<5 ext:wav "
                    f"-rain), not a description: '{said}'; search by words or by example"
                )
        if (args.start is not None or args.end is not None) and not args.like:
            parser.error("--start/--end go with --like")
        if args.k < 1:
            parser.error("-k must be at least 1")
        if args.offset < 0:
            parser.error("--offset must be 0 or more")
        if not 1 <= args.spans <= 20:
            parser.error("--spans must be within 1-20")
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
