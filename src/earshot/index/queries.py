"""The catalogue's read side: the queries behind the indexer's diff, search and reports.

`CatalogueQueries` is a mixin of `store.Catalogue`, which supplies the connection (`_use`,
`_snapshot`), the model binding and everything that writes; nothing here changes the file. The
ANN index's bulk read, `Catalogue.vectors`, stays in `store.py` beside its chunk size; the reads
that narrow a search (filters, keywords, tags) are its base, `filter_queries.FilterQueries`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from sqlite3 import Connection

import numpy as np

from earshot.errors import CatalogueError
from earshot.index.filter_queries import _IN_CHUNK, FilterQueries
from earshot.index.keyword_text import content_words, fts_query
from earshot.index.schema import (
    FILE_TAGS,
    INVARIANTS,
    META_INVARIANTS,
    SEGMENT_SELECT,
    TAG_INVARIANTS,
    TAG_INVARIANTS_V2,
    TAG_INVARIANTS_V5,
    FileState,
    SegmentRow,
)
from earshot.index.tag_blobs import decode_tags, summarise_tags


class CatalogueQueries(FilterQueries):
    """Reads of an open catalogue; mixed into `Catalogue`, which provides what `FilterQueries`
    declares."""

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
