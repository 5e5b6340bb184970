"""The catalogue's reads that narrow a search: which files and segments pass a search's
filters (folder, duration, format, the query syntax's fields, keyword phrases, sound tags), the
per-window and per-file tags, and keyword search (BM25 over `files_fts`).

`FilterQueries` is the base of `queries.CatalogueQueries` (so a mixin of `store.Catalogue`,
which supplies the connection and the model binding declared here); nothing here writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from sqlite3 import Connection
from typing import TYPE_CHECKING

import numpy as np

from earshot.errors import CatalogueError
from earshot.fsutil import absolute
from earshot.index.keyword_text import fts_phrase, fts_query
from earshot.index.schema import BM25_WEIGHTS, FILE_TAGS, FTS_COLUMNS
from earshot.index.tag_blobs import CONFIDENT_TAG, TAG_DTYPE, decode_tags

_IN_CHUNK = 900  # ids per `IN (...)`, under the 999 variables older SQLite builds allow


class FilterQueries:
    """The narrowing reads of an open catalogue (see the module)."""

    path: Path

    if TYPE_CHECKING:  # supplied by `Catalogue`

        def _use(self, doing: str, write: bool = False) -> AbstractContextManager[Connection]: ...

        def _snapshot(self, doing: str) -> AbstractContextManager[Connection]: ...

        @property
        def model_id(self) -> str | None: ...

        @property
        def dim(self) -> int | None: ...

        @property
        def generation(self) -> int: ...

        @property
        def tag_names(self) -> tuple[str, ...]: ...

        def _has_meta(self) -> bool: ...

    def file_ids_matching_keywords(
        self, phrases: Sequence[str], columns: Sequence[str] | None = None
    ) -> np.ndarray:
        """(n,) int64 ids, ascending, of the indexed files whose keyword-search text holds
        every one of `phrases`, each as an exact phrase of words (case and accents ignored; a
        phrase's last word also as a prefix when it has 3+ letters: "door cre" finds "door
        creaks"). `columns`: the FTS5 columns to look in, of "name", "folder", "tags" (sound
        tags and soundfile's tag strings) and "meta" (the embedded metadata: description,
        keywords, UCS category, FX name...); None: all of them. What a `"phrase"` or a
        metadata `tag:` in a query maps onto (`Filters.keywords`). No phrase with a word in
        it: no filter (every indexed file)."""
        exprs = [e for e in (fts_phrase(p) for p in phrases) if e]
        if not exprs:
            return self.file_ids_matching()
        have = FTS_COLUMNS if self._has_meta() else FTS_COLUMNS[:3]
        cols = list(have if columns is None else dict.fromkeys(columns))
        unknown = [c for c in cols if c not in FTS_COLUMNS]
        if unknown:
            raise CatalogueError(f"no keyword-search column {unknown[0]!r}; use {FTS_COLUMNS}")
        cols = [c for c in cols if c in have]
        if not cols:
            return np.empty(0, dtype=np.int64)
        scope = "{" + " ".join(cols) + "} : "
        match = " AND ".join(f"({scope}{e})" for e in exprs)
        with self._use("search keywords") as conn:
            rows = conn.execute(
                "SELECT rowid FROM files_fts WHERE files_fts MATCH ? ORDER BY rowid", (match,)
            )
            return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def segment_ids_matching(
        self,
        folder: str | Path | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        formats: Sequence[str] | None = None,
        tags: Sequence[int] | None = None,
        tag_min: float = CONFIDENT_TAG,
        keywords: Sequence[str] | None = None,
        **more,
    ) -> np.ndarray:
        """(n,) int64 ids, ascending, of the segments whose FILE passes every filter given.

        folder: that folder and everything under it (~ and relative paths are resolved against
        the current directory); durations: the file's, in seconds, inclusive; formats: matched
        case-insensitively against the file's format, subtype or extension ('wav', 'flac',
        'ogg', 'opus', 'mp3', 'm4a'); tags: indices into `tag_names`, each of which one of the
        file's windows must have with probability >= tag_min; keywords: phrases the file's
        keyword-search text must hold, every one (`file_ids_matching_keywords`). None or empty
        means no filter.
        `more`: the further file conditions of `_more_filters` (sample rate, channels, folder
        names, keyword matches).
        """
        where, params = _file_filter(folder, min_duration, max_duration, formats, **more)
        base = "SELECT s.id FROM segments s JOIN files f ON f.id = s.file_id WHERE "
        if keywords:
            wanted_ids = set(self.file_ids_matching_keywords(keywords).tolist())
            if tags:
                wanted_ids &= set(self.files_with_tags(tags, tag_min))
            return self._segments_of_files(base, where, params, sorted(wanted_ids))
        if not tags:
            query = f"{base}{' AND '.join(where)} ORDER BY s.id"
            with self._use("filter segments") as conn:
                return np.fromiter((row[0] for row in conn.execute(query, params)), np.int64)
        return self._segments_of_files(
            base, where, params, sorted(self.files_with_tags(tags, tag_min))
        )

    def _segments_of_files(self, base: str, where: list, params: list, wanted: list[int]):
        out = []
        with self._snapshot("filter segments") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                marks = f"s.file_id IN ({', '.join('?' * len(chunk))})"
                query = f"{base}{' AND '.join([*where, marks])}"
                rows = conn.execute(query, params + chunk)
                out.append(np.fromiter((r[0] for r in rows), np.int64))
        return np.sort(np.concatenate(out)) if out else np.empty(0, dtype=np.int64)

    def file_ids_matching(
        self,
        folder: str | Path | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        formats: Sequence[str] | None = None,
        keywords: Sequence[str] | None = None,
        **more,
    ) -> np.ndarray:
        """(n,) int64 ids, ascending, of the indexed files passing these filters (as above)."""
        where, params = _file_filter(folder, min_duration, max_duration, formats, **more)
        query = f"SELECT f.id FROM files f WHERE {' AND '.join(where)} ORDER BY f.id"
        with self._use("filter files") as conn:
            ids = np.fromiter((row[0] for row in conn.execute(query, params)), dtype=np.int64)
        if keywords:
            ids = np.intersect1d(ids, self.file_ids_matching_keywords(keywords))
        return ids

    # --- reads of per-window tags ---------------------------------------------------------

    def segment_tags(self, ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
        """id → that window's [(tag name, probability)], best first, for those of `ids` that
        have tags; {} for a catalogue without tags."""
        if not self.tag_names:  # also what keeps a read-only schema-1 catalogue readable
            return {}
        wanted = [int(i) for i in ids]
        found: dict[int, list[tuple[str, float]]] = {}
        with self._snapshot("read window tags") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                query = (
                    f"SELECT id, tag_probs FROM segments WHERE tag_probs IS NOT NULL "
                    f"AND id IN ({', '.join('?' * len(chunk))})"
                )
                found.update((sid, self._named(blob)) for sid, blob in conn.execute(query, chunk))
        return found

    def _named(self, blob: bytes | None) -> list[tuple[str, float]]:
        names = self.tag_names
        entries = decode_tags(blob) if names else decode_tags(None)
        return [(names[t], q / 255) for t, q in zip(entries["tag"].tolist(),
                entries["q"].tolist(), strict=True) if t < len(names)]  # fmt: skip

    def _file_tag_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every indexed file's tag summary, flat: (file ids (n,) int64, entries (n,) TAG_DTYPE),
        one row per (file, tag) the file has."""
        if not self.tag_names:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=TAG_DTYPE)
        with self._use("read file tags") as conn:
            rows = conn.execute(
                f"SELECT f.id, {FILE_TAGS} AS t FROM files f WHERE status = 'ok' AND length(t) > 0"
            ).fetchall()
        blob = b"".join(r[1] for r in rows)
        if len(blob) % TAG_DTYPE.itemsize:
            raise CatalogueError(f"catalogue '{self.path}' has damaged tag summaries; re-index")
        counts = np.fromiter((len(r[1]) // TAG_DTYPE.itemsize for r in rows), np.int64, len(rows))
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        return np.repeat(ids, counts), np.frombuffer(blob, dtype=TAG_DTYPE)

    def files_with_tags(self, tags: Sequence[int], tag_min: float = CONFIDENT_TAG) -> dict:
        """file id → its weakest wanted tag's best probability over its windows, for the files
        where one window or another has each of `tags` (vocabulary indices) at >= tag_min."""
        file_ids, entries = self._file_tag_table()
        best: dict[int, float] | None = None
        for tag in dict.fromkeys(int(t) for t in tags):
            hit = (entries["tag"] == tag) & (entries["q"] / 255 >= tag_min - 1e-9)
            found = dict(zip(file_ids[hit].tolist(), (entries["q"][hit] / 255).tolist(),
                             strict=True))  # fmt: skip
            if best is None:
                best = found
            else:
                best = {f: min(p, found[f]) for f, p in best.items() if f in found}
        return best or {}

    def tag_file_counts(self, tag_min: float = CONFIDENT_TAG) -> list[tuple[str, int]]:
        """[(tag name, files having it at >= tag_min)], most files first (then by name): the tag
        filter's menu."""
        names = self.tag_names
        _, entries = self._file_tag_table()
        sure = entries["tag"][entries["q"] / 255 >= tag_min - 1e-9].astype(np.int64)
        counts = np.bincount(sure, minlength=len(names))[: len(names)]
        order = sorted(
            np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], names[i].casefold())
        )
        return [(names[i], int(counts[i])) for i in order]

    def keyword_search(self, query: str, limit: int = 100) -> list[tuple[int, float]]:
        """[(file_id, score)], best first: BM25 over file names, folder names, tag values and
        (schema v4) the embedded metadata's words.

        Any text is safe: only its words are searched, each quoted (see `keyword_text.fts_query`).
        """
        match = fts_query(str(query))
        if match is None or limit <= 0:
            return []
        with self._use("search keywords") as conn:
            rows = conn.execute(
                "SELECT rowid, bm25(files_fts, ?, ?, ?, ?) AS rank FROM files_fts "
                "WHERE files_fts MATCH ? ORDER BY rank LIMIT ?",
                (*BM25_WEIGHTS, match, int(limit)),
            ).fetchall()
        return [(file_id, -rank) for file_id, rank in rows]  # bm25 is lower-is-better


