"""`earshot index` and `earshot search`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from earshot.commands.common import model_from_args
from earshot.errors import EarshotError
from earshot.fsutil import absolute


def _catalogue_and_model(args: argparse.Namespace, create: bool):
    from earshot.api import catalogue_path
    from earshot.index.connection import is_writable
    from earshot.index.store import Catalogue

    db = catalogue_path(args.db)
    if not create and not db.exists():
        raise EarshotError(f"no catalogue at '{db}': index some audio first (earshot index PATH)")
    # Search only reads: a catalogue it cannot write (file or folder) is opened read-only.
    catalogue = Catalogue(db, readonly=not create and not is_writable(db))
    # Indexing and search by example need no sentence encoder; a search by text, tags or
    # segment needs no torch where the model allows (earshot.model.query: ~0.2 s, not ~7 s).
    by_example = create or bool(getattr(args, "like", None))
    try:
        choice = model_from_args(args, catalogue, use="audio" if by_example else "query")
    except BaseException:
        catalogue.close()
        raise
    return catalogue, choice.model


def cmd_index(args: argparse.Namespace) -> int:
    from earshot.index.build import Indexer
    from earshot.model.dual import resolve_precision

    if args.workers is not None and args.workers < 0:
        raise EarshotError(f"--workers must be 0 or more, not {args.workers}")
    # Before anything is created or loaded: a run over nothing but missing paths is a mistake
    # (unless it is to --prune them). Some missing: the rest are indexed, and the exit status
    # says that not everything was there.
    if getattr(args, "shards", None) or getattr(args, "ray", None):
        from earshot.commands.scale import cmd_index_shards

        return cmd_index_shards(args)
    prune = getattr(args, "prune", False)
    missing = [p for p in args.paths if not os.path.exists(os.path.expanduser(p))]
    if len(missing) == len(args.paths) and not prune:
        names = ", ".join(f"'{printable(p)}'" for p in missing)
        raise EarshotError(f"nothing to index: no such file or folder: {names}")
    catalogue, model = _catalogue_and_model(args, create=True)
    with catalogue:
        indexer = Indexer(
            catalogue,
            model,
            workers=args.workers,
            batch_size=args.batch_size,
            precision=resolve_precision(args.precision, model),
            progress=not args.json,
        )
        summary = indexer.run(args.paths, keep_missing=args.keep_missing, prune=prune)
        stats = catalogue.stats()
    result = {"db": str(catalogue.path), **summary.as_dict(), "catalogue": stats}
    code = 1 if missing and not prune else 0
    if missing and not prune:
        print(
            f"earshot: warning: {len(missing)} of {len(args.paths)} paths unavailable: "
            + ", ".join(f"'{printable(p)}'" for p in missing),
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result))
        return code
    s = result
    print(
        f"{catalogue.path}: {s['added']} added, {s['updated']} updated, {s['removed']} removed, "
        f"{s['unchanged']} unchanged, {s['reused']} reused, {len(s['skipped'])} skipped "
        f"({s['segments_added']} windows embedded in {s['seconds']:.1f} s, "
        f"{s['files_per_s']:.1f} files/s)"
    )
    if s.get("respelled"):
        print(f"  folded {s['respelled']} entries an earlier earshot stored under a spelling "
              "with '..' or '.' into their one spelling (the same files)")  # fmt: skip
    if s.get("metadata_read"):
        print(f"  read the embedded metadata of {s['metadata_read']} unchanged files "
              "(indexed by an earlier earshot; nothing embedded again)")  # fmt: skip
    for item in s["skipped"]:
        print(f"  skipped {printable(item['path'])}: {printable(item['reason'])}")
    for problem in s["problems"]:
        print(f"  {printable(problem)}")
    return code


def printable(text: str) -> str:
    """`text` safe for a terminal: a name's undecodable bytes as \\xNN, control characters
    (an escape sequence in a file name) escaped."""
    from earshot.index.scan import shown

    text = shown(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cmd_search(args: argparse.Namespace) -> int:
    import contextlib

    from earshot.filters import Filters, folder_form
    from earshot.hits import EXAMPLE_HINT, Results, trim_weak
    from earshot.search import Searcher

    stack = contextlib.ExitStack()
    if getattr(args, "shards", None):  # the same search over shards on Ray actors
        from earshot.commands.scale import shard_searcher

        searcher = shard_searcher(args)
        stack.callback(searcher.close)
    else:
        catalogue, model = _catalogue_and_model(args, create=False)
        stack.enter_context(catalogue)
    try:
        tags = getattr(args, "tag", None) or None
        folder, parts = None, None
        if args.folder:
            # A folder here (relative to the current one) is that folder; otherwise an absolute or
            # ~ path, or a folder name matched as whole components anywhere (folder:foley).
            if os.path.isdir(os.path.expanduser(args.folder)):
                folder = absolute(args.folder)
            else:
                folder, relative = folder_form(args.folder)
                parts = (relative,) if relative else None
        filters = Filters(
            folder,
            args.min_duration,
            args.max_duration,
            tuple(args.format) if args.format else None,
            tuple(tags) if tags else None,
            getattr(args, "tag_min", None),
            folder_parts=parts,
        )
        page = {
            "offset": getattr(args, "offset", 0),
            "sort": getattr(args, "sort", "score"),
            "spans": getattr(args, "spans", 1),
        }
    except BaseException:
        stack.close()
        raise
    show_weak = getattr(args, "show_weak", False)
    with stack:
        if not getattr(args, "shards", None):
            searcher = Searcher(catalogue, model)

        def run(query: str | None) -> list:
            if args.like:
                narrowed = searcher.example_filters(query, filters)
                return searcher.search_like(
                    args.like, args.k, args.start, args.end, narrowed, **page
                )
            if args.like_id is not None:
                narrowed = searcher.example_filters(query, filters)
                return searcher.search_like_segment(args.like_id, args.k, narrowed, **page)
            if query is None and filters.tags:  # --tag alone: the files having the tags
                return searcher.search_tags((), args.k, filters, **page)
            return searcher.search_text(query, args.k, filters, hybrid=args.hybrid, **page)

        if args.queries:
            lines = Path(args.queries).read_text().splitlines()
            for line in (q.strip() for q in lines):
                if line:
                    hits = run(line)
                    shown = hits if show_weak else trim_weak(hits)
                    reason = _why_empty(searcher, hits, filters, line)
                    doc = {"query": line, **_summary(hits, line, reason)}
                    print(json.dumps({**doc, "hits": [h.as_dict() for h in shown]}), flush=True)
            return 0
        hits = run(args.query)
        reason = _why_empty(searcher, hits, filters, args.query)
    results = hits if isinstance(hits, Results) else Results.of(hits)
    shown = results if show_weak else trim_weak(results)
    by_example = args.like or args.like_id is not None
    said = None if by_example else args.query  # beside an example, the query is filters only
    if args.json:
        doc = {"query": args.like or args.like_id if by_example else args.query}
        if by_example and args.query:
            doc["q"] = args.query
        if filters.tags:
            doc["tags"] = list(filters.tags)
        doc |= _summary(results, said, reason)
        print(json.dumps({**doc, "hits": [h.as_dict() for h in shown]}))
        return 0
    hint = EXAMPLE_HINT if by_example else "try other words or --like FILE"
    message = results.message(said or None, hint, reason)
    if not results and not message:  # a page past the last: the message says nothing
        print("no matches")
    for h in shown:
        band = f"  {h.band} {h.confidence:.2f}" if h.band else ""
        print(
            f"{h.rank:3d}. {h.shown_score:+.3f}{band}  {_clock(h.start_s)}-{_clock(h.end_s)}  "
            f"{printable(h.path)}  [seg:{h.segment_id}]"
        )
        if h.meta and meta_line(h.meta):
            print(f"       {printable(meta_line(h.meta))}")
        if h.by_name:
            print("       good by its name or description, not by its sound")
        for start, end, score in h.spans[1:]:
            print(f"       also {_clock(start)}-{_clock(end)}  {score:+.3f}")
        if h.more_spans:
            print(f"       {h.more_spans} more good match{'es' * (h.more_spans > 1)} in this file")
        for other in h.also_at:
            print(f"       also at {printable(other)}")
        if h.tags:
            print(f"       {tag_line(h.tags, named=h.matched_tags)}")
    hidden = len(results) - len(shown)
    if hidden:
        print(f"({hidden} weak match{'es' * (hidden > 1)} left out: --all lists them)")
    if message:
        print(message)
    return 0


def meta_line(meta, width: int = 100) -> str:
    """A hit's embedded description on one line (else its title, FX name or comment), cut to
    `width`; "" where it has none of them."""
    for key in ("description", "title", "fx_name", "comment"):
        text = " ".join(str(meta.get(key) or "").split())
        if text:
            return f'"{text if len(text) <= width else text[: width - 1] + "…"}"'
    return ""


def _why_empty(searcher, hits, filters, query: str | None) -> str | None:
    """`Searcher.why_empty` (a ShardSearcher's too): why an empty first page is empty, where
    the filters (flags and the query's fields) are why."""
    return searcher.why_empty(hits, filters, query)


def _summary(results, query: str | None, reason: str | None = None) -> dict:
    """The top-level fields of a search's JSON besides the hits, as the API gives them."""
    from earshot.hits import Results

    results = results if isinstance(results, Results) else Results.of(results)
    return {
        "band": results.best_band(),
        "message": results.message(query, reason=reason),
        "offset": results.offset,
        "more": bool(results.more),
        "total_estimate": results.total_estimate,
        "hybrid": bool(results.hybrid),  # fused with keyword matches: `score` is an RRF sum
    }


def tag_line(tags, n: int = 5, named=()) -> str:
    """A hit's best few tags on one line: 'Dog 0.93 · Bark 0.88', and those of them the
    query's words `named` (a hybrid search's `matched_tags`): '(your words name Dog)'."""
    shown, named = tags[:n], set(named)
    line = " · ".join(f"{name} {p:.2f}" for name, p in shown)
    said = [name for name, _ in shown if name in named]
    return f"{line}  (your words name {', '.join(said)})" if said else line


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:05.2f}"
