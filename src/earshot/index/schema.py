"""The catalogue's data layout: its records, tables, pragmas and versioning, how a record and
its vectors become rows, and the text its FTS5 table holds.

`store.py` reads and writes through this layout; everything that decides what the file looks
like (and whether an existing file is one of ours) lives here.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earshot.errors import EarshotError

SCHEMA_VERSION = 1
# PRAGMA application_id: 'EARS', so `file` and sqlite tools can tell a catalogue apart.
APPLICATION_ID = 0x45415253

_DDL = (
    # `value` has no declared type so integers stay integers (generation, dim).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID",
    """CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path TEXT UNIQUE NOT NULL,
        folder TEXT NOT NULL,
        name TEXT NOT NULL,
        ext TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_hash TEXT,
        duration_s REAL,
        sample_rate INTEGER,
        channels INTEGER,
        format TEXT,
        subtype TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
        skip_reason TEXT,
        indexed_at REAL NOT NULL
    )""",
    "CREATE INDEX files_hash ON files (content_hash) WHERE status = 'ok'",
    "CREATE INDEX files_folder ON files (folder)",
    # AUTOINCREMENT: ids are never reused, so an ANN index can be extended by id.
    """CREATE TABLE segments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        vector BLOB NOT NULL
    )""",
    "CREATE INDEX segments_file ON segments (file_id)",
    # rowid = files.id; only 'ok' files have a row.
    """CREATE VIRTUAL TABLE files_fts USING fts5 (
        name, folder, tags, tokenize = 'unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER files_fts_delete AFTER DELETE ON files BEGIN
        DELETE FROM files_fts WHERE rowid = old.id;
    END""",
)

# bm25 column weights for (name, folder, tags): a file's own name says the most about it.
BM25_WEIGHTS = (3.0, 1.0, 2.0)

# What `Catalogue.check` counts; each must be 0 in a sound catalogue.
INVARIANTS = {
    "files marked ok without segments": "SELECT count(*) FROM files f WHERE status = 'ok' "
    "AND NOT EXISTS (SELECT 1 FROM segments WHERE file_id = f.id)",
    "segments of skipped files": "SELECT count(*) FROM segments s "
    "JOIN files f ON f.id = s.file_id WHERE f.status = 'skipped'",
    "segments of no file": "SELECT count(*) FROM segments s "
    "WHERE NOT EXISTS (SELECT 1 FROM files WHERE id = s.file_id)",
    "vectors of the wrong size": "SELECT count(*) FROM segments WHERE length(vector) "
    "!= 2 * coalesce((SELECT value FROM meta WHERE key = 'dim'), 0)",
    "ok files missing from keyword search": "SELECT count(*) FROM files "
    "WHERE status = 'ok' AND id NOT IN (SELECT rowid FROM files_fts)",
    "keyword-search rows of no ok file": "SELECT count(*) FROM files_fts "
    "WHERE rowid NOT IN (SELECT id FROM files WHERE status = 'ok')",
    "removals recorded after the current generation": "SELECT count(*) FROM meta a, meta b "
    "WHERE a.key = 'removed_generation' AND b.key = 'generation' AND a.value > b.value",
}


@dataclass(frozen=True)
class FileRecord:
    """What the indexer knows about one audio file."""

    path: str  # absolute, as the scanner resolved it
    size: int
    mtime_ns: int
    content_hash: str  # hex digest of the file's bytes
    duration_s: float
    sample_rate: int
    channels: int
    format: str  # e.g. 'WAV', 'FLAC', 'OGG', 'MP3'
    subtype: str  # e.g. 'PCM_16', 'VORBIS'
    tags: Mapping[str, str] = field(default_factory=dict)  # title, artist, comment, ...


@dataclass(frozen=True)
class FileState:
    """A catalogued file as the indexer's diff needs it; content_hash is '' for skipped files."""

    file_id: int
    size: int
    mtime_ns: int
    content_hash: str
    status: str  # 'ok' | 'skipped'


@dataclass(frozen=True)
class SegmentRow:
    segment_id: int
    file_id: int
    path: str
    start_s: float
    end_s: float
    duration_s: float  # the whole file's duration (the segment's is end_s - start_s)
    format: str


SEGMENT_SELECT = (
    "SELECT s.id, s.file_id, f.path, s.start_s, s.end_s, f.duration_s, f.format "
    "FROM segments s JOIN files f ON f.id = s.file_id"
)
FILE_COLUMNS = (
    "folder, name, ext, size, mtime_ns, content_hash, duration_s, sample_rate, channels, "
    "format, subtype, tags, indexed_at"
)


def file_values(record: FileRecord) -> tuple:
    """The values of FILE_COLUMNS for `record`."""
    folder, name = os.path.split(record.path)
    tags = json.dumps({str(k): str(v) for k, v in record.tags.items()}, ensure_ascii=False)
    return (folder, name, extension(name), int(record.size), int(record.mtime_ns),
            record.content_hash, float(record.duration_s), int(record.sample_rate),
            int(record.channels), record.format, record.subtype, tags, time.time())  # fmt: skip


def extension(name: str) -> str:
    """'Dog.WAV' → 'wav'."""
    return os.path.splitext(name)[1].lstrip(".").lower()


def encode_segments(segments: Sequence, dim: int) -> list[tuple[float, float, bytes]]:
    """(start_s, end_s, (dim,) vector) triples → rows with float16 blobs; ValueError if bad."""
    rows = []
    for segment in segments:
        try:
            start_s, end_s, vector = segment
            start, end = float(start_s), float(end_s)
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a segment is not (start_s, end_s, vector): {exc}") from exc
        if v.shape[0] != dim:
            raise ValueError(f"a vector has {v.shape[0]} dimensions, not {dim}")
        if not (np.isfinite([start, end]).all() and 0 <= start <= end):
            raise ValueError(f"bad segment span [{start}, {end}]")
        with np.errstate(over="ignore"):  # overflow to inf is caught just below
            half = v.astype("<f2")
        if not np.isfinite(half).all():
            raise ValueError("a vector has NaN or values beyond float16's range")
        rows.append((start, end, half.tobytes()))
    return rows


class CatalogueError(EarshotError):
    """The catalogue cannot be opened, read or written; the message names its path."""


class ModelMismatchError(CatalogueError):
    """A model other than the one whose vectors the catalogue holds tried to write to it."""


def default_db_path() -> Path:
    """$EARSHOT_DB, else `catalogue.sqlite` in the user's data folder.

    (~/.local/share/earshot on Linux, ~/Library/Application Support/earshot on macOS.)
    """
    env = os.environ.get("EARSHOT_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("earshot")) / "catalogue.sqlite"


def connect(path: Path, readonly: bool, timeout: float) -> sqlite3.Connection:
    """Open `path` as a catalogue (creating it unless `readonly`) and check that it is one."""
    if readonly:
        if not path.is_file():
            raise CatalogueError(
                f"no catalogue at '{path}' (opened read-only, so none is created); "
                "run `earshot index` first or pass the right --db"
            )
        target, uri = path.resolve().as_uri() + "?mode=ro", True
    else:
        if path.is_dir():
            raise CatalogueError(f"catalogue path '{path}' is a folder; pass a file path as --db")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogueError(f"cannot create the folder for catalogue '{path}': {exc}") from exc
        target, uri = str(path), False
    try:
        # isolation_level=None: transactions are begun and ended explicitly by the store.
        conn = sqlite3.connect(
            target, uri=uri, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise CatalogueError(f"cannot open catalogue '{path}': {exc}") from exc
    try:
        _prepare(conn, path, readonly)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    try:
        # The first read is what tells a text file (or any non-database) apart.
        empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses nothing when the process dies; only an OS crash or power
            # loss can roll back the last commits, and never leaves the file inconsistent.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if empty:
            if readonly:
                raise CatalogueError(f"'{path}' is an empty database, not an earshot catalogue")
            _create(conn)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if app_id != APPLICATION_ID or not has_meta:
            raise CatalogueError(
                f"'{path}' is a SQLite database but not an earshot catalogue; pass another --db"
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CatalogueError(
            f"'{path}' is not an earshot catalogue ({exc}); pass another --db"
        ) from exc
    version = row[0] if row else None
    if not isinstance(version, int):
        raise CatalogueError(f"catalogue '{path}' has no valid schema_version; it is damaged")
    if version > SCHEMA_VERSION:
        raise CatalogueError(
            f"catalogue '{path}' has schema version {version}, newer than this earshot reads "
            f"({SCHEMA_VERSION}); upgrade earshot, or index into another --db"
        )
    if version < SCHEMA_VERSION:  # no older layout exists yet; migrations go here when one does
        raise CatalogueError(f"catalogue '{path}' has an unknown old schema version {version}")


def _create(conn: sqlite3.Connection) -> None:
    # IMMEDIATE, then look again: two processes creating the same new file must not both do it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for statement in _DDL:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", SCHEMA_VERSION),
                    ("generation", 0),
                    ("removed_generation", 0),
                    ("removals", 0),
                ],
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def describe_error(exc: sqlite3.Error, path: Path, doing: str) -> str:
    """A user-facing sentence for an SQLite error met while `doing` something to `path`."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == sqlite3.SQLITE_FULL:
        return (
            f"cannot {doing}: catalogue '{path}' is full (the disk, or the database's size "
            "limit, has no room left); nothing of this batch was written. Free some space "
            "and run again — indexing continues where it stopped"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            f"cannot {doing}: catalogue '{path}' is locked by another process "
            "(is another `earshot index` running?); try again when it has finished"
        )
    if code == sqlite3.SQLITE_READONLY:
        return f"cannot {doing}: catalogue '{path}' is read-only ({text})"
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return (
            f"cannot {doing}: catalogue '{path}' is damaged ({text}); delete it and re-index, "
            "or pass another --db"
        )
    return f"cannot {doing}: catalogue '{path}': {text}"


# --- the text behind keyword search --------------------------------------------------------

_SEPARATORS = re.compile(r"[_\-.\s]+")
_CAMEL = re.compile(
    r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])"
)
# The same runs of letters and digits that FTS5's unicode61 tokenizer calls tokens.
_TOKEN = re.compile(r"[^\W_]+")
# Dropped from a query unless nothing else is left: sentences like "a dog barks in the rain"
# are what the hybrid search passes, and these words name no sound.
_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or over the then there this "  # noqa: SIM905
    "to under while with".split()
)
_MAX_QUERY_TERMS = 32


def words(text: str) -> str:
    """`DogBark_02-loud` → "DogBark 02 loud Dog Bark": the words, then camelCase split."""
    plain = _SEPARATORS.sub(" ", text).strip()
    extra = [s for w in plain.split() if (s := _CAMEL.sub(" ", w)) != w]
    return " ".join([plain, *extra])


def fts_document(path: str, tags: Mapping[str, str]) -> tuple[str, str, str]:
    """The (name, folder, tags) columns of a file's FTS row: name without extension."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    parts = [p for p in Path(folder).parts if p.strip("/\\")]
    return words(stem), " ".join(words(p) for p in parts), " ".join(tags.values())


def fts_query(text: str) -> str | None:
    """A MATCH expression for any user text: its words, each quoted, OR-ed; None if no words.

    Quoting makes every FTS5 operator (AND, NEAR, *, ", :, ^, parentheses) a plain word; words of
    three or more letters also match as prefixes ("bark" finds "barking").
    """
    found = list(dict.fromkeys(w.lower() for w in _TOKEN.findall(text)))
    kept = [w for w in found if w not in _STOPWORDS] or found
    terms = []
    for word in kept[:_MAX_QUERY_TERMS]:
        quoted = '"' + word.replace('"', '""') + '"'
        terms.append(quoted + "*" if len(word) >= 3 else quoted)
    return " OR ".join(terms) or None
