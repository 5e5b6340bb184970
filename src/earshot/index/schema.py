"""The catalogue's data layout: its records, tables and versioning, and how a record and its
vectors become rows.

Everything that decides what the file looks like lives here or beside it: `connection.py`
opens, creates and upgrades a file to this layout (and tells whether an existing file is one of
ours), `tag_blobs.py` is how per-window tags are stored, `keyword_text.py` the text the FTS5
table holds. `store.py` reads and writes through them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earshot.errors import EarshotError
from earshot.index.tag_blobs import MAX_TAGS

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
