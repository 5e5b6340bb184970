"""The catalogue's data layout: its records, tables, pragmas and versioning, how a record and
its vectors (and a tagging model's per-window tags) become rows, and the text its FTS5 table holds.

`store.py` reads and writes through this layout; everything that decides what the file looks
like (and whether an existing file is one of ours) lives here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earshot.errors import CatalogueError, EarshotError
from earshot.errors import ModelMismatchError as ModelMismatchError  # re-exported

SCHEMA_VERSION = 5
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

# Each schema version after the first: the statements that upgrade the one before it. They run
# in one IMMEDIATE transaction when a writable connection opens an older catalogue, and a new
# catalogue is made by `_DDL` followed by all of them, so new and upgraded files are alike.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # v2: a tagging model's top tags per window (`encode_tags`), and per file the maximum of
    # each tag over its windows (`summarise_tags`). NULL: indexed by a model without tags.
    2: (
        "ALTER TABLE segments ADD COLUMN tag_probs BLOB",
        "ALTER TABLE files ADD COLUMN tag_probs BLOB",
    ),
    # v3: the catalogue's own random id (32 hex digits), which the ANN file beside it records so
    # that it is never used for another catalogue of the same name (`earshot.index.ann`).
    3: (
        "INSERT OR IGNORE INTO meta (key, value) "
        "VALUES ('catalogue_uuid', lower(hex(randomblob(16))))",
    ),
    # v4: embedded metadata (earshot.audio.metadata): `files.meta` holds the normalised record
    # as JSON, NULL where it was never read (every file of an older catalogue: the next
    # `earshot index` reads the metadata of those it finds unchanged, without re-embedding
    # them); and keyword search gets a `meta` column of its own (FTS5 cannot add a column, so
    # the table is made anew, its rows copied with an empty `meta`).
    4: (
        "ALTER TABLE files ADD COLUMN meta TEXT",
        "DROP TRIGGER files_fts_delete",
        "CREATE VIRTUAL TABLE files_fts_v4 USING fts5 ("
        "name, folder, tags, meta, tokenize = 'unicode61 remove_diacritics 2')",
        "INSERT INTO files_fts_v4 (rowid, name, folder, tags, meta) "
        "SELECT rowid, name, folder, tags, '' FROM files_fts",
        "DROP TABLE files_fts",
        "ALTER TABLE files_fts_v4 RENAME TO files_fts",
        """CREATE TRIGGER files_fts_delete AFTER DELETE ON files BEGIN
        DELETE FROM files_fts WHERE rowid = old.id;
    END""",
    ),
    # v5: a file of one window keeps its tags once, in its window's `tag_probs`; its
    # `files.tag_probs` (the summary, the same tags) is NULL (`FILE_TAGS` reads either). On a
    # one-window clip the summary was 23 B of the ~1.2 KB it costs, while the window's blob
    # fits in the slack of the segment's page (issue #15, `bench/bench_catalogue_size.py`).
    # Old keyword rows keep their tag names (new ones hold at most KEYWORD_TAGS_PER_WINDOW a
    # window: `keyword_tag_limit`).
    5: (
        "UPDATE files SET tag_probs = NULL WHERE tag_probs IS NOT NULL AND id IN "
        "(SELECT file_id FROM segments GROUP BY file_id HAVING count(*) = 1)",
    ),
}

# bm25 column weights for (name, folder, tags, meta): a file's own name says the most about
# it; the words its library wrote into it (description, keywords, UCS category) come next,
# beside the sound tags. A catalogue older than v4 has no `meta` column: bm25 ignores the
# weight of a column that is not there.
BM25_WEIGHTS = (3.0, 1.0, 2.0, 2.0)
# The FTS5 columns, in order; `meta` from schema v4.
FTS_COLUMNS = ("name", "folder", "tags", "meta")

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

# Checked by `Catalogue.check` on catalogues of schema v4 and later, besides INVARIANTS.
META_INVARIANTS = {
    "metadata records that are not JSON objects": "SELECT count(*) FROM files "
    "WHERE meta IS NOT NULL AND (json_valid(meta) = 0 OR json_type(meta) != 'object')",
    "skipped files with metadata": "SELECT count(*) FROM files "
    "WHERE status = 'skipped' AND meta IS NOT NULL",
}

# --- per-window tags (schema v2) ------------------------------------------------------------
# A window's tags: its MAX_TAGS most probable tags with probability >= TAG_FLOOR, best first,
# each 3 bytes: the tag's index in the vocabulary (uint16 LE) and round(p * 255) (uint8). At
# most 24 bytes against the 600 of a 300-d float16 vector. An empty blob: tagged, nothing sure.
TAG_DTYPE = np.dtype([("tag", "<u2"), ("q", "u1")])
MAX_TAGS = 8
TAG_FLOOR = 0.05
# A file "has" a tag when one of its windows reaches this: the default of `--tag-min`, and the
# bar for the tag names its keyword-search row holds.
CONFIDENT_TAG = 0.3
# At most this many of them (the likeliest) in a file's keyword-search row, and at most
# KEYWORD_TAGS_PER_WINDOW for each of its windows: a one-window clip's row names its 3 likeliest
# confident tags, a file of 6 windows or more up to 16. The names' text is stored twice (FTS5's
# copy and its index), ~21 B a name: up to 16 names made one-window clips +16 % larger (issue
# #15, `bench/bench_catalogue_size.py`). Every tag stays in the blobs, for `--tag` filters
# and display.
KEYWORD_TAGS = 16
KEYWORD_TAGS_PER_WINDOW = 3
MAX_VOCABULARY = 65535

# Checked by `Catalogue.check` on catalogues of schema v2 and later, besides INVARIANTS.
TAG_INVARIANTS = {
    "window tags of a malformed size": "SELECT count(*) FROM segments WHERE tag_probs IS NOT "
    f"NULL AND (length(tag_probs) % 3 != 0 OR length(tag_probs) > {3 * MAX_TAGS})",
    "file tag summaries of a malformed size": "SELECT count(*) FROM files "
    "WHERE tag_probs IS NOT NULL AND length(tag_probs) % 3 != 0",
    "tagged windows without a tag vocabulary": "SELECT count(*) FROM segments "
    "WHERE tag_probs IS NOT NULL AND NOT EXISTS (SELECT 1 FROM meta WHERE key = 'tag_names')",
}
# Schema v2 to v4: every window of a tagged file holds its own tags.
TAG_INVARIANTS_V2 = {
    "windows tagged unlike their file's summary": "SELECT count(*) FROM segments s "
    "JOIN files f ON f.id = s.file_id WHERE (s.tag_probs IS NULL) != (f.tag_probs IS NULL)",
}
# Schema v5 and later: ... but a one-window file, whose tags are its window's alone.
_WINDOWS_OF_FILE = "(SELECT count(*) FROM segments w WHERE w.file_id = {})"
TAG_INVARIANTS_V5 = {
    "windows tagged unlike their file's summary": "SELECT count(*) FROM segments s "
    "JOIN files f ON f.id = s.file_id WHERE (s.tag_probs IS NULL) != (f.tag_probs IS NULL) "
    f"AND {_WINDOWS_OF_FILE.format('s.file_id')} > 1",
    "one-window files with a second copy of their window's tags": "SELECT count(*) FROM "
    f"files f WHERE f.tag_probs IS NOT NULL AND {_WINDOWS_OF_FILE.format('f.id')} = 1",
}
# A file's tag summary, for `files f` of any schema: its own, else (a one-window file of
# schema v5) its window's tags; NULL for a file indexed without tags.
FILE_TAGS = (
    "coalesce(f.tag_probs, (SELECT s.tag_probs FROM segments s WHERE s.file_id = f.id "
    "ORDER BY s.id LIMIT 1))"
)


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
    # The embedded metadata (`earshot.audio.metadata.Metadata.as_dict()`); None: not read, so
    # the next indexing run reads it ({} : read, nothing there).
    meta: Mapping | None = None


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
    "format, subtype, tags, indexed_at, meta"
)
FILE_MARKS = ", ".join("?" * len(FILE_COLUMNS.split(",")))


def file_values(record: FileRecord) -> tuple:
    """The values of FILE_COLUMNS for `record`."""
    folder, name = os.path.split(record.path)
    tags = json.dumps({str(k): str(v) for k, v in record.tags.items()}, ensure_ascii=False)
    return (folder, name, extension(name), int(record.size), int(record.mtime_ns),
            record.content_hash, float(record.duration_s), int(record.sample_rate),
            int(record.channels), record.format, record.subtype, tags, time.time(),
            meta_json(record.meta))  # fmt: skip


def meta_json(meta: Mapping | None) -> str | None:
    """A metadata record as `files.meta` stores it: JSON, or NULL (None) where never read."""
    if meta is None:
        return None
    return json.dumps(dict(meta), ensure_ascii=False, sort_keys=True, default=str)


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


def encode_tags(probs, n_tags: int) -> bytes:
    """One window's (n_tags,) probabilities → its tag blob (see TAG_DTYPE); ValueError if bad."""
    try:
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tag probabilities are not numbers: {exc}") from exc
    if p.shape[0] != n_tags:
        raise ValueError(f"a window has {p.shape[0]} tag probabilities, not {n_tags}")
    if not np.isfinite(p).all() or p.min(initial=0.0) < -1e-4 or p.max(initial=0.0) > 1 + 1e-4:
        raise ValueError("tag probabilities must be finite and within [0, 1]")
    order = np.argsort(-p, kind="stable")[:MAX_TAGS]
    order = order[p[order] >= TAG_FLOOR]
    out = np.empty(len(order), dtype=TAG_DTYPE)
    out["tag"] = order
    out["q"] = np.rint(np.clip(p[order], 0.0, 1.0) * 255)
    return out.tobytes()


