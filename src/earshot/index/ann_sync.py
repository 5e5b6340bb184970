"""The search cache beside a catalogue kept in step with it (`ensure_index`, for
`earshot.index.ann`'s FAISS index): the file is loaded when current, extended when segments
were only added since, and rebuilt from scratch when segments were removed, when the file is
missing, damaged or from another format, when it was made for another catalogue or model, or
when the collection outgrew its kind.

A file is only ever used for the catalogue it was built from: its header names the catalogue
(its `catalogue_uuid`) and the model (`identity`), and a fingerprint of the last segment it
holds (`last`), so a leftover file beside a new catalogue of the same name, or beside a copy
that went its own way, is rebuilt rather than answering with another catalogue's segments.
When the file cannot be written (no room, no permission, a folder in its place) the index
lives in memory for this process, with one warning line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from earshot.index.ann import AnnIndex, AnnIndexError, build, choose_params, load


def ensure_index(
    path: str | Path | None,
    generation: int,
    removals: int,
    max_segment_id: int,
    load_vectors: Callable[[int], tuple[np.ndarray, np.ndarray]],
    dim: int | None = None,
    identity: Mapping[str, str | None] | None = None,
    fingerprint: Callable[[int], str | None] | None = None,
) -> AnnIndex:
    """The index for the catalogue's current state, reusing and updating the file at `path`.

    `load_vectors(since_id)` returns (ids, vectors) of the segments with id > since_id, so
    `load_vectors(0)` returns all of them. The saved file is used as is when current; extended
    with `load_vectors(its max_id)` and re-saved when segments were only added since (same
    `removals`); rebuilt from `load_vectors(0)` when segments were removed, when the file cannot
    be used, when its dimension differs from `dim`, or when the new size calls for another kind
    or other parameters. Every write is atomic.

    `identity` (e.g. the catalogue's uuid and the model id) is stamped in the file, and a file
    stamped otherwise is rebuilt; `fingerprint(segment_id)` is what the catalogue holds at that
    id now (None if nothing), and a file whose last segment's fingerprint differs is rebuilt.
    `path` None: no file, an index in memory. Where the file cannot be written, the index is
    returned all the same (in memory only), after one warning line on stderr per path.
    """
    fingerprint = fingerprint or (lambda _id: None)
    identity = dict(identity) if identity is not None else None
    ann = None
    if path is not None:
        try:
            ann = load(path)
        except AnnIndexError:
            ann = None
    if ann is not None and not (
        _extendable(ann, generation, removals, max_segment_id, dim, identity)
        # The catalogue holds something else at the file's last id: another catalogue, or a
        # copy of this one that went its own way since.
        and ann.last == fingerprint(ann.max_id)
    ):
        ann = None
    if ann is not None:
        if max_segment_id == ann.max_id:
            ann.generation = generation  # nothing new to add: no need to rewrite the file
            return ann
        ids, vectors = load_vectors(ann.max_id)
        ids = np.asarray(ids, dtype=np.int64)
        if (len(ids) == 0 or ids.min() > ann.max_id) and choose_params(
            ann.count + len(ids)
        ) == ann.params:
            ann.add(ids, vectors)
            ann.generation, ann.last = generation, fingerprint(ann.max_id)
            _save(ann, path)
            return ann
    ids, vectors = load_vectors(0)
    if len(ids) == 0 and dim is not None:
        vectors = np.zeros((0, dim), dtype=np.float16)  # an empty catalogue may not know its dim
    ann = build(ids, vectors, generation, removals)
    ann.identity, ann.last = identity, fingerprint(ann.max_id)
    _save(ann, path)
    return ann


_warned: set[str] = set()


def _save(ann: AnnIndex, path: str | Path | None) -> None:
    """Save `ann` to `path` if it can be; otherwise keep it in memory and say so once."""
    if path is None:
        return
    try:
        ann.save(path)
    except OSError as e:
        key = str(path)
        if key not in _warned:
            _warned.add(key)
            reason = e.strerror or str(e) or type(e).__name__
            print(
                f"earshot: warning: cannot write the search cache '{path}' ({reason}); "
                "searching with an index built in memory, again by each process",
                file=sys.stderr,
            )


def _extendable(
    ann: AnnIndex, generation: int, removals: int, max_id: int, dim, identity=None
) -> bool:
    return (
        ann.removals == removals
        and ann.generation <= generation
        and ann.max_id <= max_id
        and (dim is None or ann.dim == dim)
        and ann.params == choose_params(ann.count)  # thresholds changed since it was built
        and (identity is None or ann.identity == identity)
    )
