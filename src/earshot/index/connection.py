"""Opening a catalogue file: where the default one lives, creating it, checking that an
existing file is an earshot catalogue of a schema this earshot reads, upgrading an older one in
one transaction, read-only access to a catalogue in a folder this process cannot write, and the
user-facing sentences for what SQLite reports.

The layout it creates and upgrades to is `schema.py`'s.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from earshot.errors import CatalogueError
from earshot.index.schema import _DDL, _MIGRATIONS, APPLICATION_ID, SCHEMA_VERSION


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