def _file_filter(folder, min_duration, max_duration, formats, **more) -> tuple[list[str], list]:
    """The WHERE terms (over `files f`) and parameters of the folder, duration and format
    filters; see `segment_ids_matching`."""
    where, params = ["f.status = 'ok'"], []
    if folder is not None:
        root = absolute(str(folder))
        prefix = root if root.endswith(os.sep) else root + os.sep
        # Binary comparison: exactly the strings that start with `prefix`, via the index.
        where.append("(f.folder = ? OR (f.folder >= ? AND f.folder < ?))")
        params += [root, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
    if min_duration is not None:
        where.append("f.duration_s >= ?")
        params.append(float(min_duration))
    if max_duration is not None:
        where.append("f.duration_s <= ?")
        params.append(float(max_duration))
    if formats:
        names = sorted({str(f).lower().lstrip(".") for f in formats})
        marks = ", ".join("?" * len(names))
        where.append(
            f"(lower(f.format) IN ({marks}) OR lower(f.subtype) IN ({marks}) OR f.ext IN ({marks}))"
        )
        params += names * 3
    _more_filters(where, params, **more)
    return where, params


def _more_filters(
    where: list[str],
    params: list,
    sample_rate: tuple | None = None,
    channels: tuple | None = None,
    folder_parts: Sequence[str] | None = None,
    fts_require: Sequence[str] | None = None,
    fts_exclude: Sequence[str] | None = None,
) -> None:
    """The query syntax's conditions (earshot.query_syntax), added to `where` / `params`:
    sample_rate / channels: inclusive (lo, hi), None = open; folder_parts: relative folder
    paths ("foley", "sfx/foley"), each of which must be whole components of the file's folder
    (any case); fts_require / fts_exclude: FTS5 MATCH expressions over the whole keyword row
    (`files_fts`, every column) that the file must / must not match."""
    for column, bounds in (("sample_rate", sample_rate), ("channels", channels)):
        if bounds is None:
            continue
        lo, hi = bounds
        if lo is not None:
            where.append(f"f.{column} >= ?")
            params.append(lo)
        if hi is not None:
            where.append(f"f.{column} <= ?")
            params.append(hi)
    for part in folder_parts or ():
        where.append("instr(lower(f.folder) || '/', ?) > 0")
        params.append("/" + str(part).strip("/").lower() + "/")
    for match in fts_require or ():
        where.append("f.id IN (SELECT rowid FROM files_fts WHERE files_fts MATCH ?)")
        params.append(match)
    for match in fts_exclude or ():
        where.append("f.id NOT IN (SELECT rowid FROM files_fts WHERE files_fts MATCH ?)")
        params.append(match)
