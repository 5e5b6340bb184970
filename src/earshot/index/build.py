"""`earshot index`: scan folders, diff against the catalogue, decode and embed what changed.

Decoding runs in worker processes (soundfile + soxr release nothing to share), or in this one
where there are 2 cores or fewer (earshot.index.journal: a codec crash there ends the run, and
the next run skips that file); the CNN runs in this process in batches, and each batch of files
commits in one SQLite transaction. A kill at any moment loses at most the batch in flight:
files already committed are recognised by size and mtime on the next run and neither
re-decoded nor re-embedded. The workers die with this
process, however it ends (`decoding.worker_init`); decoding one file is `index/decoding.py`, the
worker pools and their crash retries `index/decode_pool.py`.

Whatever one file does (a bad name, a pipe, a corrupt header, absurd samples, vectors the model
makes NaN of, an exception nobody foresaw, a decoder crash that takes its worker down), it is
skipped with a reason and the files beside it are indexed: nothing per file fails a batch.

A root that is not there (an unplugged drive), or a root folder that is empty while the
catalogue has files under it (an unmounted mount point), is reported "unavailable" and its
catalogue entries are kept; `prune=True` (`earshot index --prune`) removes them instead.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earshot.errors import AudioDecodeError
from earshot.fsutil import absolute
from earshot.index import decoding
from earshot.index.decode_pool import decode_in_workers, pool_pass
from earshot.index.decoding import Decoded, decoded_length, embedded_metadata, unexpected
from earshot.index.journal import CRASHED_HERE, DecodeJournal, decode_fully
from earshot.index.scan import ScanEntry, ScanProblems, scan, shown
from earshot.index.store import Catalogue, CatalogueError
from earshot.index.writelock import WAIT_S, index_lock

BATCH_FILES = 32  # files per transaction
BATCH_SECONDS = 5.0  # ... or fewer, when they take longer than this to embed
BATCH_WINDOWS = 256  # ... or fewer, to bound memory: 256 windows of 10 s at 32 kHz = 330 MB
_META_BATCH = 256  # files per transaction when only their metadata is read


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    # entries an older earshot stored under a dotted spelling of a file now seen under its one
    # spelling: folded into it (not counted in `removed`: the file is still there)
    respelled: int = 0
    unchanged: int = 0
    reused: int = 0  # new paths whose bytes were already indexed: vectors copied, not recomputed
    metadata_read: int = 0  # unchanged files whose embedded metadata was read (schema upgrade)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    problems: list[str] = field(default_factory=list)  # folders not read, roots missing
    segments: int = 0
    seconds: float = 0.0
    audio_s: float = 0.0

    def as_dict(self) -> dict:
        done = self.added + self.updated
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "respelled": self.respelled,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "metadata_read": self.metadata_read,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "problems": self.problems,
            "segments_added": self.segments,
            "seconds": round(self.seconds, 2),
            "files_per_s": round(done / self.seconds, 2) if self.seconds else 0.0,
            "audio_hours_per_hour": round(self.audio_s / self.seconds, 1) if self.seconds else 0.0,
        }


NOT_FINITE = (
    "the model's vectors for it are not finite (NaN or infinite): its samples are out of the "
    "model's range; re-export it normalised"
)


def _finite(*arrays: np.ndarray | None) -> bool:
    return all(a is None or bool(np.isfinite(a).all()) for a in arrays)


class Indexer:
    def __init__(
        self,
        catalogue: Catalogue,
        model,
        workers: int | None = None,
        batch_size: int = 8,
        precision: str = "fp32",
        progress: bool = True,
        lock_wait_s: float = WAIT_S,
    ):
        """`workers`: decoding processes, where a decoder crash (a segfault in a codec
        library) costs its file, not the run; 0 decodes in this process, where it ends the run
        and the next run skips the file (earshot.index.journal). Default: cores - 1, at most 4,
        and 0 on 2 cores or fewer, where one worker is slower than none (bench_index, README).
        `lock_wait_s`: how long `run` waits for another process indexing into the same
        catalogue before it raises `IndexLocked` (earshot.index.writelock)."""
        from earshot.model.io import model_id

        if workers is not None and (isinstance(workers, bool) or workers < 0):
            raise ValueError(f"workers must be 0 or more, not {workers!r}")
        self.cat = catalogue
        self.model = model
        self.audio = model.config.audio
        # One core for the CNN, the rest decode; on 2 cores the CNN's two threads use both and
        # shipping each file's samples back from a worker costs more than it frees.
        cpus = os.cpu_count() or 2
        self.workers = workers if workers is not None else (min(4, cpus - 1) if cpus > 2 else 0)
        self._journal = DecodeJournal(catalogue.path)
        self._suspect: str | None = None
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress
        self.lock_wait_s = lock_wait_s
        self.cat.bind_model(
            model_id(model),
            model.config.joint_dim,
            # `path` lets `earshot search` find the model that indexed the catalogue.
            {
                "encoder": model.config.encoder.name,
                "config": model.config.to_dict(),
                "path": getattr(model, "source", None),
            },
            tag_names=getattr(model, "tag_names", ()),
        )

    def run(
        self, roots: Iterable[str | Path], keep_missing: bool = False, prune: bool = False
    ) -> IndexSummary:
        """Index `roots` (files or folders, recursively) and drop the catalogue's files under
        them that are gone, unless `keep_missing`. Files under an unavailable root (missing,
        or an empty folder where the catalogue has files) are kept unless `prune`."""
        if keep_missing and prune:
            raise ValueError("keep_missing and prune contradict each other")
        # Held from before the catalogue's file states are read until the last write: a
        # second indexer would otherwise embed every file this one is embedding (issue #19).
        with index_lock(self.cat.path, self.lock_wait_s):
            self._suspect = self._journal.left_by_last_run()
            try:
                return self._run(roots, keep_missing, prune)
            finally:
                self._journal.close()

    def _run(self, roots: Iterable[str | Path], keep_missing: bool, prune: bool) -> IndexSummary:
        start = time.perf_counter()
        summary = IndexSummary()
        roots = [Path(absolute(r)) for r in roots]
        problems = ScanProblems()
        known = self.cat.file_states()
        todo: list[ScanEntry] = []
        seen: set[str] = set()
        for entry in scan(roots, problems):
            seen.add(entry.path)
            state = known.get(entry.path)
            if state and state.size == entry.size and state.mtime_ns == entry.mtime_ns:
                summary.unchanged += 1
            else:
                todo.append(entry)
        # Audio names that are not files (pipes, devices, broken links): recorded as skipped
        # without being opened, so `earshot skipped` lists them until they are fixed or gone.
        refused = []
        for entry, why in problems.not_files:
            seen.add(entry.path)
            state = known.get(entry.path)
            now = (entry.size, entry.mtime_ns)
            if state and state.status == "skipped" and (state.size, state.mtime_ns) == now:
                summary.unchanged += 1
            else:
                refused.append((entry, why))
        unavailable = [(r, why) for r, why in problems.missing_roots] + [
            (r, "an empty folder where the catalogue has files: an unmounted drive?")
            for r in problems.empty_roots
            if any(_under(p, [Path(r)]) for p in known)
        ]
        kept = "removed (--prune)" if prune else "kept in the catalogue; --prune removes them"
        summary.problems = [  # shown(): printable even where a name is not UTF-8
            *(f"unavailable: {shown(r)} ({why}); its files are {kept}" for r, why in unavailable),
            *(f"folder not read: {shown(f)} ({why})" for f, why in problems.folders),
            *(f"ignored: {shown(r)} (not an audio file name)" for r in problems.ignored),
        ]
        summary.skipped.extend(problems.files)
        if refused:
            with self.cat.batch():
                for entry, why in refused:
                    self.cat.put_skipped(entry.path, entry.size, entry.mtime_ns, why)
                    summary.skipped.append((entry.path, why))
        self._process(todo, known, summary)
        self._read_missing_metadata(seen, {e.path for e in todo}, summary)
        if not keep_missing:
            # After the new files: a moved file's old entry is still there to lend its vectors.
            away = [Path(r) for r, _ in unavailable] if not prune else []
            gone = [
                p
                for p in known
                if p not in seen
                and _under(p, roots)
                and not _under_unread(p, problems)
                and not _under(p, away)
            ]
            # Entries an older earshot stored under a spelling with `..` or `.` in it (it did
            # not take them out): the same files, seen above under their one spelling now.
            # Those whose one spelling was seen are folded into it (the file is there); the
            # others' files are gone.
            respelled = [p for p in known if p not in seen and _respelled(p, seen, roots)]
            folded = {p for p in respelled if absolute(p) in seen}
            gone = [p for p in dict.fromkeys([*gone, *respelled]) if p not in folded]
            if gone or folded:
                with self.cat.batch():
                    summary.removed = self.cat.remove_paths(gone)
                    summary.respelled = self.cat.remove_paths(folded)
        summary.seconds = time.perf_counter() - start
        return summary

    def _read_missing_metadata(self, seen: set[str], done: set[str], summary: IndexSummary) -> None:
        """Read the embedded metadata of unchanged files that never had it read (indexed
        before schema v4): their headers only, no decoding, no embedding; committed in
        batches, so an interrupted run keeps what it read."""
        missing = [(p, fid) for p, fid in self.cat.files_without_meta().items()
                   if p in seen and p not in done and os.path.isfile(p)]  # fmt: skip
        for at in range(0, len(missing), _META_BATCH):
            chunk = [(fid, embedded_metadata(p)) for p, fid in missing[at : at + _META_BATCH]]
            with self.cat.batch():
                for fid, meta in chunk:
                    self.cat.set_meta(fid, meta)
            summary.metadata_read += len(chunk)

    def _process(self, todo: list[ScanEntry], known: dict, summary: IndexSummary) -> None:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo),
            unit="file",
            desc="indexing",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        pending: list[Decoded] = []
        windows = 0
        last_commit = time.perf_counter()
        try:
            for decoded in self._decoded(todo):
                pending.append(decoded)
                windows += 0 if decoded.windows is None else len(decoded.windows)
                bar.update(1)
                if (
                    len(pending) >= BATCH_FILES
                    or windows >= BATCH_WINDOWS
                    or time.perf_counter() - last_commit > BATCH_SECONDS
                ):
                    self._commit(pending, known, summary)
                    pending, windows, last_commit = [], 0, time.perf_counter()
            if pending:
                self._commit(pending, known, summary)
        finally:
            bar.close()

    def _decoded(self, todo: list[ScanEntry]) -> Iterator[Decoded]:
        """Decode short files in worker processes (or here, with `workers=0`), long ones here
        (streamed at commit time). What is decoded here is named in the journal first; the file
        an earlier run left there is first decoded alone, in a pool of one worker."""
        suspect = next((e for e in todo if e.path == self._suspect), None)
        if suspect is not None:
            todo = [e for e in todo if e is not suspect]
            # whole, as a long file is streamed (the crash may come late); then streamed here
            if (yield from pool_pass(deque([suspect]), self.audio, 1, 1, decode_fully)):
                yield Decoded(suspect, error=CRASHED_HERE)
        long_files = [e for e in todo if _probably_long(e)]
        short = [e for e in todo if not _probably_long(e)]
        if short and self.workers > 0:
            yield from decode_in_workers(short, self.audio, self.workers)
        else:
            for entry in short:
                self._journal.decoding(entry.path)
                yield decoding.decode_entry(entry, self.audio)
        for entry in long_files:
            self._journal.decoding(entry.path)
            yield decoding.decode_entry(entry, self.audio, with_windows=False)

    def _commit(self, batch: list[Decoded], known: dict, summary: IndexSummary) -> None:
        from earshot.embed import embed_windows

        # Embed before the transaction opens, so the write lock is held only for the writes.
        # A "segments" payload is (segments, their tag probabilities or None).
        work = []
        for d in batch:
            if d.vanished:
                continue
            if d.error is not None:
                work.append((d, None, None))
                continue
            reuse = self.cat.find_by_hash(d.record.content_hash)
            if reuse is not None:
                work.append((d, "reuse", reuse))
            elif d.windows is not None:
                work.append((d, "segments", None))  # embedded below, with the other files
            else:  # a long file: stream it window by window
                from earshot.audio.windows import window_file

                self._journal.decoding(d.entry.path)
                try:
                    embedded = list(
                        embed_windows(
                            self.model,
                            window_file(d.entry.path, self.audio),
                            self.batch_size,
                            self.precision,
                        )
                    )
                    segs = [(w.start_s, w.end_s, w.vector) for w in embedded]
                    tagged = embedded and embedded[0].tags is not None
                    tags = np.stack([w.tags for w in embedded]) if tagged else None
                    if not embedded:
                        d.error = "no audio in the file"
                    elif not _finite(np.stack([v for *_, v in segs]), tags):
                        d.error = NOT_FINITE
                    if d.error is None:
                        d.record = decoded_length(d.record, embedded[-1].end_s)
                        work.append((d, "segments", (segs, tags)))
                    else:
                        work.append((d, None, None))
                except AudioDecodeError as e:
                    work.append((d, None, None))
                    d.error = e.reason
                except Exception as e:  # per file: never the batch
                    work.append((d, None, None))
                    d.error = unexpected(e)
        self._embed_short_files(work)
        self._write(work, known, summary)

    def _write(self, work: list, known: dict, summary: IndexSummary) -> None:
        with self.cat.batch():
            for d, kind, payload in work:
                was_known = d.entry.path in known
                if kind is None:
                    self.cat.put_skipped(d.entry.path, d.entry.size, d.entry.mtime_ns, d.error)
                    summary.skipped.append((d.entry.path, d.error))
                    continue
                if kind == "reuse" and self._copy(payload, d):
                    summary.reused += 1
                elif kind == "reuse":  # its source changed earlier in this batch: embed it
                    vectors, tags = self._encode(d.windows)
                    if not _finite(vectors, tags):
                        d.error = NOT_FINITE
                        self.cat.put_skipped(d.entry.path, d.entry.size, d.entry.mtime_ns, d.error)
                        summary.skipped.append((d.entry.path, d.error))
                        continue
                    segs = self._segments(d, vectors)
                    self.cat.put_file(d.record, segs, tags)
                    summary.segments += len(segs)
                else:
                    segs, tags = payload
                    self.cat.put_file(d.record, segs, tags)
                    summary.segments += len(segs)
                summary.audio_s += d.record.duration_s
                if was_known and known[d.entry.path].status == "ok":
                    summary.updated += 1
                else:
                    summary.added += 1

    def _embed_short_files(self, work: list) -> None:
        """One CNN pass over every window of the batch's short files: small files fill batches."""
        todo = [
            i for i, (_, kind, payload) in enumerate(work) if kind == "segments" and payload is None
        ]
        if not todo:
            return
        vectors, tags = self._encode(np.concatenate([work[i][0].windows for i in todo]))
        at = 0
        for i in todo:
            d = work[i][0]
            span = slice(at, at + len(d.windows))
            at += len(d.windows)
            file_tags = None if tags is None else tags[span]
            if not _finite(vectors[span], file_tags):  # this file only: the rest are written
                d.error = NOT_FINITE
                work[i] = (d, None, None)
                continue
            segs = self._segments(d, vectors[span])
            work[i] = (d, "segments", (segs, file_tags))

    def _encode(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors and, from a model that tags windows, their tag probabilities (else None)."""
        from earshot.embed import encode_windows

        return encode_windows(self.model, waves, self.batch_size, self.precision)

    @staticmethod
    def _segments(d: Decoded, vectors: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
        return [(s, e, v) for (s, e), v in zip(d.spans, vectors, strict=True)]

    def _copy(self, source_id: int, d: Decoded) -> bool:
        try:
            self.cat.copy_segments(source_id, d.record)
            return True
        except CatalogueError:
            if d.windows is None:
                raise
            return False


def _probably_long(entry: ScanEntry) -> bool:
    # Uncompressed 48 kHz stereo 16-bit is ~11.5 MB a minute; compressed is smaller. Above
    # ~100 MB a file is streamed here rather than handed whole to a worker.
    return entry.size > 100 * 2**20


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def _respelled(path: str, seen: set[str], roots: list[Path]) -> bool:
    """Whether `path` is a catalogue entry's spelling with `.` or `..` in it whose one spelling
    (`fsutil.absolute`) was seen in this scan, or is under its roots and so gone."""
    if os.sep + "." not in path and os.sep * 2 not in path:
        return False
    one = absolute(path)
    return one != path and (one in seen or (_under(one, roots) and not os.path.lexists(one)))


def _under_unread(path: str, problems: ScanProblems) -> bool:
    # A folder we could not read this time: its files are not gone, only unseen.
    return any(path.startswith(f.rstrip(os.sep) + os.sep) for f, _ in problems.folders)
