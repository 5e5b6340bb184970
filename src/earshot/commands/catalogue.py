"""`earshot skipped`: what the catalogue holds but could not index, and why."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SKIPPED_HELP = "list the files the catalogue could not index, with the reasons"
SKIPPED_DESCRIPTION = (
    "List every file the catalogue could not index, with the reason, from all `earshot index` "
    "runs so far: a file is listed until it is indexed (after it is fixed and indexed again) "
    "or removed (gone from disk when its folder is indexed again). Files whose name is not "
    "valid UTF-8 cannot be stored in the catalogue: the `earshot index` run that finds them "
    "lists them, this command does not. Reads the catalogue only; exit status 0, or 1 if "
    "there is no catalogue."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="catalogue file (default: the user data folder; env EARSHOT_DB)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_skipped(args: argparse.Namespace) -> int:
    from earshot.commands.search import printable
    from earshot.index.store import Catalogue, default_db_path

    db = Path(args.db) if args.db else default_db_path()
    # Read-only: a listing creates nothing (a mistyped --db is an error, not a new catalogue).
    with Catalogue(db, readonly=True) as catalogue:
        files = catalogue.skipped_files()
    if args.json:
        print(json.dumps({"db": str(db), "count": len(files), "skipped": files}))
        return 0
    if not files:
        print(f"{db}: no skipped files (every file found so far was indexed)")
        return 0
    print(f"{db}: {len(files)} {'file' if len(files) == 1 else 'files'} could not be indexed")
    for f in files:
        print(f"  {printable(f['path'])}: {printable(f['reason'])}")
    return 0
