"""Hybrid search: the sound ranking fused with keyword matches on file names, embedded
metadata and sound tags by reciprocal-rank fusion (`HybridSearch`, a part of
`earshot.search.Searcher`: it reads the searcher's catalogue and rates through its `_rate`),
and when a search is hybrid without being told (`hybrid_by_default`). A file whose own name or
embedded description holds every word of the query is rated good whatever its sound, and
says so (`Hit.by_name`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from earshot.confidence import GOOD
from earshot.filters import Filters
from earshot.hits import Hit, with_meta
from earshot.index.keyword_text import matching_tags, query_terms

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)


class HybridSearch:
    """`Searcher`'s keyword fusion."""

    def hybrid_by_default(self, text: str | None) -> bool:
        """Whether a search for `text` (its description, after the query syntax) fuses keyword
        matches when not told: where the catalogue holds embedded descriptions, or where one
        of the query's words picks files out by name: some file's name or folders hold it, and
        at most half of them do (a word in every name, "take" or "track", or in the library's
        own folder, picks nothing out). Where only the sound tags would match the words, fusing
        costs a little (bench/bench_hybrid.py, README), so then it is off. Cached per catalogue
        generation: paging and sorting ask again (bench/bench_index.py's search part measures
        the uncached cost)."""
        generation = self.cat.generation
        key = (text or "", generation)
        if key not in self._hybrid_cache:
            if self._files is None or self._files[0] != generation:
                self._files = (generation, self.cat.has_described_files(), self.cat.ok_file_count())
            _, described, total = self._files
            if len(self._hybrid_cache) >= 256:
                self._hybrid_cache.pop(next(iter(self._hybrid_cache)))
            if described or not text:
                self._hybrid_cache[key] = described
            else:  # counted up to one past half: a word in more paths than that picks nothing
                counts = self.cat.path_word_counts(text, cap=total // 2 + 1)
                self._hybrid_cache[key] = any(0 < 2 * n <= total for n in counts.values())
        return self._hybrid_cache[key]

    def _fuse(
        self, text: str, query: np.ndarray, vector_hits: list[Hit], k: int, filters: Filters | None
    ) -> list[Hit]:
        """Reciprocal-rank fusion of the vector ranking and FTS5 matches on names and tags.
        Each hit keeps the confidence of its best window's cosine."""
        keyword = [fid for fid, _ in self.cat.keyword_search(text, limit=50)]
        if filters is not None and filters.active():
            allowed = self._allowed(filters)
            keyword = [
                f
                for f in keyword
                if np.isin([seg.segment_id for seg in self.cat.file_segments(f)], allowed).any()
            ]
        fused: dict[int, float] = {}
        for rank, hit in enumerate(vector_hits, 1):
            fused[hit.file_id] = fused.get(hit.file_id, 0.0) + 1.0 / (RRF_K + rank)
        for rank, fid in enumerate(keyword, 1):
            fused[fid] = fused.get(fid, 0.0) + 1.0 / (RRF_K + rank)
        by_file = {h.file_id: h for h in vector_hits}
        ranked = sorted(fused.items(), key=lambda t: -t[1])[:k]
        named = self._named_by_every_word(text, [fid for fid, _ in ranked])
        good = self.calibrations["text"]
        out = []
        for rank, (fid, score) in enumerate(ranked, 1):
            hit = by_file.get(fid) or self._rate([self._best_window(fid, query)], query, "text")[0]
            if fid in named and hit.band != GOOD:
                # Its own name or description says what was asked: a good match whatever
                # the sound score (which is all the calibration knows).
                hit = replace(
                    hit,
                    confidence=max(hit.confidence or 0.0, good.good),
                    band=GOOD,
                    by_name=True,
                )
            out.append(replace(hit, rank=rank, score=score))
        tags = self.cat.segment_tags([h.segment_id for h in out if not h.tags])
        for i, h in enumerate(out):
            if h.segment_id in tags:
                h = replace(h, tags=tuple(tags[h.segment_id]))
            named = matching_tags(text, [name for name, _ in h.tags])
            out[i] = replace(h, matched_tags=named) if named else h
        return with_meta(self.cat, out)

    def _named_by_every_word(self, text: str, file_ids: list[int]) -> set[int]:
        """Those of `file_ids` whose name or embedded metadata holds every content word of
        `text` (FTS5, case and accents ignored; a word of 3+ letters also as a prefix, from its
        `keyword_text.stem`: "footsteps" is in "footstep_gravel")."""
        words = query_terms(text)
        if not words or not file_ids:
            return set()
        found = self.cat.file_ids_matching_keywords(words, columns=("name", "meta"))
        return set(int(f) for f in np.intersect1d(found, np.asarray(file_ids, dtype=np.int64)))

    def _best_window(self, file_id: int, query: np.ndarray) -> Hit:
        segments = self.cat.file_segments(file_id)
        scores = [float(self.cat.segment_vector(s.segment_id) @ query) for s in segments]
        best = int(np.argmax(scores))
        s = segments[best]
        return Hit(
            0,
            s.path,
            s.start_s,
            s.end_s,
            scores[best],
            file_id,
            s.segment_id,
            s.duration_s,
            s.format,
        )
