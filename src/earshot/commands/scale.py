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


SEARCH_RAY_HELP = (
    RAY_HELP + ", or none (no Ray: the shard indexes in this process, for one machine); "
    "default: auto"
)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("over shards on a Ray cluster (pip install 'earshot[ray]')")
    g.add_argument("--shards", metavar="URI", help="search these shards (not a catalogue)")
    g.add_argument("--ray", metavar="ADDRESS", default=None, help=SEARCH_RAY_HELP)
    g.add_argument("--actors", type=int, metavar="N", help="index actors (default: CPUs)")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("over shards on a Ray cluster (pip install 'earshot[ray]')")
    g.add_argument(
        "--shards",
        metavar="URI",
        help="serve the page and API over these shards, not a catalogue",
    )
    g.add_argument("--ray", metavar="ADDRESS", default=None, help=SEARCH_RAY_HELP)
    g.add_argument("--actors", type=int, metavar="N", help="index actors (default: CPUs)")


def _address(args: argparse.Namespace) -> str | None:
    """Where the shard indexes run: a Ray address, or None (`--ray none`: this process)."""
    address = args.ray or "auto"
    if args.actors is not None and args.actors < 1:
        raise EarshotError(f"--actors {args.actors}: give 1 or more")
    return None if address == "none" else address


def cmd_serve_shards(args: argparse.Namespace, settings, warnings_for) -> int:
    from urllib.parse import quote

    import uvicorn

    from earshot.scale.search import ShardSearcher
    from earshot.scale.serve import create_shard_app
    from earshot.serve.server import server_options

    _need_ray()
    if args.db:
        raise EarshotError("--shards serves shards, not a catalogue: leave out --db")
    choice = _shard_choice(args, "all")  # the whole model: text, examples and uploads
    searcher = ShardSearcher(args.shards, choice.model, _address(args), args.actors)
    app = None
    try:
        app = create_shard_app(searcher, settings, untrained=choice.untrained)
        for line in warnings_for(args, settings):
            print(line, file=sys.stderr)
        stats = app.state.service.cat.stats()
        host = f"[{args.host}]" if ":" in args.host else args.host
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else host
        print(
            f"earshot: serving {stats['files_ok']} recordings ({stats['segments']} windows) "
            f"from {len(searcher.manifest.shards)} shards at {searcher.loc.uri} on "
            f"{len(searcher.counts)} actor{'s' * (len(searcher.counts) > 1)}",
            file=sys.stderr,
        )
        url = f"http://{shown}:{args.port}/"
        link = f"{url}?token={quote(settings.token)}" if settings.token else url
        print(f"earshot: open {link} (Ctrl+C stops; API reference at {url}docs)", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, **server_options())
    finally:
        searcher.close()
        if app is not None:
            app.state.service.copies.close()
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


def _choice(args: argparse.Namespace, use: str, recorded: str | None = None):
    from earshot.commands.common import model_from_args

    class _Recorded:  # what choose_model reads of a catalogue: the folder that indexed it
        model_id = None
        model_info = {"path": recorded} if recorded else {}

    return model_from_args(args, _Recorded(), use=use)


def _model(args: argparse.Namespace, use: str, recorded: str | None = None):
    return _choice(args, use, recorded).model


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
        precision=resolve_precision(args.precision, model),
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


def _shard_choice(args: argparse.Namespace, use: str = "query"):
    from earshot.scale.shards import load_manifest
    from earshot.scale.storage import Location

    manifest = load_manifest(Location(args.shards))
    if manifest is None:
        raise EarshotError(f"no shards at '{args.shards}': run `earshot index --shards` first")
    return _choice(args, use, manifest.model_info.get("path"))


def shard_searcher(args: argparse.Namespace):
    """The ShardSearcher `earshot search --shards` runs the catalogue's search with."""
    from earshot.scale.search import ShardSearcher

    _need_ray()
    if args.db:
        raise EarshotError("--shards searches shards, not a catalogue: leave out --db")
    use = "audio" if getattr(args, "like", None) else "query"
    address = _address(args)
    return ShardSearcher(args.shards, _shard_choice(args, use).model, address, args.actors)


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
