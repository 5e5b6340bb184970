"""The catalogue's read side: the queries behind the indexer's diff, search and reports.

`CatalogueQueries` is a mixin of `store.Catalogue`, which supplies the connection (`_use`,
`_snapshot`), the model binding and everything that writes; nothing here changes the file. The
ANN index's bulk read, `Catalogue.vectors`, stays in `store.py` beside its chunk size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from sqlite3 import Connection
from typing import TYPE_CHECKING

import numpy as np

from earshot.fsutil import absolute
from earshot.index.schema import (
    BM25_WEIGHTS,
    CONFIDENT_TAG,
    FILE_TAGS,
    FTS_COLUMNS,
    INVARIANTS,
    META_INVARIANTS,
    SEGMENT_SELECT,
    TAG_DTYPE,
    TAG_INVARIANTS,
    TAG_INVARIANTS_V2,
    TAG_INVARIANTS_V5,
    CatalogueError,
    FileState,
    SegmentRow,
    content_words,
    decode_tags,
    fts_phrase,
    fts_query,
    summarise_tags,
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

        @property
        def tag_names(self) -> tuple[str, ...]: ...

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

    def files_without_meta(self) -> dict[str, int]:
        """path → id of the indexed files whose embedded metadata was never read (those of a
        catalogue made before schema v4); {} for an older catalogue opened read-only."""
        if not self._has_meta():
            return {}
        with self._use("read file states") as conn:
            rows = conn.execute("SELECT path, id FROM files WHERE status = 'ok' AND meta IS NULL")
            return dict(rows.fetchall())

    def has_described_files(self) -> bool:
        """Whether some indexed file has embedded metadata with words in it (a description,
        title, keywords, UCS name...): where hybrid search is on by default."""
        if not self._has_meta():
            return False
        with self._use("read the keyword index") as conn:
            row = conn.execute("SELECT 1 FROM files_fts WHERE meta != '' LIMIT 1").fetchone()
        return row is not None

    def path_word_counts(self, text: str, cap: int | None = None) -> dict[str, int]:
        """{word: indexed files whose name or folders hold it (as keyword search matches: from
        its stem, as a prefix), counted up to `cap`} for the content words of `text`: whether a
        query's words pick files out by where they are filed (`Doors/take_001.wav` as much as
        `door_slam_01.wav`), where hybrid search is on by default (`Searcher.hybrid_by_default`)."""
        counts: dict[str, int] = {}
        limit = -1 if cap is None else max(0, int(cap))
        with self._use("count name and folder matches") as conn:
            for word in content_words(str(text)):
                match = fts_query(word)
                if match is not None:
                    counts[word] = conn.execute(
                        "SELECT count(*) FROM (SELECT 1 FROM files_fts WHERE files_fts MATCH ? "
                        "LIMIT ?)",
                        ("{name folder} : (" + match + ")", limit),
                    ).fetchone()[0]
        return counts

    def ok_file_count(self) -> int:
        """Indexed files (each has its keyword-search row)."""
        with self._use("count files") as conn:
            return conn.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0]

    def _has_meta(self) -> bool:
        """Whether the catalogue has schema v4's metadata (`files.meta`, `files_fts.meta`)."""
        with self._use("read the catalogue's layout") as conn:
            return _schema_version(conn) >= 4

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

    def segment_fingerprint(self, segment_id: int) -> str | None:
        """A short digest of what the catalogue holds at `segment_id` (its file's path, its span
        and vector); None where there is no such segment. An ANN file keeps the one of its last
        segment, to tell whether it was built from this catalogue."""
        with self._use("read a segment") as conn:
            row = conn.execute(
                "SELECT f.path, s.start_s, s.end_s, s.vector FROM segments s "
                "JOIN files f ON f.id = s.file_id WHERE s.id = ?",
                (int(segment_id),),
            ).fetchone()
        if row is None:
            return None
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{int(segment_id)}\0{row[0]}\0{row[1]!r}\0{row[2]!r}\0".encode())
        digest.update(row[3])
        return digest.hexdigest()

    @property
    def uuid(self) -> str | None:
        """The catalogue's own random id, made when it was created (or upgraded to schema 3);
        None for an older catalogue opened read-only."""
        with self._use("read the catalogue's metadata") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'catalogue_uuid'").fetchone()
        return None if row is None else str(row[0])

    def file_segments(self, file_id: int) -> list[SegmentRow]:
        """A file's segments in time order."""
        with self._use("read segments") as conn:
            rows = conn.execute(
                f"{SEGMENT_SELECT} WHERE s.file_id = ? ORDER BY s.start_s, s.id", (int(file_id),)
            )
            return [SegmentRow(*row) for row in rows]

    def segment_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """id → (dim,) float32 vector for those of `ids` that exist."""
        wanted = [int(i) for i in ids]
        found: dict[int, np.ndarray] = {}
        with self._snapshot("read vectors") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                query = (
                    f"SELECT id, vector FROM segments WHERE id IN ({', '.join('?' * len(chunk))})"
                )
                for sid, blob in conn.execute(query, chunk):
                    found[sid] = np.frombuffer(blob, dtype="<f2").astype(np.float32)
        return found

    def files_windows(self, file_ids: Sequence[int]) -> dict[int, list[tuple]]:
        """file id → [(segment id, start_s, end_s, vector (dim,) float32)] in time order."""
        wanted = [int(i) for i in file_ids]
        found: dict[int, list[tuple]] = {f: [] for f in wanted}
        with self._snapshot("read windows") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                rows = conn.execute(
                    "SELECT file_id, id, start_s, end_s, vector FROM segments WHERE file_id IN "
                    f"({', '.join('?' * len(chunk))}) ORDER BY file_id, start_s, id",
                    chunk,
                )
                for fid, sid, start, end, blob in rows:
                    vector = np.frombuffer(blob, dtype="<f2").astype(np.float32)
                    found[fid].append((sid, start, end, vector))
        return found

    def file_facts(self, file_ids: Sequence[int]) -> dict[int, dict]:
        """file id → {content_hash, sample_rate, channels, mtime_ns, name} (search's sort keys
        and duplicate grouping), for those of `file_ids` that exist."""
        wanted = [int(i) for i in file_ids]
        found: dict[int, dict] = {}
        with self._snapshot("read files") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                rows = conn.execute(
                    "SELECT id, content_hash, sample_rate, channels, mtime_ns, name FROM files "
                    f"WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for fid, digest, rate, channels, mtime_ns, name in rows:
                    found[fid] = {
                        "content_hash": digest,
                        "sample_rate": rate,
                        "channels": channels,
                        "mtime_ns": mtime_ns,
                        "name": name,
                    }
        return found

    def paths_by_hash(self, hashes: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        """content hash → [(file id, path)] of the indexed files with those bytes, by id."""
        wanted = [h for h in dict.fromkeys(hashes) if h]
        found: dict[str, list[tuple[int, str]]] = {}
        with self._snapshot("read duplicates") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                rows = conn.execute(
                    "SELECT content_hash, id, path FROM files WHERE status = 'ok' AND "
                    f"content_hash IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                    chunk,
                )
                for digest, fid, path in rows:
                    found.setdefault(digest, []).append((fid, path))
        return found

    def file(self, file_id: int) -> dict | None:
        """Every column of a file (tags as a dict) and its segment count; None if absent."""
        with self._snapshot("read a file") as conn:
            tags = FILE_TAGS if _schema_version(conn) >= 2 else "NULL"  # v1: no tags at all
            cursor = conn.execute(
                f"SELECT *, {tags} AS file_tags FROM files f WHERE id = ?", (int(file_id),)
            )
            row = cursor.fetchone()
            if row is None:
                return None
            info = dict(zip([c[0] for c in cursor.description], row, strict=True))
            info["segments"] = conn.execute(
                "SELECT count(*) FROM segments WHERE file_id = ?", (int(file_id),)
            ).fetchone()[0]
        info["tags"] = json.loads(info["tags"])
        info.pop("tag_probs", None)
        info["sound_tags"] = self._named(info.pop("file_tags"))
        info["meta"] = _meta_of(info.get("meta"))
        return info

    def file_meta(self, file_ids: Sequence[int], raw: bool = False) -> dict[int, dict]:
        """id → embedded metadata record (`earshot.audio.metadata.Metadata.as_dict()`) for
        those of `file_ids` that have one that is not empty; without its raw key/values unless
        `raw` (what a hit carries: the normalised fields only)."""
        wanted = [int(i) for i in dict.fromkeys(file_ids)]
        if not wanted or not self._has_meta():
            return {}
        found: dict[int, dict] = {}
        with self._snapshot("read file metadata") as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                query = (
                    "SELECT id, meta FROM files WHERE meta IS NOT NULL AND meta != '{}' "
                    f"AND id IN ({', '.join('?' * len(chunk))})"
                )
                for fid, text in conn.execute(query, chunk):
                    meta = _meta_of(text)
                    if meta and not raw:
                        meta.pop("raw", None)
                    if meta:
                        found[fid] = meta
        return found

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

        Any text is safe: only its words are searched, each quoted (see `schema.fts_query`).
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

    def folders(self, limit: int = 500) -> list[tuple[str, int]]:
        """[(folder, indexed files directly in it)], most files first: the folder filter's menu."""
        with self._use("list folders") as conn:
            return conn.execute(
                "SELECT folder, count(*) AS n FROM files WHERE status = 'ok' "
                "GROUP BY folder ORDER BY n DESC, folder LIMIT ?",
                (int(limit),),
            ).fetchall()

    def facets(self, limit: int = 50) -> dict[str, list[tuple]]:
        """What the indexed files are, for the page's menus, most files first: {"formats":
        [(extension, files)], "sample_rates": [(Hz, files)], "channels": [(n, files)]}."""
        columns = {"formats": "lower(ext)", "sample_rates": "sample_rate", "channels": "channels"}
        with self._use("list formats") as conn:
            return {
                key: conn.execute(
                    f"SELECT {column} AS v, count(*) AS n FROM files WHERE status = 'ok' "
                    "AND v IS NOT NULL AND v != '' GROUP BY v ORDER BY n DESC, v LIMIT ?",
                    (int(limit),),
                ).fetchall()
                for key, column in columns.items()
            }

    def file_names(self, limit: int = 5000) -> tuple[list[str], list[dict]]:
        """Names of indexed files (the first `limit` by id) and the embedded metadata records
        of those that have one: where the page finds its example searches."""
        meta = "meta" if self._has_meta() else "NULL"
        with self._use("list file names") as conn:
            rows = conn.execute(
                f"SELECT name, {meta} FROM files WHERE status = 'ok' ORDER BY id LIMIT ?",
                (int(limit),),
            ).fetchall()
        records = [m for _, text in rows if text and text != "{}" and (m := _meta_of(text))]
        return [name for name, _ in rows], records

    # --- reports -----------------------------------------------------------------------------

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped file, by path."""
        with self._use("read skipped files") as conn:
            return conn.execute(
                "SELECT path, coalesce(skip_reason, '') FROM files "
                "WHERE status = 'skipped' ORDER BY path"
            ).fetchall()

    def skipped_files(self, limit: int | None = None, offset: int = 0) -> list[dict]:
        """The skipped files by path, `limit` of them from `offset` (all by default), each
        {"id", "path", "reason", "size", "mtime", "recorded_at"}: `mtime` the file's when it was
        tried, `recorded_at` when that run recorded it, both in seconds since the epoch."""
        with self._use("read skipped files") as conn:
            rows = conn.execute(
                "SELECT id, path, coalesce(skip_reason, ''), size, mtime_ns, indexed_at FROM files "
                "WHERE status = 'skipped' ORDER BY path LIMIT ? OFFSET ?",
                (-1 if limit is None else int(limit), int(offset)),
            ).fetchall()
        return [
            {"id": i, "path": p, "reason": r, "size": size, "mtime": mtime / 1e9, "recorded_at": at}
            for i, p, r, size, mtime, at in rows
        ]

    def stats(self) -> dict:
        with self._snapshot("read statistics") as conn:
            ok, skipped, seconds = conn.execute(
                "SELECT coalesce(sum(status = 'ok'), 0), coalesce(sum(status = 'skipped'), 0), "
                "coalesce(sum(CASE WHEN status = 'ok' THEN duration_s END), 0.0) FROM files"
            ).fetchone()
            segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
            version = _schema_version(conn)
            model_id, dim, generation = self.model_id, self.dim, self.generation
            n_tags = len(self.tag_names)
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
            "schema_version": version,
            "tag_names": n_tags,  # the size of the tag vocabulary; 0 for models without tags
            "db_bytes": db_bytes,
        }

    def check(self) -> list[str]:
        """Every broken invariant found, as sentences; an empty list means the catalogue is sound.

        Scans the whole file (PRAGMA integrity_check): seconds per GB.
        """
        with self._snapshot("check the catalogue") as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
            checks = dict(INVARIANTS)
            if _schema_version(conn) >= 2:
                checks |= TAG_INVARIANTS
                checks |= TAG_INVARIANTS_V5 if _schema_version(conn) >= 5 else TAG_INVARIANTS_V2
            if _schema_version(conn) >= 4:
                checks |= META_INVARIANTS
            problems += [
                f"{n} {what}" for what, q in checks.items() if (n := conn.execute(q).fetchone()[0])
            ]
            if self.tag_names:
                problems += self._check_tag_summaries(conn)
        return [f"catalogue '{self.path}': {p}" for p in problems]

    def _check_tag_summaries(self, conn: Connection) -> list[str]:
        """Every file's tag summary is `summarise_tags` of its windows' tags, within the
        vocabulary."""
        n_names, wrong, outside = len(self.tag_names), 0, 0
        files = conn.execute("SELECT id, tag_probs FROM files WHERE tag_probs IS NOT NULL")
        for file_id, summary in files.fetchall():
            blobs = [
                row[0]
                for row in conn.execute(
                    "SELECT tag_probs FROM segments WHERE file_id = ? ORDER BY id", (file_id,)
                )
            ]
            try:
                wrong += summarise_tags(blobs) != summary
                outside += bool((decode_tags(summary)["tag"] >= n_names).any())
            except ValueError:
                wrong += 1
        return [f"{n} {what}" for what, n in (
            ("file tag summaries that are not their windows' best", wrong),
            ("files tagged outside the tag vocabulary", outside)) if n]  # fmt: skip


def _meta_of(text: str | None) -> dict | None:
    """A stored metadata record (JSON) → dict; None where never read or unreadable."""
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _schema_version(conn: Connection) -> int:
    return conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


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
