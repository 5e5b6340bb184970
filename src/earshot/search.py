"""Search a catalogue by text or by example: ANN over windows, ranked per file by its best window.

The ANN returns segments; results are files, each with the window that matched best, so a
two-hour recording appears once, at the minute that fits the query. Catalogues indexed by a
tagging model also hold each window's top sound tags: hits carry their window's, and a tag
filter keeps the files where some window has every tag asked for.

`Searcher` is assembled from parts, each in its own module: search by example
(`earshot.example_search`), keyword fusion (`earshot.hybrid_search`), search by tags alone
(`earshot.tag_search`) and each hit's confidence and spans (`earshot.hit_rating`); the query
planning, the vector search and paging are here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from earshot.confidence import GOOD, WEAK, Calibration, SampleMoments, load_calibrations
from earshot.errors import SearchError
from earshot.example_search import ExampleSearch
from earshot.filters import Filters, file_filters
from earshot.hit_rating import HitRating
from earshot.hits import Hit, Results, with_meta
from earshot.hybrid_search import RRF_K, HybridSearch
from earshot.index.store import Catalogue
from earshot.query_syntax import ParsedQuery, parse_query
from earshot.tag_search import SORT_CAP, TagSearch, page_cap

SORTS = ("score", "name", "duration", "date")
# Each other sort's key within a band (ties: the path): name A-Z, shortest first, newest first.
_SORT_KEYS = {
    "name": lambda h: os.path.basename(h.path).casefold(),
    "duration": lambda h: h.duration_s,
    "date": lambda h: -(h.mtime_ns or 0),
}
MAX_SPANS = 20
MAX_ALSO_AT = 50  # copies listed in a hit's also_at (the first indexed ones)
# Semantic negation ("dogs, no people"): the negated part is split off (the description is
# encoded without it) and a window's score loses this times its positive cosine to it; 0 turns
# both off. bench/bench_confidence.py --negation: on two-clip mixtures of urban sounds, "A, no B"
# found clips with A and not B at mAP@10 0.41 (general) / 0.34 (compact) as typed, 0.85 / 0.64
# split (lambda 0), 0.86 / 0.64 at 0.25 (the weight val chose; test differences of 0.01 or less).
NEGATION_WEIGHT = 0.25


def ann_path_for(catalogue: Catalogue) -> Path:
    return catalogue.path.with_name(catalogue.path.name + ".ann")


@dataclass(frozen=True)
class TextPlan:
    """What a text query asks, read by the query syntax: the description to encode (None: no
    description, only keyword operators or fields), the negated part when semantic negation is
    on, and the filters, merged with the caller's."""

    text: str | None
    negative: str | None
    filters: Filters
    parsed: ParsedQuery


