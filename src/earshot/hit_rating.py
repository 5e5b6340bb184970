"""How far a hit can be trusted, and where else in its file the query is heard (`HitRating`, a
part of `earshot.search.Searcher`): a fixed random sample of the catalogue's windows, remade
when the catalogue changes, gives each query's score statistics; a hit's cosine and its z-score
over them give its confidence and band (`earshot.confidence`, the model's calibration for the
kind of search); and a hit's best non-overlapping windows are its spans, with a count of the
further ones that are good.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from earshot.confidence import GOOD, SampleMoments, zscore
from earshot.hits import Hit


class HitRating:
    """`Searcher`'s confidence, bands and spans."""

    def sample(self) -> np.ndarray:
        """A fixed random sample of the catalogue's windows (at most SAMPLE_WINDOWS), remade
        when the catalogue changes: what a query's scores are compared with for confidence."""
        from earshot.confidence import SAMPLE_WINDOWS

        generation = self.cat.generation
        if self._sample is None or self._sample[0] != generation:
            top = self.cat.max_segment_id()
            rng = np.random.default_rng(0)
            ids = (
                np.arange(1, top + 1)
                if top <= SAMPLE_WINDOWS
                else rng.choice(np.arange(1, top + 1), SAMPLE_WINDOWS, replace=False)
            )
            vectors = self.cat.segment_vectors(ids.tolist())
            dim = self.cat.dim or 1
            stacked = np.stack(list(vectors.values())) if vectors else np.zeros((0, dim))
            self._sample = (generation, stacked.astype(np.float32))
        return self._sample[1]

    def _query_stats(self, query: np.ndarray) -> tuple[float, float]:
        """score_stats of `query` over the sample (from its moments), once per search."""
        if self._stats is None or self._stats[0] is not query:
            sample = self.sample()  # remade when the catalogue changed (a subclass's own)
            if self._moments is None or self._moments[0] is not sample:
                self._moments = (sample, SampleMoments(sample))
            self._stats = (query, self._moments[1].stats(query))
        return self._stats[1]

    def _rate(self, hits: list[Hit], query: np.ndarray | None, kind: str) -> list[Hit]:
        """Each hit with its confidence and band: from its cosine and z-score for a vector
        query; a tag search's score is a probability and stands as its confidence."""
        calibration = self.calibrations.get(kind, self.calibrations["text"])
        if query is None:
            return [
                replace(h, confidence=float(h.score), band=calibration.band(float(h.score)))
                for h in hits
            ]
        stats = self._query_stats(query)
        out = []
        for h in hits:
            c = calibration.confidence(h.score, zscore(h.score, stats))
            out.append(replace(h, confidence=c, band=calibration.band(c), similarity=h.score))
        return out

    def _with_spans(
        self, hits: list[Hit], query: np.ndarray, n: int, kind: str, negative
    ) -> list[Hit]:
        """Each hit's best `n` non-overlapping windows (its own first) and how many more of
        them are good."""
        if not hits:
            return hits
        calibration = self.calibrations.get(kind, self.calibrations["text"])
        stats = self._query_stats(query)
        lam = self.negation_weight if negative is not None else 0.0
        windows = self.cat.files_windows([h.file_id for h in hits])
        out = []
        for h in hits:
            rows = windows.get(h.file_id) or []
            if len(rows) <= 1:
                out.append(replace(h, spans=((h.start_s, h.end_s, h.shown_score),), more_spans=0))
                continue
            vectors = np.stack([r[3] for r in rows])
            scores = vectors @ query
            if lam > 0:
                scores = scores - lam * np.maximum(0.0, vectors @ np.asarray(negative, np.float32))
            chosen = [(h.start_s, h.end_s, float(h.shown_score))]
            for i in np.argsort(-scores, kind="stable"):
                start, end = rows[i][1], rows[i][2]
                if any(start < b and a < end for a, b, _ in chosen):
                    continue
                chosen.append((start, end, float(scores[i])))
            good = sum(
                calibration.band(calibration.confidence(s, zscore(s, stats))) == GOOD
                for _, _, s in chosen[n:]
            )
            out.append(replace(h, spans=tuple(chosen[:n]), more_spans=int(good)))
        return out