def decode_tags(blob: bytes | None) -> np.ndarray:
    """A tag blob → (n,) TAG_DTYPE entries, best first; none for NULL or empty."""
    if not blob:
        return np.empty(0, dtype=TAG_DTYPE)
    if len(blob) % TAG_DTYPE.itemsize:
        raise ValueError(f"a tag blob of {len(blob)} bytes is not whole 3-byte entries")
    return np.frombuffer(blob, dtype=TAG_DTYPE)


def summarise_tags(blobs: Sequence[bytes | None]) -> bytes | None:
    """A file's tag summary from its windows' blobs: every tag any window holds, with its best
    quantised probability, best first (ties by index); None when the windows have no tags."""
    if not blobs or any(b is None for b in blobs):
        return None
    entries = np.concatenate([decode_tags(b) for b in blobs])
    if len(entries) == 0:
        return b""
    tag, q = entries["tag"].astype(np.int64), entries["q"].astype(np.int64)
    order = np.lexsort((-q, tag))  # by tag, its best first
    tag, q = tag[order], q[order]
    first = np.r_[True, tag[1:] != tag[:-1]]
    tag, q = tag[first], q[first]
    ranked = np.lexsort((tag, -q))
    out = np.empty(len(ranked), dtype=TAG_DTYPE)
    out["tag"], out["q"] = tag[ranked], q[ranked]
    return out.tobytes()


