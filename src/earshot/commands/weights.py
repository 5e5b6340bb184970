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
    p.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="weights id(s), e.g. efficientat-mn04-as, panns-cnn14-as, or a hub id "
        "(laion/clap-htsat-unfused)",
    )
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
    from earshot.weights import KNOWN_HUB, KNOWN_WEIGHTS, locate, locate_hub

    rows = []
    for ref in KNOWN_WEIGHTS.values():
        where = locate(ref)
        rows.append({"kind": "file", **ref.to_dict(), "path": str(where) if where else None})
    for hub in KNOWN_HUB.values():
        where = locate_hub(hub.repo_id)
        rows.append(
            {
                "kind": "hub",
                "id": hub.repo_id,
                "licence": hub.licence,
                "description": hub.description,
                "path": str(where) if where else None,
            }
        )
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for row in rows:
        if row["kind"] == "hub":
            print(f"{row['id']}  (Hugging Face hub checkpoint)  [{row['licence']}]")
        else:
            pinned = "" if row["sha256"] or row.get("md5") else "  (unpinned: no known sha256)"
            print(f"{row['id']}  {row['file']}  [{row['licence']}]{pinned}")
        print(f"    {row['path'] or 'missing  (earshot weights fetch ' + row['id'] + ')'}")
    return 0


def _path(weights_id: str) -> int:
    from earshot.weights import KNOWN_WEIGHTS, known_weights, resolve_hub, resolve_weights

    if weights_id not in KNOWN_WEIGHTS and "/" in weights_id:
        print(resolve_hub(weights_id, allow_download=False)[0])
        return 0
    print(resolve_weights(known_weights(weights_id), allow_download=False, progress=False))
    return 0


def _fetch(ids: list[str], progress: bool) -> int:
    from earshot.weights import (
        KNOWN_WEIGHTS,
        cache_dir,
        check_file,
        download,
        known_weights,
        resolve_hub,
    )

    hub = [i for i in ids if i not in KNOWN_WEIGHTS and "/" in i]
    refs = [known_weights(i) for i in ids if i not in hub]  # checked before any download
    for repo_id in hub:
        print(f"{repo_id}: {resolve_hub(repo_id)[0]}")
    for ref in refs:
        target = cache_dir(ref) / ref.file
        if target.is_file() and check_file(target, ref, record=True) is None:
            print(f"{ref.id}: already in the cache: {target}")
            continue
        print(f"{ref.id}: {download(ref, target.parent, progress=progress)}")
    return 0
