"""`earshot index`: scan folders, diff against the catalogue, decode and embed what changed.

Decoding runs in worker processes (soundfile + soxr release nothing to share), the CNN runs in
this process in batches, and each batch of files commits in one SQLite transaction. A kill at
any moment loses at most the batch in flight: files already committed are recognised by size
and mtime on the next run and neither re-decoded nor re-embedded.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earshot.config import AudioConfig
from earshot.errors import AudioDecodeError
from earshot.index.scan import ScanEntry, ScanProblems, scan
from earshot.index.store import Catalogue, CatalogueError, FileRecord

BATCH_FILES = 32  # files per transaction
BATCH_SECONDS = 5.0  # ... or fewer, when they take longer than this to embed
BATCH_WINDOWS = 256  # ... or fewer, to bound memory: 256 windows of 10 s at 32 kHz = 330 MB


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    reused: int = 0  # new paths whose bytes were already indexed: vectors copied, not recomputed
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
            "unchanged": self.unchanged,
            "reused": self.reused,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "problems": self.problems,
            "segments_added": self.segments,
            "seconds": round(self.seconds, 2),
            "files_per_s": round(done / self.seconds, 2) if self.seconds else 0.0,
            "audio_hours_per_hour": round(self.audio_s / self.seconds, 1) if self.seconds else 0.0,
        }


@dataclass
class Decoded:
    entry: ScanEntry
    record: FileRecord | None = None
    windows: np.ndarray | None = None  # (n_windows, window_samples) float32
    spans: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None
    vanished: bool = False


def file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _record(entry: ScanEntry, content_hash: str) -> FileRecord:
    import soundfile as sf

    from earshot.audio.io import probe

    info = probe(entry.path)
    try:
        with sf.SoundFile(entry.path) as f:
            tags = {k: v for k, v in f.copy_metadata().items() if v}
    except Exception:  # metadata is a nicety; the audio itself decoded
        tags = {}
    return FileRecord(
        entry.path,
        entry.size,
        entry.mtime_ns,
        content_hash,
        info.duration_s,
        info.sample_rate,
        info.channels,
        info.format,
        info.subtype,
        tags,
    )


def decode_entry(entry: ScanEntry, audio: AudioConfig, with_windows: bool = True) -> Decoded:
    """Runs in a worker: hash, probe and window one file. Never raises."""
    from earshot.audio.windows import window_file

    try:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        record = _record(entry, file_hash(entry.path))
        if not with_windows:
            return Decoded(entry, record)
        windows = list(window_file(entry.path, audio))
        if not windows:
            return Decoded(entry, error="no audio in the file")
        return Decoded(
            entry,
            record,
            np.stack([w.samples for w in windows]),
            [(w.start_s, w.end_s) for w in windows],
        )
    except AudioDecodeError as e:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        return Decoded(entry, error=e.reason)
    except OSError as e:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        return Decoded(entry, error=f"cannot read it ({e.strerror or e})")


class Indexer:
    def __init__(
        self,
        catalogue: Catalogue,
        model,
        workers: int | None = None,
        batch_size: int = 8,
        precision: str = "fp32",
        progress: bool = True,
    ):
        from earshot.model.io import model_id

        self.cat = catalogue
        self.model = model
        self.audio = model.config.audio
        # One core for the CNN, the rest decode: on 2 cores, one worker.
        cpus = os.cpu_count() or 2
        self.workers = workers if workers is not None else max(1, min(4, cpus - 1))
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress
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

    def run(self, roots: Iterable[str | Path], keep_missing: bool = False) -> IndexSummary:
        start = time.perf_counter()
        summary = IndexSummary()
        roots = [Path(r).expanduser().absolute() for r in roots]
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
        summary.problems = [f"missing: {m}" for m in problems.missing_roots] + [
            f"folder not read: {f} ({why})" for f, why in problems.folders
        ]
        self._process(todo, known, summary)
        if not keep_missing:
            # After the new files: a moved file's old entry is still there to lend its vectors.
            gone = [
                p
                for p in known
                if p not in seen and _under(p, roots) and not _under_unread(p, problems)
            ]
            if gone:
                with self.cat.batch():
                    summary.removed = self.cat.remove_paths(gone)
        summary.seconds = time.perf_counter() - start
        return summary

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
        """Decode short files in worker processes, long ones here (streamed at commit time)."""
        long_files = [e for e in todo if _probably_long(e)]
        short = [e for e in todo if not _probably_long(e)]
        if short and self.workers > 1:
            ctx = multiprocessing.get_context("spawn")  # no forked torch state in workers
            with cf.ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
                in_flight: set[cf.Future] = set()
                entries = iter(short)
                for entry in entries:
                    in_flight.add(pool.submit(decode_entry, entry, self.audio))
                    if len(in_flight) >= 2 * self.workers:
                        done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                        for f in done:
                            yield f.result()
                for f in cf.as_completed(in_flight):
                    yield f.result()
        else:
            for entry in short:
                yield decode_entry(entry, self.audio)
        for entry in long_files:
            yield decode_entry(entry, self.audio, with_windows=False)

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
                    work.append((d, "segments", (segs, tags)))
                except AudioDecodeError as e:
                    work.append((d, None, None))
                    d.error = e.reason
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
            segs = self._segments(d, vectors[span])
            work[i] = (d, "segments", (segs, None if tags is None else tags[span]))
            at += len(d.windows)

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


def _under_unread(path: str, problems: ScanProblems) -> bool:
    # A folder we could not read this time: its files are not gone, only unseen.
    return any(path.startswith(f.rstrip(os.sep) + os.sep) for f, _ in problems.folders)