class Searcher(HybridSearch, ExampleSearch, TagSearch, HitRating):
    def __init__(self, catalogue: Catalogue, model):
        from earshot.model.io import model_id

        if catalogue.model_id is None:
            raise SearchError(f"catalogue '{catalogue.path}' is empty: run `earshot index` first")
        if model_id(model) != catalogue.model_id:
            from earshot.index.schema import model_hint

            hint = model_hint(catalogue.model_id, catalogue.model_info)
            raise SearchError(
                f"catalogue '{catalogue.path}' was built with model {catalogue.model_id}, "
                f"not {model_id(model)}: search with the model that indexed it ({hint})"
            )
        self.cat = catalogue
        self.model = model
        self._ann = None
        self._ann_generation = -1
        self._allowed_cache: dict[tuple[Filters, int], np.ndarray] = {}
        self._hybrid_cache: dict[tuple[str, int], bool] = {}  # (text, generation): the default
        self._files: tuple[int, bool, int] | None = None  # (generation, described, ok files)
        self._tag_lookup: tuple[tuple[str, ...], dict[str, int]] = ((), {})  # vocabulary, index
        self.calibrations: dict[str, Calibration] = load_calibrations(model)
        self.negation_weight = NEGATION_WEIGHT
        self._sample: tuple[int, np.ndarray] | None = None  # (generation, windows)
        # (the sample array, its moments): what a query's score statistics come from
        self._moments: tuple[np.ndarray, SampleMoments] | None = None
        self._memo: dict[int, dict] = {}  # file facts read during the search under way
        self._stats: tuple | None = None  # (query, its score statistics) of that search

    # -- the ANN, refreshed when the catalogue changed ------------------------------------
    def ann(self):
        from earshot.index.ann_sync import ensure_index

        generation = self.cat.generation
        if self._ann is None or generation != self._ann_generation:
            # The file beside the catalogue is used only if it was built from this catalogue
            # (its uuid; None for an older one opened read-only) with this model, and still
            # holds what the catalogue has at its last segment id.
            self._ann = ensure_index(
                ann_path_for(self.cat),
                generation,
                self.cat.removals,
                self.cat.max_segment_id(),
                self.cat.vectors,
                identity={"catalogue": self.cat.uuid, "model_id": self.cat.model_id},
                fingerprint=self.cat.segment_fingerprint,
            )
            self._ann_generation = generation
        return self._ann

    # -- queries ---------------------------------------------------------------------------
    def plan_text(self, text: str, filters: Filters | None = None) -> TextPlan:
        """Read `text` by the query syntax and merge its fields into `filters`; tags it names
        that the catalogue does not tag are matched as keywords (metadata, names) instead."""
        if not text or not text.strip():
            raise SearchError("empty query: describe the sound you are looking for")
        parsed = parse_query(text)
        merged = (filters or Filters()).with_query(parsed)
        if parsed.tags:
            vocabulary = {n.casefold() for n in self.cat.tag_names}
            given = {t.casefold() for t in (filters.tags or ())} if filters else set()
            keyword = [
                t for t in parsed.tags if t.casefold() not in vocabulary | given
            ]  # fmt: skip
            sound = [t for t in merged.tags or () if t not in keyword]
            merged = replace(
                merged,
                tags=tuple(sound) or None,
                keywords=tuple(dict.fromkeys([*(merged.keywords or ()), *keyword])) or None,
            )
        description = parsed.text.strip() or None
        negative = None
        if description and parsed.negative and self.negation_weight > 0:
            description, negative = parsed.positive, parsed.negative
        return TextPlan(description, negative, merged, parsed)

    def search_text(
        self,
        text: str,
        k: int = 10,
        filters: Filters | None = None,
        hybrid: bool | None = None,
        *,
        spans: int = 1,
        offset: int = 0,
        sort: str = "score",
    ) -> Results:
        """Files that sound like `text`, read by the query syntax (earshot.query_syntax).
        `hybrid` None: `hybrid_by_default`."""
        plan = self.plan_text(text, filters)
        if hybrid is None:
            hybrid = self.hybrid_by_default(plan.text)
        page = {"spans": spans, "offset": offset, "sort": sort}
        if plan.text is None:
            return self._without_description(plan, k, page)
        texts = [plan.text] + ([plan.negative] if plan.negative else [])
        vectors = np.asarray(self.model.encode_text(texts))
        query, negative = vectors[0], (vectors[1] if plan.negative else None)
        if not hybrid:
            return self.search_vector(query, k, plan.filters, negative=negative, **page)
        pool = self.search_vector(
            query, max(offset + k, 50), plan.filters, negative=negative, finish=False
        )
        fused = self._fuse(plan.text, query, pool, max(offset + k, 50), plan.filters)
        out = self._finish(fused, query, k, negative=negative, kind="text", **page)
        out.hybrid = True
        return out

    def _without_description(self, plan: TextPlan, k: int, page: dict) -> Results:
        """Only operators and fields: sound tags rank by their probability; exact phrases by
        BM25; anything else has nothing to rank by."""
        filters = plan.filters
        self._memo = {}
        if filters.tags:
            return self.search_tags((), k, filters, **page)
        if filters.keywords:
            words = " ".join(filters.keywords)
            allowed = set(
                self.cat.file_ids_matching(*file_filters(filters), **filters.more()).tolist()
            )
            ranked = [f for f, _ in self.cat.keyword_search(words, limit=SORT_CAP * 5)]
            hits = [self._first_window(f) for f in ranked if f in allowed]
            hits = [replace(h, rank=i, score=1.0 / (RRF_K + i)) for i, h in enumerate(hits, 1)]
            page = {**page, "spans": 1}
            return self._finish(hits, None, k, kind="keyword", **page)
        raise SearchError(
            'the query has only filters: add a description of the sound, an exact "phrase" '
            "or a tag: to rank the files by"
        )

    def search_vector(
        self,
        query: np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        exclude_file: int | None = None,
        *,
        spans: int = 1,
        offset: int = 0,
        sort: str = "score",
        kind: str = "text",
        negative: np.ndarray | None = None,
        finish: bool = True,
    ) -> Results:
        """Top `k` files by their best window's cosine similarity to `query` (d,), after
        `offset` of them, each with its confidence (`kind`: "text" or "example" calibration)
        and, where `negative` is given, each window's score lowered by `negation_weight` times
        its positive cosine to it. Byte-identical files are one hit (`also_at`)."""
        if k < 1:
            raise SearchError("k must be at least 1")
        if offset < 0:
            raise SearchError("offset must be 0 or more")
        if sort not in SORTS:
            raise SearchError(f"sort must be one of {', '.join(SORTS)}, not '{sort}'")
        if not 1 <= spans <= MAX_SPANS:
            raise SearchError(f"spans must be within 1-{MAX_SPANS}")
        query = np.asarray(query, dtype=np.float32)
        self._memo = {}
        self._stats = None
        allowed = None
        if filters is not None and filters.active():
            allowed = self._allowed(filters)
            if len(allowed) == 0:
                return Results.of([], offset)
        index = self.ann()
        # The index's own count, not COUNT(*) over the catalogue: that scan is a hot-path cost.
        total = index.count if allowed is None else len(allowed)
        if total == 0:
            return Results.of([], offset)
        # One more than asked (is there a next page?) and a margin for grouped duplicates.
        want = page_cap(offset, k, sort) + 1
        target = want + 2
        pool = min(total, max(50, 10 * target))
        while True:
            scores, ids = index.search(query[None], pool, allowed)
            found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
            rows = self.cat.segments([i for _, i in found])
            if negative is not None and self.negation_weight > 0:
                found = self._penalised(found, negative)
            best: dict[int, tuple[float, int]] = {}
            for score, sid in found:
                row = rows.get(sid)
                if row is None or row.file_id == exclude_file:
                    continue
                if row.file_id not in best or score > best[row.file_id][0]:
                    best[row.file_id] = (score, sid)
            # Long files fill the pool with their own windows, copies of one file (grouped
            # into one hit) with their equal scores: widen it until enough distinct files appear.
            if pool >= total or (len(best) >= target and self._distinct(best) >= target):
                break
            pool = min(total, pool * 4)
        ranked = self._one_per_content(sorted(best.values(), key=lambda t: (-t[0], t[1])), rows)
        ranked = ranked[:target]
        tags = self.cat.segment_tags([sid for _, sid in ranked])
        hits = [
            self._hit(r, sid, score, rows, tags.get(sid, ()))
            for r, (score, sid) in enumerate(ranked, 1)
        ]
        hits = self._rate(hits, query, kind)
        if not finish:
            return Results.of(hits)
        return self._finish(
            hits, query, k, spans=spans, offset=offset, sort=sort, kind=kind, negative=negative
        )

    def _one_per_content(self, ranked: list[tuple[float, int]], rows: dict) -> list:
        """`ranked` (score, segment id), best first, keeping the first of each content hash."""
        facts = self._facts([rows[sid].file_id for _, sid in ranked])
        seen: set[str] = set()
        out = []
        for score, sid in ranked:
            digest = facts.get(rows[sid].file_id, {}).get("content_hash")
            if digest:
                if digest in seen:
                    continue
                seen.add(digest)
            out.append((score, sid))
        return out

    def _facts(self, file_ids) -> dict[int, dict]:
        """`Catalogue.file_facts`, remembered for the search under way (`_memo`)."""
        memo = self._memo
        missing = [f for f in file_ids if f not in memo]
        if missing:
            memo.update(self.cat.file_facts(missing))
        return memo

    def _distinct(self, best: dict[int, tuple[float, int]]) -> int:
        """How many hits `best` (file id → (score, segment id)) makes once copies are grouped."""
        facts = self._facts(list(best))
        hashes = [facts.get(f, {}).get("content_hash") for f in best]
        return len({h for h in hashes if h}) + sum(1 for h in hashes if not h)

    def _penalised(self, found: list[tuple[float, int]], negative: np.ndarray):
        vectors = self.cat.segment_vectors([sid for _, sid in found])
        negative = np.asarray(negative, dtype=np.float32)
        lam = self.negation_weight
        return [
            (s - lam * max(0.0, float(vectors[sid] @ negative)) if sid in vectors else s, sid)
            for s, sid in found
        ]

    def _finish(
        self,
        hits: list[Hit],
        query: np.ndarray | None,
        k: int,
        *,
        spans: int = 1,
        offset: int = 0,
        sort: str = "score",
        kind: str = "text",
        negative: np.ndarray | None = None,
    ) -> Results:
        """Ranked hits (with confidence) → one page: duplicates grouped, sorted, `offset`
        passed over, the page's files given their sample rate, channels and spans."""
        if sort not in SORTS:
            raise SearchError(f"sort must be one of {', '.join(SORTS)}, not '{sort}'")
        if query is not None and hits and hits[0].confidence is None:
            hits = self._rate(hits, query, kind)
        facts = self._facts([h.file_id for h in hits])
        copies = self.cat.paths_by_hash(
            [facts[h.file_id]["content_hash"] for h in hits if h.file_id in facts]
        )
        seen: set[str] = set()
        grouped: list[Hit] = []
        for h in hits:
            fact = facts.get(h.file_id, {})
            digest = fact.get("content_hash")
            if digest and digest in seen:
                continue
            if digest:
                seen.add(digest)
            others = tuple(p for f, p in copies.get(digest, ()) if f != h.file_id)[:MAX_ALSO_AT]
            grouped.append(
                replace(
                    h,
                    also_at=others,
                    sample_rate=fact.get("sample_rate"),
                    channels=fact.get("channels"),
                    mtime_ns=fact.get("mtime_ns"),
                )
            )
        cap = page_cap(offset, k, sort)
        more = len(grouped) > cap
        relevant = grouped[:cap]
        # The other sorts order each band in turn, good matches first: "thunder" by duration
        # is the thunder recordings shortest first, not the catalogue's shortest blips.
        if sort != "score":
            band, by = {GOOD: 0, WEAK: 1}, _SORT_KEYS[sort]
            relevant.sort(key=lambda h: (band.get(h.band, 2), by(h), h.path))
        page = relevant[offset : offset + k]
        if query is not None:
            page = self._with_spans(page, query, spans, kind, negative)
        page = [replace(h, rank=offset + i) for i, h in enumerate(with_meta(self.cat, page), 1)]
        total = len(relevant) if sort != "score" else len(grouped)
        more = more if sort == "score" else offset + k < len(relevant)
        out = Results.of(page, offset, more or (sort == "score" and len(grouped) > offset + k),
                         total)  # fmt: skip
        out.sort = sort
        return out

    def why_empty(
        self, results: list, filters: Filters | None, text: str | None = None
    ) -> str | None:
        """Why `results`, a search narrowed by `filters` and the fields of `text` (the query
        as typed), found nothing, where the filters are why: the conditions no indexed file
        passes even alone, else that together they pass none. None for results that are not
        an empty first page, and where the filters pass some window (nothing to blame on
        them)."""
        if results or getattr(results, "offset", 0):
            return None
        if text is not None and text.strip():
            filters = self.plan_text(text, filters).filters
        if filters is None or not filters.active() or len(self._allowed(filters)):
            return None
        parts = filters.parts()
        empty = [(label, alone) for label, alone in parts if not len(self._allowed(alone))]
        if empty:
            said = f"no file passes {' '.join(label for label, _ in empty)}"
            if any(alone.tags for _, alone in empty):
                said += f" (a tag counts from {self._tag_min(filters):.2f} in some window)"
            return said
        if len(parts) > 1:
            labels = " ".join(label for label, _ in parts)
            return f"no file passes {labels} together, though each alone passes some"
        return None

    def _allowed(self, filters: Filters) -> np.ndarray:
        """Segment ids passing `filters`, cached per catalogue generation: the SQL behind a
        broad filter over 1M windows takes ~60 ms, a query after it ~2 ms."""
        # Resolved on every call, so an unknown tag is an error each time it is asked for.
        tags = self.resolve_tags(filters.tags) if filters.tags else None
        tag_min = self._tag_min(filters)
        key = (filters, self.cat.generation)
        if key not in self._allowed_cache:
            if len(self._allowed_cache) >= 8:
                self._allowed_cache.pop(next(iter(self._allowed_cache)))
            self._allowed_cache[key] = self.cat.segment_ids_matching(
                *file_filters(filters), tags=tags, tag_min=tag_min, **filters.more()
            )
        return self._allowed_cache[key]

    def _hit(self, rank: int, segment_id: int, score: float, rows: dict, tags=()) -> Hit:
        row = rows[segment_id]
        return Hit(
            rank,
            row.path,
            row.start_s,
            row.end_s,
            score,
            row.file_id,
            segment_id,
            row.duration_s,
            row.format,
            tuple(tags),
        )

    def _first_window(self, file_id: int) -> Hit:
        s = self.cat.file_segments(file_id)[0]
        tags = self.cat.segment_tags([s.segment_id]).get(s.segment_id, ())
        return Hit(0, s.path, s.start_s, s.end_s, 0.0, file_id, s.segment_id, s.duration_s,
                   s.format, tuple(tags))  # fmt: skip
