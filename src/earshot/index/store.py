"""The catalogue: earshot's source of truth for indexed files, their segments and vectors.

One SQLite file in WAL mode (layout in `schema.py`). Every write happens inside
`with catalogue.batch():`, one IMMEDIATE transaction that commits whole or not at all: a kill at
any moment leaves the catalogue as the last committed batch left it, and other connections see
the state before a batch or after it, never part of one. Each batch that changed anything bumps
`generation` once; the ANN index (a rebuildable cache) records the generation it was built at.

Vectors are stored as little-endian float16 blobs of the bound model's dimension; a tagging
model's windows also keep their top tags (`tag_blobs.encode_tags`, at most 24 bytes) and each file
the best probability of every tag over its windows, with the vocabulary once in `meta`. Segment ids
are never reused, so the ANN index extends itself with `vectors(since_segment_id=...)`; when
`deleted_since(its generation)` says segments were removed (`removals` counts them), stale ids
are still in it (they no longer resolve through `segments()`), and it should be rebuilt once
they pile up.

This module opens the file, runs the transactions and writes; the queries are in `queries.py`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earshot.errors import CatalogueError, ModelMismatchError
from earshot.index.binding import ModelBinding
from earshot.index.connection import connect, default_db_path, describe_error
from earshot.index.keyword_text import fts_document, fts_meta
from earshot.index.queries import CatalogueQueries
from earshot.index.schema import (
    FILE_COLUMNS,
    FILE_MARKS,
    FILE_TAGS,
    FileRecord,
    FileState,
    SegmentRow,
    encode_segments,
    extension,
    file_values,
    meta_json,
)
from earshot.index.tag_blobs import (
    confident_tags,
    encode_tags,
    keyword_tag_limit,
    summarise_tags,
)

__all__ = [
    "Catalogue",
    "CatalogueError",
    "FileRecord",
    "FileState",
    "ModelMismatchError",
    "SegmentRow",
    "default_db_path",
]

_FETCH_ROWS = 16384  # rows per fetch while reading vectors: bounds the Python-object overhead


class Catalogue(ModelBinding, CatalogueQueries):
    """An open catalogue file; see the module docstring. Safe to share between threads."""

    def __init__(self, path: str | Path, readonly: bool = False, timeout: float = 30.0):
        """Open (or create, unless `readonly`) the catalogue at `path`.

        `timeout`: seconds to wait for another process's write to finish before giving up.
        """
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = connect(self.path, readonly, timeout)
        self._in_batch = False
        self._failed = False  # an SQLite error inside the batch: it can only roll back
        self._failure = ""  # what that error was
        self._dirty = False
        self._removed = 0  # segments deleted by the batch
        self._tag_names: tuple[str, ...] = ()  # cached once known: a binding never changes

    def __repr__(self) -> str:
        return f"Catalogue('{self.path}'{', readonly' if self.readonly else ''})"

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The raw connection, for tools and tests; writes through it bypass every guarantee."""
        if self._conn is None:
            raise CatalogueError(f"catalogue '{self.path}' is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):  # closing rolls back whatever is left
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            conn.close()

    # --- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _use(self, doing: str, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite errors turned into CatalogueErrors."""
        with self._lock:
            conn = self.db
            if write:
                if self.readonly:
                    raise CatalogueError(f"cannot {doing}: catalogue '{self.path}' is read-only")
                if not self._in_batch:
                    raise CatalogueError(f"cannot {doing} outside `with catalogue.batch():`")
                if self._failed:
                    raise CatalogueError(
                        f"cannot {doing}: an earlier write of this batch to '{self.path}' "
                        f"failed, so the batch can only roll back ({self._failure})"
                    )
            try:
                yield conn
            except sqlite3.Error as exc:
                message = describe_error(exc, self.path, doing)
                if write and not self._failed:
                    self._failed, self._failure = True, message
                raise CatalogueError(message) from exc

    @contextlib.contextmanager
    def _snapshot(self, doing: str) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state even while another process commits."""
        with self._use(doing) as conn:
            if conn.in_transaction:  # inside our own batch
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _meta(self, key: str, default: Any = None) -> Any:
        with self._use("read the catalogue's metadata") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _set_meta(self, conn: sqlite3.Connection, values: Mapping[str, Any]) -> None:
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    # --- writes ----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Increases by one with every committed batch that changed anything."""
        return self._meta("generation", 0)

    @property
    def removals(self) -> int:
        """How many segments were ever deleted (removed, replaced or skipped files)."""
        return self._meta("removals", 0)

    def deleted_since(self, generation: int) -> bool:
        """Whether any segment was deleted by a batch committed after `generation`."""
        return self._meta("removed_generation", 0) > generation

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One IMMEDIATE transaction: on exit it commits (bumping `generation` once if anything
        changed); on an exception it rolls back."""
        with self._lock:
            if self.readonly:
                raise CatalogueError(f"cannot write: catalogue '{self.path}' is read-only")
            if self._in_batch:
                raise CatalogueError("catalogue batches do not nest")
            with self._use("start a batch") as conn:
                conn.execute("BEGIN IMMEDIATE")
            self._in_batch, self._failed, self._dirty, self._removed = True, False, False, 0
            self._failure = ""
            try:
                yield
                if self._failed:
                    raise CatalogueError(
                        f"a write of this batch to catalogue '{self.path}' failed; "
                        f"nothing of the batch was written ({self._failure})"
                    )
                with self._use("commit a batch") as conn:
                    if self._dirty:
                        self._bump(conn)
                    conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._in_batch = False

    def _bump(self, conn: sqlite3.Connection) -> None:
        generation = self._meta("generation", 0) + 1
        values: dict[str, int] = {"generation": generation}
        if self._removed:
            values |= {
                "removed_generation": generation,
                "removals": self._meta("removals", 0) + self._removed,
            }
        self._set_meta(conn, values)

    def put_file(
        self,
        record: FileRecord,
        segments: Sequence[tuple[float, float, np.ndarray]],
        tags: np.ndarray | Sequence[np.ndarray] | None = None,
        *,
        file_id: int | None = None,
        segment_ids: Sequence[int] | None = None,
    ) -> int:
        """Insert `record` with its segments (start_s, end_s, (dim,) vector), replacing whatever
        was at its path; returns the new file id. `tags`: each segment's (len(tag_names),) tag
        probabilities, from a model that tags windows; None stores none. `file_id` and
        `segment_ids`: the ids to give them (a shard's, `earshot.scale.search`), which must
        be unused and grow; None: the catalogue's next ones."""
        doing = f"write '{record.path}'"
        with self._use(doing, write=True) as conn:
            rows = self._segment_rows(record.path, segments)  # all checked before any write
            blobs = self._tag_blobs(record.path, tags, len(rows))
            summary = summarise_tags(blobs) if tags is not None else None
            ids = [None] * len(rows) if segment_ids is None else [int(i) for i in segment_ids]
            if len(ids) != len(rows):
                raise CatalogueError(f"cannot {doing}: {len(ids)} segment ids, {len(rows)} windows")
            file_id = self._insert_file(conn, record, summary, len(rows), file_id)
            conn.executemany(
                "INSERT INTO segments (id, file_id, start_s, end_s, vector, tag_probs) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(i, file_id, *row, b) for i, row, b in zip(ids, rows, blobs, strict=True)],
            )
            return file_id

    def copy_segments(self, from_file_id: int, record: FileRecord) -> int:
        """Give `record` (same bytes as file `from_file_id`, e.g. moved or copied) that file's
        segments and their tags without embedding again; returns its file id."""
        doing = f"write '{record.path}'"
        with self._use(doing, write=True) as conn:
            source = conn.execute(
                f"SELECT path, content_hash, {FILE_TAGS} FROM files f "
                "WHERE id = ? AND status = 'ok'",
                (int(from_file_id),),
            ).fetchone()
            if source is None:
                raise CatalogueError(f"cannot {doing}: no indexed file {from_file_id} to copy from")
            if source[1] != record.content_hash:
                raise CatalogueError(
                    f"cannot {doing}: its content differs from '{source[0]}' (file "
                    f"{from_file_id}), so that file's vectors do not describe it"
                )
            windows = conn.execute(
                "SELECT count(*) FROM segments WHERE file_id = ?", (int(from_file_id),)
            ).fetchone()[0]
            if source[0] == record.path:  # touched, same bytes: keep the segments and their ids
                self._check_path(record.path, doing)
                conn.execute(
                    f"UPDATE files SET ({FILE_COLUMNS}) = ({FILE_MARKS}) WHERE id = ?",
                    (*file_values(record), int(from_file_id)),
                )
                conn.execute("DELETE FROM files_fts WHERE rowid = ?", (int(from_file_id),))
                self._insert_fts(conn, int(from_file_id), record, source[2], windows)
                self._dirty = True
                return int(from_file_id)
            file_id = self._insert_file(conn, record, source[2], windows)
            conn.execute(
                "INSERT INTO segments (file_id, start_s, end_s, vector, tag_probs) "
                "SELECT ?, start_s, end_s, vector, tag_probs FROM segments WHERE file_id = ? "
                "ORDER BY id",
                (file_id, int(from_file_id)),
            )
            return file_id

    def put_skipped(
        self, path: str, size: int, mtime_ns: int, reason: str, file_id: int | None = None
    ) -> None:
        """Record a file that could not be indexed, and why; replaces what was at its path
        (`file_id`: the id to give it, as `put_file` takes)."""
        doing = f"record '{path}' as skipped"
        with self._use(doing, write=True) as conn:
            self._check_path(path, doing)
            self._delete_path(conn, path)
            folder, name = os.path.split(path)
            values = (path, folder, name, extension(name), int(size), int(mtime_ns), str(reason))
            conn.execute(
                "INSERT INTO files (id, path, folder, name, ext, size, mtime_ns, skip_reason, "
                "status, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'skipped', ?)",
                (file_id, *values, time.time()),
            )
            self._dirty = True

    def remove_paths(self, paths: Iterable[str]) -> int:
        """Delete these files with their segments; returns how many were catalogued."""
        with self._use("remove files", write=True) as conn:
            return sum(self._delete_path(conn, str(path)) for path in paths)

    def _check_path(self, path: str, doing: str) -> None:
        if not os.path.isabs(path):
            raise CatalogueError(f"cannot {doing}: the catalogue takes absolute paths only")

    def _segment_rows(self, path: str, segments: Sequence) -> list[tuple[float, float, bytes]]:
        dim = self.dim
        if dim is None:
            raise CatalogueError(f"cannot write '{path}': catalogue '{self.path}' has no model yet")
        if len(segments) == 0:
            raise CatalogueError(f"cannot write '{path}': no segments; record it with put_skipped")
        try:
            return encode_segments(segments, dim)
        except ValueError as exc:
            raise CatalogueError(
                f"cannot write '{path}' to catalogue '{self.path}' (model {self.model_id}, "
                f"{dim}-d): {exc}"
            ) from exc

    def _tag_blobs(self, path: str, tags, n: int) -> list[bytes | None]:
        if tags is None:
            return [None] * n
        names = self.tag_names
        if not names:
            raise CatalogueError(
                f"cannot write the tags of '{path}': catalogue '{self.path}' has no tag "
                "vocabulary (bind the model with its tag_names first)"
            )
        if len(tags) != n:
            raise CatalogueError(f"cannot write '{path}': {len(tags)} windows of tags, {n} windows")
        try:
            return [encode_tags(p, len(names)) for p in tags]
        except ValueError as exc:
            raise CatalogueError(f"cannot write the tags of '{path}': {exc}") from exc

    def _insert_file(
        self,
        conn: sqlite3.Connection,
        record: FileRecord,
        tag_summary: bytes | None,
        windows: int,
        file_id: int | None = None,
    ) -> int:
        """`tag_summary`: the file's tags (`summarise_tags`), stored only for a file of more
        than one window (schema v5: a one-window file's are its window's)."""
        self._check_path(record.path, f"write '{record.path}'")
        self._delete_path(conn, record.path)
        file_id = conn.execute(
            f"INSERT INTO files (id, path, status, tag_probs, {FILE_COLUMNS}) "
            f"VALUES (?, ?, 'ok', ?, {FILE_MARKS})",
            (file_id, record.path, tag_summary if windows > 1 else None, *file_values(record)),
        ).lastrowid
        self._insert_fts(conn, file_id, record, tag_summary, windows)
        self._dirty = True
        return file_id

    def _insert_fts(
        self,
        conn: sqlite3.Connection,
        file_id: int,
        record: FileRecord,
        tag_summary: bytes | None,
        windows: int,
    ) -> None:
        limit = keyword_tag_limit(windows)
        sound_tags = confident_tags(tag_summary, self.tag_names, limit) if tag_summary else []
        metadata = {k: str(v) for k, v in record.tags.items()}
        conn.execute(
            "INSERT INTO files_fts (rowid, name, folder, tags, meta) VALUES (?, ?, ?, ?, ?)",
            (file_id, *fts_document(record.path, metadata, sound_tags), fts_meta(record.meta)),
        )

    def set_meta(self, file_id: int, meta: Mapping) -> None:
        """Store the embedded metadata of indexed file `file_id` (read after it was indexed,
        e.g. by an earshot older than schema v4) and put its words in the file's keyword-search
        row; its vectors are untouched."""
        doing = f"store the metadata of file {file_id}"
        with self._use(doing, write=True) as conn:
            updated = conn.execute(
                "UPDATE files SET meta = ? WHERE id = ? AND status = 'ok'",
                (meta_json(dict(meta)), int(file_id)),
            ).rowcount
            if not updated:
                raise CatalogueError(f"cannot {doing}: no indexed file {file_id}")
            conn.execute(
                "UPDATE files_fts SET meta = ? WHERE rowid = ?", (fts_meta(meta), int(file_id))
            )
            self._dirty = True

    def _delete_path(self, conn: sqlite3.Connection, path: str) -> bool:
        row = conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            return False
        # Explicit (the foreign key would cascade) so the batch can count what it removed.
        self._removed += conn.execute("DELETE FROM segments WHERE file_id = ?", row).rowcount
        conn.execute("DELETE FROM files WHERE id = ?", row)  # a trigger drops its FTS row
        self._dirty = True
        return True

    # --- the ANN index's read -----------------------------------------------------------------

    def vectors(self, since_segment_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,) int64, vectors (n, dim) float16) of the segments with id > since, by id.

        Read in chunks into preallocated arrays: memory stays near the size of the result.
        """
        with self._snapshot("read vectors") as conn:
            dim = self._meta("dim") or 0
            since = int(since_segment_id)
            n = conn.execute("SELECT count(*) FROM segments WHERE id > ?", (since,)).fetchone()[0]
            ids = np.empty(n, dtype=np.int64)
            out = np.empty((n, dim), dtype=np.float16)
            cursor = conn.execute(
                "SELECT id, vector FROM segments WHERE id > ? ORDER BY id", (since,)
            )
            i = 0
            while rows := cursor.fetchmany(_FETCH_ROWS):
                blob = b"".join(row[1] for row in rows)
                if len(blob) != len(rows) * dim * 2:
                    raise CatalogueError(
                        f"catalogue '{self.path}' has vectors that are not {dim}-d float16; "
                        "it is damaged: delete it and re-index"
                    )
                ids[i : i + len(rows)] = [row[0] for row in rows]
                out[i : i + len(rows)] = np.frombuffer(blob, dtype="<f2").reshape(len(rows), dim)
                i += len(rows)
            return ids, out
