"""What `earshot serve` is made of besides HTTP: settings, errors, and the service.

`Service` holds the catalogue, the model, the `Searcher` and the caches, made once at start-up;
its methods answer the routes in `app.py` (searches one at a time under a lock, concurrent
text queries encoded together by `QueryBatcher`). Requests name files by catalogue id only.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from earshot.errors import ApiError, AudioDecodeError
from earshot.serve.batch import QueryBatcher
from earshot.serve.guard import LOOPBACK_NAMES
from earshot.serve.peaks import PeaksCache

# Torch threads while a text query is encoded. One sentence is a few small matrices: a second
# thread buys nothing, and OpenMP workers that spin while another process holds the cores lose
# badly (all-MiniLM-L6-v2 on 2 busy cores: 14 ms per query on 1 thread, 475 ms on 2).
TEXT_THREADS = 1
# Seconds of an upload decoded at a time: how far past the cap its decoding can go.
UPLOAD_BLOCK_S = 5.0
_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Settings:
    """How the server behaves; `earshot serve` fills it from its flags."""

    token: str | None = None  # when set, every route needs it (header, cookie or ?token=)
    max_upload_mb: float = 20.0  # search-by-example uploads, in MiB
    max_upload_s: float = 60.0  # and in seconds of audio (decoded samples, not the header)
    upload_timeout_s: float = 120.0  # the whole upload must arrive within this
    upload_idle_s: float = 15.0  # with no pause longer than this
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES  # None: any Host header
    peaks_cache: int = 512  # waveform thumbnails kept in memory
    max_clip_s: float = 600.0  # the longest span /api/clip cuts
    untrained: bool = False  # the model is random-init: the page says so

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class Service:
    """The catalogue, the model and everything made from them once, at start-up."""

    def __init__(self, catalogue, model, settings: Settings, searcher=None):
        """`searcher`: a `Searcher` already made over `catalogue` (the shards' one,
        `earshot.scale.serve`); None: one is made here."""
        from earshot.model.io import model_id
        from earshot.search import Searcher

        self.cat = catalogue
        self.model = model
        self.settings = settings
        self.searcher = searcher if searcher is not None else Searcher(catalogue, model)
        self.model_id = model_id(model)
        self.lock = threading.Lock()
        self.peaks = PeaksCache(settings.peaks_cache)
        self.started = time.time()
        self.counts = {"search": 0, "similar": 0, "like": 0, "audio": 0, "peaks": 0, "clip": 0}
        self.batcher = QueryBatcher(self._search_batch, max_batch=16)
        self._tag_menu: tuple[int, list] | None = None  # (generation, [(name, files)])

    # -- files ----------------------------------------------------------------------------
    def file(self, raw_id: str) -> dict:
        """The catalogue row of file `raw_id`, or a 404: ids only, no request text is a path."""
        if not _ID.fullmatch(raw_id):
            raise ApiError(404, f"no file with id '{shorten(raw_id)}': ids are whole numbers")
        info = self.cat.file(int(raw_id))
        if info is None:
            raise ApiError(404, f"no file with id {int(raw_id)} in the catalogue")
        return info

    def playable(self, raw_id: str) -> dict:
        info = self.file(raw_id)
        if info["status"] != "ok":
            raise ApiError(
                404, f"file {info['id']} was skipped at indexing: {info.get('skip_reason')}"
            )
        if not os.path.isfile(info["path"]):
            raise ApiError(
                404,
                f"'{info['path']}' is in the catalogue but no longer on disk; "
                "run `earshot index` again to bring the catalogue up to date",
            )
        return info

    # -- searches, one at a time ----------------------------------------------------------
    def search_text(self, text: str, k: int, filters, hybrid: bool | None, **page):
        """A text query (query syntax included); `page`: spans, offset, sort. `hybrid` None:
        `Searcher.hybrid_by_default`."""
        from earshot.search import SearchError

        plan = None
        if hybrid is None and text.strip():
            plan = self.searcher.plan_text(text, filters)  # a syntax error is this request's
            with self.lock:
                hybrid = self.searcher.hybrid_by_default(plan.text)
        if hybrid:  # keyword fusion: one at a time, through the Searcher as it is
            with self.lock, torch_threads(TEXT_THREADS):
                self.counts["search"] += 1
                return self.searcher.search_text(text, k, filters, hybrid=True, **page)
        if not text.strip():
            raise SearchError("empty query: describe the sound you are looking for")
        if plan is None:
            plan = self.searcher.plan_text(text, filters)  # a syntax error is this request's
        if plan.text is None:  # only fields and operators: nothing to encode
            with self.lock:
                self.counts["search"] += 1
                return self.searcher.search_text(text, k, filters, **page)
        return self.batcher.submit((plan, k, page))

    def why_empty(self, hits, filters, text: str | None = None) -> str | None:
        """`Searcher.why_empty`: why an empty first page is empty, where the filters are why."""
        if hits or getattr(hits, "offset", 0):
            return None  # the common case: no lock taken
        with self.lock:
            return self.searcher.why_empty(hits, filters, text)

    def search_tags(self, k: int, filters, **page):
        """No text, only tags: the files having them, likeliest first."""
        with self.lock:
            self.counts["search"] += 1
            return self.searcher.search_tags((), k, filters, **page)

    def tag_menu(self) -> list[tuple[str, int]]:
        """[(tag name, files having it at >= 0.3)], most files first; made once per catalogue
        generation (it reads every file's tag summary)."""
        generation = self.cat.generation
        if self._tag_menu is None or self._tag_menu[0] != generation:
            with self.lock:
                self._tag_menu = (generation, self.cat.tag_file_counts())
        return self._tag_menu[1]

    def _search_batch(self, queries: list[tuple[Any, int, dict]]) -> list:
        """Encode the texts of concurrent queries in one call, then search each."""
        with self.lock, torch_threads(TEXT_THREADS):
            self.counts["search"] += len(queries)
            texts = [t for plan, _, _ in queries for t in (plan.text, plan.negative) if t]
            vectors = iter(np.asarray(self.model.encode_text(texts)))
            out: list = []
            for plan, k, page in queries:
                vector = next(vectors)
                negative = next(vectors) if plan.negative else None
                try:
                    out.append(
                        self.searcher.search_vector(
                            vector, k, plan.filters, negative=negative, **page
                        )
                    )
                except Exception as e:  # this query's problem, not the others'
                    out.append(e)
            return out

    def similar(self, info: dict, segment_id: int | None, k: int, filters, **page):
        file_id = info["id"]
        with self.lock:
            self.counts["similar"] += 1
            if segment_id is not None:
                row = self.cat.segments([segment_id]).get(segment_id)
                if row is None or row.file_id != file_id:
                    raise ApiError(404, f"file {file_id} has no segment {segment_id}")
                return self.searcher.search_like_segment(segment_id, k, filters, **page)
            segments = self.cat.file_segments(file_id)
            if not segments:
                raise ApiError(404, f"file {file_id} has no indexed audio to compare")
            mean = np.mean([self.cat.segment_vector(s.segment_id) for s in segments], axis=0)
            query = mean / max(float(np.linalg.norm(mean)), 1e-12)
            return self.searcher.search_vector(
                query, k, filters, exclude_file=file_id, kind="example", **page
            )

    def like_upload(self, path: str, name: str, k: int, start, end, filters, **page):
        """Search by an uploaded example. Its length is capped in decoded samples, not by what
        its header says (an ADTS AAC header's duration is a guess from the first frames'
        bitrate: a 1 MB file probed as 38 s held 30 minutes); decoding stops at the cap."""
        from earshot.audio.io import probe
        from earshot.search import SearchError

        try:
            info = probe(path)
        except AudioDecodeError as e:
            raise ApiError(422, f"'{name}' is not a sound earshot can read: {e.reason}") from None
        limit = self.settings.max_upload_s
        if info.duration_s > limit:  # an honest header: refused before decoding a sample
            raise ApiError(
                413,
                f"'{name}' is {info.duration_s:.1f} s long; examples are limited to {limit:g} s "
                "(earshot serve --max-upload-s): trim it to the part you mean",
            )
        samples = self._decode_capped(path, name, limit)  # outside the lock: searches go on
        rate = self.model.config.audio.sample_rate
        with self.lock:
            self.counts["like"] += 1
            try:
                query = self.searcher.embed_samples(samples, start, end, f"'{name}'")
            except SearchError as e:
                raise ApiError(400, str(e).replace(path, name)) from None
            hits = self.searcher.search_vector(query, k, filters, kind="example", **page)
            return hits, len(samples) / rate

    def _decode_capped(self, path: str, name: str, limit: float) -> np.ndarray:
        """The upload's samples at the model's rate; 413 as soon as they pass `limit` seconds,
        so memory stays within the cap and one block whatever the file holds."""
        from earshot.audio.io import stream

        rate = self.model.config.audio.sample_rate
        # A little slack for resampling's rounding: a file of exactly `limit` s is taken.
        cap = int(limit * rate) + rate // 100
        blocks: list[np.ndarray] = []
        total = 0
        try:
            for block in stream(path, rate, block_s=UPLOAD_BLOCK_S):
                total += len(block)
                if total > cap:
                    raise ApiError(
                        413,
                        f"'{name}' holds more than {limit:g} s of audio (its header said "
                        f"less); examples are limited to {limit:g} s (earshot serve "
                        "--max-upload-s): trim it to the part you mean",
                    )
                blocks.append(block)
        except AudioDecodeError as e:
            raise ApiError(422, f"'{name}' is not a sound earshot can read: {e.reason}") from None
        if not blocks:
            return np.zeros(0, dtype=np.float32)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch threads (callers hold the service lock)."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def shorten(text: str, n: int = 80) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= n else text[: n - 1] + "…"
