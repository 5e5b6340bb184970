"""What a search returns: `Hit` (a file, the window that matched, its tags, confidence and
spans), `Results` (a page of them and what is known of the rest), and the weak tail folded
(`trim_weak`); `Hit.as_dict` is the one JSON form the CLI, the API and the page share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from earshot.confidence import GOOD

if TYPE_CHECKING:
    from earshot.index.store import Catalogue


@dataclass(frozen=True)
class Hit:
    rank: int
    path: str
    start_s: float  # the best-matching window
    end_s: float
    score: float  # what ranks: that window's cosine (hybrid: the fused score; tags: probability)
    file_id: int
    segment_id: int
    duration_s: float
    format: str
    # That window's sound tags, (name, probability) best first; () for untagged catalogues.
    tags: tuple[tuple[str, float], ...] = field(default=())
    # The file's embedded metadata (description, title, keywords, ucs...; Catalogue.file_meta),
    # None where it has none.
    meta: dict | None = field(default=None, compare=False, hash=False)
    # How far the hit can be trusted (earshot.confidence): 0-1, and its band: good/weak/none.
    confidence: float | None = None
    band: str | None = None
    # The file's best non-overlapping windows, best first, (start_s, end_s, score); the first
    # is start_s/end_s. () = that one only. more_spans: further windows banded good.
    spans: tuple[tuple[float, float, float], ...] = field(default=())
    more_spans: int = 0
    also_at: tuple[str, ...] = field(default=())  # byte-identical files grouped into this hit
    sample_rate: int | None = None
    channels: int | None = None
    mtime_ns: int | None = None  # the file's, when indexed: the date sort's key
    # The best window's cosine (less any negation penalty: what the confidence is rated on),
    # whatever `score` ranks by: in a hybrid search the fused score. None for a tag search.
    similarity: float | None = None
    # Rated good only because its own name or embedded description holds every word of the
    # query (a hybrid search): by its sound alone (`similarity`) it would be weak or none.
    by_name: bool = False
    # Those of `tags` that the query's words name (a hybrid search: its keyword side matched
    # them), so a hit found through its tags shows which.
    matched_tags: tuple[str, ...] = field(default=())

    @property
    def shown_score(self) -> float:
        """The number a person reads beside the hit: its similarity, else (a tag search)
        its score, the tag's probability."""
        return self.score if self.similarity is None else self.similarity

    def as_dict(self) -> dict:
        """The hit as JSON gives it, the same in `earshot search --json`, the HTTP API and the
        web page: times in seconds to the millisecond, the score to 6 digits."""
        folder, name = os.path.split(self.path)
        spans = self.spans or ((self.start_s, self.end_s, self.shown_score),)
        return {
            "rank": self.rank,
            "file_id": self.file_id,
            "segment_id": self.segment_id,
            "name": name,
            "folder": folder,
            "path": self.path,
            "start": round(self.start_s, 3),
            "end": round(self.end_s, 3),
            "duration": round(self.duration_s, 3),
            "score": round(float(self.score), 6),
            "similarity": None if self.similarity is None else round(float(self.similarity), 6),
            "format": self.format,
            "tags": tags_json(self.tags),
            "meta": self.meta or None,
            "confidence": None if self.confidence is None else round(float(self.confidence), 3),
            "band": self.band,
            "by_name": self.by_name,
            "matched_tags": list(self.matched_tags),
            "spans": [
                {"start": round(a, 3), "end": round(b, 3), "score": round(float(c), 6)}
                for a, b, c in spans
            ],
            "more_spans": int(self.more_spans),
            "also_at": list(self.also_at),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }


# What a weak search by example suggests instead (the user has just given an example).
EXAMPLE_HINT = "try another example, or words"


class Results(list):
    """The hits of one search (a list, best first, or in the order `sort` asked for), and what
    is known about the rest: `offset` (hits passed over), `more` (further hits exist),
    `total_estimate` (files ranked: a lower bound when sorted by score, the whole relevant set
    when sorted otherwise)."""

    offset: int = 0
    more: bool = False
    total_estimate: int = 0
    hybrid: bool = False  # fused with keyword matches: `score` is then a reciprocal-rank sum
    sort: str = "score"  # the order the hits are in (Searcher's `sort`)

    @classmethod
    def of(cls, hits, offset: int = 0, more: bool = False, total: int | None = None) -> Results:
        out = cls(hits)
        out.offset, out.more = offset, more
        out.total_estimate = len(hits) + offset if total is None else total
        return out

    def best_band(self) -> str | None:
        """The band of the most confident hit (None: no hits or no confidence)."""
        rated = [h for h in self if h.confidence is not None]
        if not rated:
            return None
        return max(rated, key=lambda h: h.confidence).band

    def message(
        self,
        query: str | None,
        hint: str = "try other words or search by example",
        reason: str | None = None,
    ):
        """A plain sentence when nothing matches well, else None. `reason`: why nothing
        matched, where that is known (`Searcher.why_empty`)."""
        shown = f' for "{query}"' if query else ""
        if not self:
            if self.offset:
                return None
            return f"no match{shown}: {reason}" if reason else f"no match{shown}"
        rated = [h for h in self if h.confidence is not None]
        if not rated or self.offset:
            return None
        best = max(rated, key=lambda h: h.confidence)
        if best.band == GOOD:
            return None
        return f"no good match{shown}: the best is {best.band} ({best.confidence:.2f}); {hint}"


def trim_weak(hits: list) -> list:
    """Hits without the weak tail: where some hit is good, those up to the last good one, so
    a list ranked by score keeps its ranks 1, 2, 3... (a weak hit ranked above a good one, as
    fusing keyword matches can rank it, stays, marked); in a list sorted otherwise (`sort`
    name, duration, date), only the good ones. Where none is good, all of them (marked), so a
    poor query still shows its best candidates."""
    good = [i for i, h in enumerate(hits) if h.band == GOOD]
    if not good or len(good) == len(hits):
        return hits
    if getattr(hits, "sort", "score") == "score":
        kept = list(hits[: good[-1] + 1])
    else:
        kept = [hits[i] for i in good]
    if len(kept) == len(hits):
        return hits
    out = Results.of(kept, getattr(hits, "offset", 0), getattr(hits, "more", False))
    out.total_estimate = getattr(hits, "total_estimate", len(kept))
    out.hybrid = getattr(hits, "hybrid", False)
    out.sort = getattr(hits, "sort", "score")
    return out


def with_meta(catalogue: Catalogue, hits: list[Hit]) -> list[Hit]:
    """`hits` with their files' embedded metadata (one query for all of them)."""
    found = catalogue.file_meta([h.file_id for h in hits])
    return [replace(h, meta=found.get(h.file_id)) for h in hits]


def tags_json(tags: Sequence[tuple[str, float]]) -> list[dict]:
    """A hit's tags as JSON gives them: [{"name": "Dog", "p": 0.93}, ...]."""
    return [{"name": name, "p": round(float(p), 3)} for name, p in tags]
