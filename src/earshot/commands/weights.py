"""`earshot weights`: the third-party weights earshot knows, where each resolves, fetching."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "fetch", "path"],
        help="list (default): each entry and where it resolves; fetch ID...: download into "
        "the user cache; path ID: print the verified local file",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="weights id(s), e.g. efficientat-mn04-as")
    p.add_argument("--json", action="store_true", help="print JSON (list)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (fetch)")


def cmd_weights(args: argparse.Namespace) -> int:
    from earshot.errors import EarshotError

    if args.action == "list":
        if args.ids:
            raise EarshotError("`earshot weights list` takes no ids")
        return _list(args.json)
    if not args.ids:
        raise EarshotError(f"`earshot weights {args.action}` needs a weights id")
    if args.action == "path":
        if len(args.ids) != 1:
            raise EarshotError("`earshot weights path` takes one id")
        return _path(args.ids[0])
    return _fetch(args.ids, progress=not args.quiet)


def _list(as_json: bool) -> int:
    from earshot.weights import KNOWN_WEIGHTS, locate

    rows = []
    for ref in KNOWN_WEIGHTS.values():
        where = locate(ref)
        rows.append({**ref.to_dict(), "path": str(where) if where else None})
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for row in rows:
        pinned = "" if row["sha256"] else "  (unpinned: no known sha256)"
        print(f"{row['id']}  {row['file']}  [{row['licence']}]{pinned}")
        print(f"    {row['path'] or 'missing  (earshot weights fetch ' + row['id'] + ')'}")
    return 0


def _path(weights_id: str) -> int:
    from earshot.weights import known_weights, resolve_weights

    print(resolve_weights(known_weights(weights_id), allow_download=False, progress=False))
    return 0


def _fetch(ids: list[str], progress: bool) -> int:
    from earshot.weights import cache_dir, check_file, download, known_weights

    refs = [known_weights(i) for i in ids]  # every id checked before any download
    for ref in refs:
        target = cache_dir(ref) / ref.file
        if target.is_file() and check_file(target, ref, record=True) is None:
            print(f"{ref.id}: already in the cache: {target}")
            continue
        print(f"{ref.id}: {download(ref, target.parent, progress=progress)}")
    return 0
