"""`earshot index --ray ... --shards URI`, `earshot search --shards URI`, `earshot serve
--shards URI`, `earshot merge-shards URI --db FILE`: earshot on a Ray cluster (earshot[ray])."""

from __future__ import annotations

import argparse
import json
import sys

from earshot.errors import EarshotError

RAY_HELP = (
    "the Ray cluster: auto (the one `ray start` runs on this machine), HOST:PORT (its head), "
    "or local (a one-machine cluster inside this process)"
)


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a Ray cluster (pip install 'earshot[ray]')")
    g.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP + "; needs --shards")
    g.add_argument(
        "--shards",
        metavar="URI",
        help="write shards (Parquet) to this folder or s3://bucket/prefix instead of a "
        "catalogue; PATHs may then be s3://bucket/prefix too",
    )
    g.add_argument("--files-per-shard", type=int, default=256, metavar="N", help="default: 256")
    g.add_argument("--actors", type=int, metavar="N", help="embedding actors (default: CPUs)")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("over shards on a Ray cluster (pip install 'earshot[ray]')")
    g.add_argument("--shards", metavar="URI", help="search these shards (not a catalogue)")
    g.add_argument("--ray", metavar="ADDRESS", default=None, help=RAY_HELP + " (default: auto)")
    g.add_argument("--actors", type=int, metavar="N", help="index actors (default: CPUs)")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("over shards on a Ray cluster (pip install 'earshot[ray]')")
    g.add_argument(
        "--shards",
        metavar="URI",
        help="serve the search API (JSON, no page) over these shards, not a catalogue",
    )
    g.add_argument("--ray", metavar="ADDRESS", default=None, help=RAY_HELP + " (default: auto)")
    g.add_argument("--actors", type=int, metavar="N", help="index actors (default: CPUs)")