def keyword_tag_limit(windows: int) -> int:
    """How many tag names the keyword-search row of a file of `windows` windows holds at most."""
    return min(KEYWORD_TAGS, KEYWORD_TAGS_PER_WINDOW * int(windows))


def confident_tags(
    summary: bytes | None, names: Sequence[str], limit: int = KEYWORD_TAGS
) -> list[str]:
    """The names of a file's likeliest tags that reach CONFIDENT_TAG (at most `limit`, best
    first): what keyword search sees (`limit`: `keyword_tag_limit` of the file's windows)."""
    entries = decode_tags(summary)
    return [names[t] for t, q in zip(entries["tag"], entries["q"], strict=True)
            if q / 255 >= CONFIDENT_TAG - 1e-9 and t < len(names)][:limit]  # fmt: skip


def check_tag_names(names: Sequence[str]) -> tuple[str, ...]:
    """A model's tag vocabulary as the catalogue stores it; ValueError if it cannot be one."""
    out = tuple(names)
    if len(out) > MAX_VOCABULARY:
        raise ValueError(f"{len(out)} tag names; a catalogue holds at most {MAX_VOCABULARY}")
    if not all(isinstance(n, str) and n.strip() for n in out):
        raise ValueError("tag names must be non-empty strings")
    return out


def model_hint(model_id: str, model_info: Mapping | None = None) -> str:
    """How to name on the command line the model whose vectors a catalogue holds: `--model
    compact` or `--model general` for a model shipped with earshot, else the folder that
    indexed it where it is still there (`model_info["path"]`), else what that folder must be."""
    import shlex

    from earshot.model.io import PACKAGED_NAMES, packaged_model_dir

    for name in PACKAGED_NAMES:
        try:
            report = json.loads((packaged_model_dir(name) / "heldout.json").read_text())
        except (EarshotError, OSError, ValueError):
            continue
        if isinstance(report, dict) and report.get("model_id") == model_id:
            return f"--model {name}"
    path = (model_info or {}).get("path")
    if isinstance(path, str) and path and Path(path, "config.json").is_file():
        return f"--model {shlex.quote(path)}"
    seen = f", last at '{path}'" if isinstance(path, str) and path else ""
    return f"--model DIR, DIR being the folder of model {model_id}{seen}"


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
    """Open `path` as a catalogue (creating it unless `readonly`) and check that it is one.

    Read-only, a catalogue in a folder this process cannot write (where SQLite cannot make
    the -wal and -shm files it reads a WAL database with) is opened immutable: as the file is,
    without seeing changes another process makes while it is open. Writable, a catalogue
    that cannot be written, or an empty (0-byte) file, is refused with a sentence saying so.
    """
    if readonly:
        if not path.is_file():
            raise CatalogueError(
                f"no catalogue at '{path}' (opened read-only, so none is created); "
                "run `earshot index` first or pass the right --db"
            )
        return _open_readonly(path, timeout)
    if path.is_dir():
        raise CatalogueError(f"catalogue path '{path}' is a folder; pass a file path as --db")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogueError(f"cannot create the folder for catalogue '{path}': {exc}") from exc
    _check_writable(path)
    conn = _sqlite_connect(str(path), False, timeout, path)
    try:
        _prepare(conn, path, readonly)
    except BaseException:
        conn.close()
        raise
    return conn


