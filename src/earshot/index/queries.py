"""The catalogue's read side: the queries behind the indexer's diff, search and reports.

`CatalogueQueries` is a mixin of `store.Catalogue`, which supplies the connection (`_use`,
`_snapshot`), the model binding and everything that writes; nothing here changes the file. The
ANN index's bulk read, `Catalogue.vectors`, stays in `store.py` beside its chunk size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from sqlite3 import Connection
from typing import TYPE_CHECKING

import numpy as np

from earshot.index.schema import (
    BM25_WEIGHTS,
    INVARIANTS,
    SCHEMA_VERSION,
    SEGMENT_SELECT,
    CatalogueError,
    FileState,
    SegmentRow,
    fts_query,
)

_IN_CHUNK = 900  # ids per `IN (...)`, under the 999 variables older SQLite builds allow


class CatalogueQueries:
    """Reads of an open catalogue; mixed into `Catalogue`, which provides what is declared here."""

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

    # --- reads for the indexer's diff --------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        """path → state of every catalogued file, skipped ones included."""
        with self._use("read file states") as conn:
            rows = conn.execute(
                "SELECT path, id, size, mtime_ns, coalesce(content_hash, ''), status FROM files"
            )
            return {path: FileState(*rest) for path, *rest in rows}

    def find_by_hash(self, content_hash: str) -> int | None:
        """An indexed ('ok') file with these bytes: a moved or copied file can reuse its vectors."""
        with self._use("look up a content hash") as conn:
            row = conn.execute(
                "SELECT id FROM files WHERE content_hash = ? AND status = 'ok' ORDER BY id LIMIT 1",
                (content_hash,),
            ).fetchone()
        return None if row is None else row[0]

    def file_id_for_path(self, path: str) -> int | None:
        """The id of the file catalogued at `path`, skipped or not."""
        with self._use("look up a path") as conn:
            row = conn.execute("SELECT id FROM files WHERE path = ?", (str(path),)).fetchone()
        return None if row is None else row[0]

    # --- reads for search ---------------------------------------------------------------------

    def segment_count(self) -> int:
        with self._use("count segments") as conn:
            return conn.execute("SELECT count(*) FROM segments").fetchone()[0]

    def max_segment_id(self) -> int:
        """The largest segment id present (0 if none)."""
        with self._use("read segment ids") as conn:
            return conn.execute("SELECT coalesce(max(id), 0) FROM segments").fetchone()[0]

    def segments(self, ids: Sequence[int]) -> dict[int, SegmentRow]:
        """id → row for those of `ids` that exist; deleted ids are simply absent."""
        wanted = [int(i) for i in ids]
        found: dict[int, SegmentRow] = {}
        with self._snapshot("read segments") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                query = f"{SEGMENT_SELECT} WHERE s.id IN ({', '.join('?' * len(chunk))})"
                found.update((row[0], SegmentRow(*row)) for row in conn.execute(query, chunk))
        return found

    def segment_vector(self, segment_id: int) -> np.ndarray:
        """The (dim,) float32 vector of one segment."""
        with self._use("read a vector") as conn:
            row = conn.execute(
                "SELECT vector FROM segments WHERE id = ?", (int(segment_id),)
            ).fetchone()
        if row is None:
            raise CatalogueError(f"catalogue '{self.path}' has no segment {segment_id}")
        return np.frombuffer(row[0], dtype="<f2").astype(np.float32)

    def file_segments(self, file_id: int) -> list[SegmentRow]:
        """A file's segments in time order."""
        with self._use("read segments") as conn:
            rows = conn.execute(
                f"{SEGMENT_SELECT} WHERE s.file_id = ? ORDER BY s.start_s, s.id", (int(file_id),)
            )
            return [SegmentRow(*row) for row in rows]

    def file(self, file_id: int) -> dict | None:
        """Every column of a file (tags as a dict) and its segment count; None if absent."""
        with self._snapshot("read a file") as conn:
            cursor = conn.execute("SELECT * FROM files WHERE id = ?", (int(file_id),))
            row = cursor.fetchone()
            if row is None:
                return None
            info = dict(zip([c[0] for c in cursor.description], row, strict=True))
            info["segments"] = conn.execute(
                "SELECT count(*) FROM segments WHERE file_id = ?", (int(file_id),)
            ).fetchone()[0]
        info["tags"] = json.loads(info["tags"])
        return info

    def segment_ids_matching(
        self,
        folder: str | Path | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        formats: Sequence[str] | None = None,
    ) -> np.ndarray:
        """(n,) int64 ids, ascending, of the segments whose FILE passes every filter given.

        folder: that folder and everything under it (~ and relative paths are resolved against
        the current directory); durations: the file's, in seconds, inclusive; formats: matched
        case-insensitively against the file's format, subtype or extension ('wav', 'flac',
        'ogg', 'opus', 'mp3', 'm4a'). None or empty means no filter.
        """
        where, params = ["f.status = 'ok'"], []
        if folder is not None:
            root = os.path.normpath(os.path.abspath(os.path.expanduser(str(folder))))
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
                f"(lower(f.format) IN ({marks}) OR lower(f.subtype) IN ({marks}) "
                f"OR f.ext IN ({marks}))"
            )
            params += names * 3
        query = (
            f"SELECT s.id FROM segments s JOIN files f ON f.id = s.file_id "
            f"WHERE {' AND '.join(where)} ORDER BY s.id"
        )
        with self._use("filter segments") as conn:
            return np.fromiter((row[0] for row in conn.execute(query, params)), dtype=np.int64)

    def keyword_search(self, query: str, limit: int = 100) -> list[tuple[int, float]]:
        """[(file_id, score)], best first: BM25 over file names, folder names and tag values.

        Any text is safe: only its words are searched, each quoted (see `schema.fts_query`).
        """
        match = fts_query(str(query))
        if match is None or limit <= 0:
            return []
        with self._use("search keywords") as conn:
            rows = conn.execute(
                "SELECT rowid, bm25(files_fts, ?, ?, ?) AS rank FROM files_fts "
                "WHERE files_fts MATCH ? ORDER BY rank LIMIT ?",
                (*BM25_WEIGHTS, match, int(limit)),
            ).fetchall()
        return [(file_id, -rank) for file_id, rank in rows]  # bm25 is lower-is-better

    def folders(self, limit: int = 500) -> list[tuple[str, int]]:
        """[(folder, indexed files directly in it)], most files first: the folder filter's menu."""
        with self._use("list folders") as conn:
            return conn.execute(
                "SELECT folder, count(*) AS n FROM files WHERE status = 'ok' "
                "GROUP BY folder ORDER BY n DESC, folder LIMIT ?",
                (int(limit),),
            ).fetchall()

    # --- reports -----------------------------------------------------------------------------

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped file, by path."""
        with self._use("read skipped files") as conn:
            return conn.execute(
                "SELECT path, coalesce(skip_reason, '') FROM files "
                "WHERE status = 'skipped' ORDER BY path"
            ).fetchall()

    def stats(self) -> dict:
        with self._snapshot("read statistics") as conn:
            ok, skipped, seconds = conn.execute(
                "SELECT coalesce(sum(status = 'ok'), 0), coalesce(sum(status = 'skipped'), 0), "
                "coalesce(sum(CASE WHEN status = 'ok' THEN duration_s END), 0.0) FROM files"
            ).fetchone()
            segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
            model_id, dim, generation = self.model_id, self.dim, self.generation
        db_bytes = sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )
        return {
            "path": str(self.path),
            "files_ok": ok,
            "files_skipped": skipped,
            "segments": segments,
            "hours": seconds / 3600.0,
            "model_id": model_id,
            "dim": dim,
            "generation": generation,
            "schema_version": SCHEMA_VERSION,
            "db_bytes": db_bytes,
        }

    def check(self) -> list[str]:
        """Every broken invariant found, as sentences; an empty list means the catalogue is sound.

        Scans the whole file (PRAGMA integrity_check): seconds per GB.
        """
        with self._snapshot("check the catalogue") as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
            problems += [
                f"{n} {what}"
                for what, q in INVARIANTS.items()
                if (n := conn.execute(q).fetchone()[0])
            ]
        return [f"catalogue '{self.path}': {p}" for p in problems]