def cmd_serve_shards(args: argparse.Namespace, settings, warnings_for) -> int:
    import uvicorn

    from earshot.scale.search import ShardSearcher
    from earshot.scale.serve import create_shard_app
    from earshot.serve.server import server_options

    _need_ray()
    if args.db:
        raise EarshotError("--shards serves shards, not a catalogue: leave out --db")
    searcher = ShardSearcher(args.shards, _shard_model(args), args.ray or "auto", args.actors)
    app = create_shard_app(searcher, settings)
    for line in warnings_for(args, settings):
        print(line, file=sys.stderr)
    print(
        f"earshot: serving the search API over {len(searcher.manifest.shards)} shards "
        f"({searcher.total} windows) at {searcher.loc.uri}: "
        f"http://{args.host}:{args.port}/api/search?q=... (no page: see merge-shards)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, **server_options())
    return 0


def _need_ray() -> None:
    # Looked up, not imported: Ray reads its auth token once, when first used.
    import importlib.util

    for name in ("pyarrow", "ray"):
        if importlib.util.find_spec(name) is None:
            raise EarshotError(
                f"--ray and --shards need earshot's Ray extra ({name} is missing): "
                "pip install 'earshot[ray]'"
            )


def _model(args: argparse.Namespace, use: str, recorded: str | None = None):
    from earshot.commands.common import model_from_args

    class _Recorded:  # what choose_model reads of a catalogue: the folder that indexed it
        model_id = None
        model_info = {"path": recorded} if recorded else {}

    return model_from_args(args, _Recorded(), use=use).model


def cmd_index_shards(args: argparse.Namespace) -> int:
    from earshot.model.dual import resolve_precision
    from earshot.scale.indexer import index_to_shards

    _need_ray()
    if not args.shards:
        raise EarshotError("--ray writes shards: give --shards DIR or s3://bucket/prefix")
    if args.db:
        raise EarshotError(
            "--shards writes shards, not a catalogue: leave out --db (see merge-shards)"
        )
    if args.prune:
        raise EarshotError("--prune is for catalogues; with --shards a vanished file is removed")
    model = _model(args, "audio")
    summary = index_to_shards(
        args.paths,
        args.shards,
        model,
        address=args.ray or "auto",
        files_per_shard=args.files_per_shard,
        actors=args.actors,
        batch_size=args.batch_size,
        precision=resolve_precision(args.precision),
        keep_missing=args.keep_missing,
        progress=not args.json,
    )
    s = summary.as_dict()
    if args.json:
        print(json.dumps(s))
        return 0
    print(
        f"{s['shards_uri']}: {s['added']} added, {s['updated']} updated, {s['removed']} removed, "
        f"{s['unchanged']} unchanged, {len(s['skipped'])} skipped; {s['shards_written']} shards "
        f"written, {s['shards']} in all ({s['segments_added']} windows in {s['seconds']:.1f} s)"
    )
    from earshot.commands.search import printable

    for item in s["skipped"]:
        print(f"  skipped {printable(item['path'])}: {printable(item['reason'])}")
    for problem in s["problems"]:
        print(f"  {printable(problem)}")
    return 0


def _shard_model(args: argparse.Namespace):
    from earshot.scale.shards import load_manifest
    from earshot.scale.storage import Location

    manifest = load_manifest(Location(args.shards))
    if manifest is None:
        raise EarshotError(f"no shards at '{args.shards}': run `earshot index --shards` first")
    return _model(args, "query", manifest.model_info.get("path"))


def cmd_search_shards(args: argparse.Namespace) -> int:
    from earshot.commands.search import printable
    from earshot.scale.search import ShardSearcher

    _need_ray()
    if args.like or args.like_id is not None or args.tag or args.hybrid:
        raise EarshotError("--shards searches by text (a query or --queries) only, for now")
    if args.folder or args.min_duration or args.max_duration or args.format:
        raise EarshotError("--shards does not take filters yet (--folder, --format, durations)")
    if args.db:
        raise EarshotError("--shards searches shards, not a catalogue: leave out --db")
    searcher = ShardSearcher(args.shards, _shard_model(args), args.ray or "auto", args.actors)
    if args.queries:
        from pathlib import Path

        for line in (q.strip() for q in Path(args.queries).read_text().splitlines()):
            if line:
                hits = searcher.search_text(line, args.k)
                print(json.dumps({"query": line, "hits": [h.as_dict() for h in hits]}), flush=True)
        return 0
    hits = searcher.search_text(args.query, args.k)
    if args.json:
        print(json.dumps({"query": args.query, "hits": [h.as_dict() for h in hits]}))
        return 0
    if not hits:
        print("no matches")
    for h in hits:
        print(f"{h.rank:3d}. {h.score:+.3f}  {h.start_s:.2f}-{h.end_s:.2f} s  {printable(h.path)}")
    return 0


def cmd_merge_shards(args: argparse.Namespace) -> int:
    from earshot.api import catalogue_path
    from earshot.scale.merge import merge_shards

    _need_ray()
    path_map = {}
    for item in args.map or []:
        prefix, sep, folder = item.partition("=")
        if not sep or not prefix or not folder:
            raise EarshotError(f"--map takes s3://BUCKET/PREFIX=DIR, not '{item}'")
        path_map[prefix] = folder
    result = merge_shards(args.uri, catalogue_path(args.db), path_map)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['db']}: {result['files']} files ({result['segments']} windows) and "
            f"{result['skipped']} skipped from {result['shards']} shards"
        )
    return 0


def add_merge_parser(sub) -> None:
    p = sub.add_parser(
        "merge-shards",
        help="load shards into a normal catalogue (one machine)",
        description="Write the current files of the shards at URI (a folder or "
        "s3://bucket/prefix) into a catalogue, as `earshot index` would have: search and serve "
        "it without Ray. Recordings in a bucket need --map to a local copy.",
    )
    p.add_argument("uri", metavar="URI", help="the shards (folder or s3://bucket/prefix)")
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument(
        "--map",
        action="append",
        metavar="S3PREFIX=DIR",
        help="recordings under S3PREFIX are at DIR on this machine (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_merge_shards)


def warn(msg: str) -> None:
    print(f"earshot: warning: {msg}", file=sys.stderr)