def _sqlite_connect(target: str, uri: bool, timeout: float, path: Path) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are begun and ended explicitly by the store.
        return sqlite3.connect(
            target, uri=uri, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise CatalogueError(f"cannot open catalogue '{path}': {exc}") from exc


def _open_readonly(path: Path, timeout: float) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = _sqlite_connect(uri, True, timeout, path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        # A WAL catalogue whose folder (or -shm file) this process cannot write: SQLite cannot
        # set up its shared memory, so read the file as it stands.
        if _primary_code(exc) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            conn.close()
            wal = path.with_name(path.name + "-wal")
            if wal.is_file() and wal.stat().st_size > 0:
                print(
                    f"earshot: warning: catalogue '{path}' has changes in '{wal.name}' that "
                    "cannot be read without writing to its folder; reading the catalogue as "
                    "it was before them",
                    file=sys.stderr,
                )
            conn = _sqlite_connect(uri + "&immutable=1", True, timeout, path)
    except sqlite3.DatabaseError:
        pass  # not a database at all: `_prepare` says so
    try:
        _prepare(conn, path, True)
    except BaseException:
        conn.close()
        raise
    return conn


def is_writable(path: Path) -> bool:
    """Whether this process can write the catalogue at `path`: the file (if any), its folder
    (where SQLite keeps the -wal and -shm files) and those files where they exist."""
    path = Path(path)
    folder = path.parent
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return _access(folder) and all(_access(p) for p in files if p.exists())


def _access(path: Path) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective)


def _check_writable(path: Path) -> None:
    """Refuse, with the reason, a catalogue this process cannot write, and a 0-byte file."""
    wal = path.with_name(path.name + "-wal")
    if path.is_file() and path.stat().st_size == 0 and not (wal.is_file() and wal.stat().st_size):
        raise CatalogueError(
            f"catalogue '{path}' is an empty (0-byte) file, not a catalogue: probably one that "
            "was damaged or cut short. Delete it to start a new catalogue there, or pass "
            "another --db"
        )
    if is_writable(path):
        return
    if not path.exists():
        raise CatalogueError(
            f"cannot create catalogue '{path}': its folder is not writable; pass another --db"
        )
    raise CatalogueError(read_only_message(path))


def read_only_message(path: Path, detail: str = "") -> str:
    """The sentence for a catalogue that cannot be written, e.g. one indexed into."""
    folder = path.parent
    if not _access(folder) and _access(path):
        why = f"its folder '{folder}' is not writable, and SQLite writes its -wal file there"
    else:
        why = "the file is not writable"
    return (
        f"catalogue '{path}' is read-only ({detail or why}): it can be searched and served, "
        "not indexed into; make it writable or pass another --db"
    )


def _primary_code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


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
        if _primary_code(exc) == sqlite3.SQLITE_READONLY:  # e.g. a read-only file system
            raise CatalogueError(read_only_message(path, str(exc))) from exc
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
    if version < 1:
        raise CatalogueError(f"catalogue '{path}' has an unknown old schema version {version}")
    if version < SCHEMA_VERSION and not readonly:
        _upgrade(conn, path)
    # Read-only, an older catalogue is read as it is: what it lacks (tags) is simply absent.


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an older catalogue to SCHEMA_VERSION in one transaction: all steps or none."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Looked at again under the write lock: another process may have upgraded it.
            version = conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()[0]
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise CatalogueError(
            describe_error(exc, path, f"upgrade the catalogue to schema {SCHEMA_VERSION}")
        ) from exc


def _create(conn: sqlite3.Connection) -> None:
    # IMMEDIATE, then look again: two processes creating the same new file must not both do it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for statement in _DDL:
                conn.execute(statement)
            for target in range(2, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
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
    # The migrations that remake a table (v4's keyword-search table) leave free pages in a new
    # file; a new catalogue starts without them, as small as its layout.
    if conn.execute("PRAGMA freelist_count").fetchone()[0]:
        with contextlib.suppress(sqlite3.Error):  # another process already using it: leave it
            conn.execute("VACUUM")


def describe_error(exc: sqlite3.Error, path: Path, doing: str) -> str:
    """A user-facing sentence for an SQLite error met while `doing` something to `path`."""
    code = _primary_code(exc)
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


def fts_document(
    path: str, tags: Mapping[str, str], sound_tags: Sequence[str] = ()
) -> tuple[str, str, str]:
    """The (name, folder, tags) columns of a file's FTS row: name without extension; the tags
    column holds the embedded metadata's values, then the names of the sound tags the model is
    sure of (`confident_tags`). (Schema v4's `meta` column: `fts_meta`.)"""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    parts = [p for p in Path(folder).parts if p.strip("/\\")]
    return words(stem), " ".join(words(p) for p in parts), " ".join([*tags.values(), *sound_tags])


def fts_meta(meta: Mapping | None) -> str:
    """The `meta` column of a file's FTS row: the words of its embedded metadata record
    (description, title, FX name, keywords, categories... `metadata.search_text`), with
    CamelCase words such as a UCS CatID also split ("DOORWood" → "DOORWood DOOR Wood")."""
    if not meta:
        return ""
    from earshot.audio.metadata import search_text

    return words(search_text(meta))


def content_words(text: str) -> list[str]:
    """The words of `text` a keyword search looks for: lower-cased, once each, stopwords left
    out (all of them kept when that leaves none), at most the query's term limit."""
    found = list(dict.fromkeys(w.lower() for w in _TOKEN.findall(text)))
    return ([w for w in found if w not in _STOPWORDS] or found)[:_MAX_QUERY_TERMS]


_VOWELS = frozenset("aeiouy")


def stem(word: str) -> str:
    """The head of an English word that its other forms share, searched as a prefix so that a
    query's "barking", "slams" or "footsteps" also finds a name's "bark", "slam" or
    "footstep" (the keyword text is not stemmed: FTS5's unicode61 tokens). Only the plain
    endings -ing, -ed, -es, -s, leaving a head of 4+ letters with a vowel ("string" and "news"
    stay whole); a doubled last consonant loses one ("slammed" → "slam")."""
    w = word.lower()
    sibilant = w.endswith(("ches", "shes")) or (w.endswith("es") and w[-3:-2] in ("s", "x", "z"))
    if len(w) >= 6 and w.endswith("ing"):
        head = w[:-3]
    elif len(w) >= 5 and (w.endswith("ed") or sibilant):
        head = w[:-2]
    elif len(w) >= 5 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        head = w[:-1]
    else:
        return w
    if len(head) >= 5 and head[-1] == head[-2] and head[-1] not in _VOWELS | {"s", "l"}:
        head = head[:-1]
    return head if len(head) >= 4 and _VOWELS & set(head) else w


def fts_query(text: str) -> str | None:
    """A MATCH expression for any user text: its words, each quoted, OR-ed; None if no words.

    Quoting makes every FTS5 operator (AND, NEAR, *, ", :, ^, parentheses) a plain word; words of
    three or more letters also match as prefixes ("bark" finds "barking"), from their `stem`
    ("barking" finds "bark").
    """
    terms = []
    for word in map(stem, content_words(text)):
        quoted = '"' + word.replace('"', '""') + '"'
        terms.append(quoted + "*" if len(word) >= 3 else quoted)
    return " OR ".join(terms) or None


def fts_phrase(text: str) -> str | None:
    """A MATCH expression for one exact phrase: its words in order, as one quoted FTS5 phrase
    (so no operator survives), the last word also a prefix when it has 3+ letters; None if
    `text` has no words."""
    found = [w.lower() for w in _TOKEN.findall(str(text))][:_MAX_QUERY_TERMS]
    if not found:
        return None
    quoted = '"' + " ".join(found).replace('"', '""') + '"'
    return quoted + "*" if len(found[-1]) >= 3 else quoted
