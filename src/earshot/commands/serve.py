"""`earshot serve`: the web page and HTTP API over a catalogue."""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import quote

from earshot.errors import EarshotError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes "
        "the server to the network)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        default=os.environ.get("EARSHOT_TOKEN"),
        help="require this token on every request (env EARSHOT_TOKEN)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest search-by-example upload (default: 20)",
    )
    p.add_argument(
        "--max-upload-s",
        type=float,
        default=60.0,
        metavar="S",
        help="longest search-by-example upload in seconds (default: 60)",
    )
    p.add_argument(
        "--max-clip-s",
        type=float,
        default=600.0,
        metavar="S",
        help="longest span /api/clip cuts for download, in seconds (default: 600)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin (e.g. http://localhost:3000) to call the "
        "API; repeatable. Default: none (CORS off)",
    )
    from earshot.commands.scale import add_serve_arguments

    add_serve_arguments(p)


def settings_from_args(args: argparse.Namespace):
    from earshot.serve.app import Settings
    from earshot.serve.guard import LOOPBACK_NAMES, is_loopback

    if args.token is not None and not args.token.strip():
        raise EarshotError("--token (or EARSHOT_TOKEN) is empty: give a token or leave it unset")
    if not 1 <= args.port <= 65535:
        raise EarshotError(f"--port {args.port} is not a port number (1-65535)")
    if args.max_upload_mb <= 0 or args.max_upload_s <= 0:
        raise EarshotError("--max-upload-mb and --max-upload-s must be positive")
    if not args.max_clip_s > 0:
        raise EarshotError("--max-clip-s must be positive")
    for origin in args.cors_origin:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise EarshotError(f"--cors-origin '{origin}' is not an origin like http://host:port")
    return Settings(
        token=args.token.strip() if args.token else None,
        max_upload_mb=args.max_upload_mb,
        max_upload_s=args.max_upload_s,
        max_clip_s=args.max_clip_s,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=LOOPBACK_NAMES if is_loopback(args.host) else None,
    )


def build_app(args: argparse.Namespace):
    """Open the catalogue, load the model (once, here) and make the app."""
    from dataclasses import replace

    from earshot.api import catalogue_path
    from earshot.commands.common import model_from_args
    from earshot.index.store import Catalogue
    from earshot.serve.app import create_app

    settings = settings_from_args(args)
    db = catalogue_path(args.db)
    if not db.is_file():
        raise EarshotError(f"no catalogue at '{db}': index some audio first (earshot index PATH)")
    catalogue = Catalogue(db, readonly=True)
    try:
        choice = model_from_args(args, catalogue)
        return create_app(catalogue, choice.model, replace(settings, untrained=choice.untrained))
    except BaseException:
        catalogue.close()
        raise


def warnings_for(args: argparse.Namespace, settings) -> list[str]:
    from earshot.serve.guard import is_loopback

    out = []
    if not is_loopback(args.host):
        out.append(
            f"earshot: warning: listening on {args.host}, not just this machine: anyone who "
            "can reach this address can search the catalogue and play every recording in it"
            + ("." if settings.token else "; set --token (or EARSHOT_TOKEN) to require a token.")
        )
    if "*" in settings.cors_origins:
        out.append("earshot: warning: --cors-origin '*' lets any web page you visit call this API.")
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from earshot.serve.server import server_options

    if getattr(args, "shards", None):
        from earshot.commands.scale import cmd_serve_shards

        return cmd_serve_shards(args, settings_from_args(args), warnings_for)
    app = build_app(args)
    settings = app.state.settings
    for line in warnings_for(args, settings):
        print(line, file=sys.stderr)
    stats = app.state.service.cat.stats()
    host = f"[{args.host}]" if ":" in args.host else args.host
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{args.port}/"
    print(
        f"earshot: serving {stats['files_ok']} recordings ({stats['segments']} windows) from "
        f"{stats['path']}",
        file=sys.stderr,
    )
    link = f"{url}?token={quote(settings.token)}" if settings.token else url
    print(f"earshot: open {link} (Ctrl+C stops; API reference at {url}docs)", file=sys.stderr)
    # Timeouts and limits against slow or idle clients: see earshot/serve/server.py.
    uvicorn.run(app, host=args.host, port=args.port, **server_options())
    return 0
