"""Search a catalogue by text or by example: ANN over windows, ranked per file by its best window.

The ANN returns segments; results are files, each with the window that matched best, so a
two-hour recording appears once, at the minute that fits the query. Catalogues indexed by a
tagging model also hold each window's top sound tags: hits carry their window's, and a tag
filter keeps the files where some window has every tag asked for.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from earshot.errors import SearchError
from earshot.index.schema import CONFIDENT_TAG
from earshot.index.store import Catalogue

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)


@dataclass(frozen=True)
class Filters:
    folder: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    formats: tuple[str, ...] | None = None
    # Sound tags a file must have, all of them (display names, any case): some window of the
    # file has each at >= tag_min (None: CONFIDENT_TAG, 0.3).
    tags: tuple[str, ...] | None = None
    tag_min: float | None = None
    # Phrases the file's keyword-search text must hold, every one: its name, folder, tags and
    # embedded metadata (Catalogue.file_ids_matching_keywords): what `"phrase"` maps onto.
    keywords: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tags is not None:
            names = (self.tags,) if isinstance(self.tags, str) else self.tags
            cleaned = tuple(str(t).strip() for t in names if str(t).strip())
            object.__setattr__(self, "tags", cleaned or None)
        if self.keywords is not None:
            phrases = (self.keywords,) if isinstance(self.keywords, str) else self.keywords
            cleaned = tuple(str(p).strip() for p in phrases if str(p).strip())
            object.__setattr__(self, "keywords", cleaned or None)

    def active(self) -> bool:
        # tag_min alone filters nothing
        return any(v is not None for k, v in asdict(self).items() if k != "tag_min")


@dataclass(frozen=True)
class Hit:
    rank: int
    path: str
    start_s: float  # the best-matching window
    end_s: float
    score: float  # cosine similarity of that window (hybrid: the fused score; tags: probability)
    file_id: int
    segment_id: int
    duration_s: float
    format: str
    # That window's sound tags, (name, probability) best first; () for untagged catalogues.
    tags: tuple[tuple[str, float], ...] = field(default=())
    # The file's embedded metadata (description, title, keywords, ucs...; Catalogue.file_meta),
    # None where it has none.
    meta: dict | None = field(default=None, compare=False, hash=False)

    def as_dict(self) -> dict:
        """The hit as JSON gives it, the same in `earshot search --json`, the HTTP API and the
        web page: times in seconds to the millisecond, the score to 6 digits."""
        folder, name = os.path.split(self.path)
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
            "format": self.format,
            "tags": tags_json(self.tags),
            "meta": self.meta or None,
        }


def with_meta(catalogue: Catalogue, hits: list[Hit]) -> list[Hit]:
    """`hits` with their files' embedded metadata (one query for all of them)."""
    found = catalogue.file_meta([h.file_id for h in hits])
    return [replace(h, meta=found.get(h.file_id)) for h in hits]


def tags_json(tags: Sequence[tuple[str, float]]) -> list[dict]:
    """A hit's tags as JSON gives them: [{"name": "Dog", "p": 0.93}, ...]."""
    return [{"name": name, "p": round(float(p), 3)} for name, p in tags]


def ann_path_for(catalogue: Catalogue) -> Path:
    return catalogue.path.with_name(catalogue.path.name + ".ann")


class Searcher:
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
        self._tag_lookup: tuple[tuple[str, ...], dict[str, int]] = ((), {})  # vocabulary, index

    # -- the ANN, refreshed when the catalogue changed ------------------------------------
    def ann(self):
        from earshot.index.ann import ensure_index

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
    def search_text(
        self, text: str, k: int = 10, filters: Filters | None = None, hybrid: bool = False
    ) -> list[Hit]:
        if not text or not text.strip():
            raise SearchError("empty query: describe the sound you are looking for")
        query = self.model.encode_text([text]).numpy()[0]
        hits = self.search_vector(query, k if not hybrid else max(k, 50), filters)
        return self._fuse(text, query, hits, k, filters) if hybrid else hits

    def search_tags(
        self, tags: Sequence[str] = (), k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Files having every one of `tags` (and those of `filters`), no text: ranked by the
        weakest tag's best probability over the file's windows, each with the window where the
        tags are likeliest together. Hit.score is that probability."""
        if k < 1:
            raise SearchError("k must be at least 1")
        filters = filters or Filters()
        asked = Filters(tags=tags).tags or ()  # one name, or several
        names = tuple(dict.fromkeys((*asked, *(filters.tags or ()))))
        if not names:
            raise SearchError("no tag given: name a sound tag, e.g. --tag Dog")
        indices = self.resolve_tags(names)
        scores = self.cat.files_with_tags(indices, self._tag_min(filters))
        rest = replace(filters, tags=None, tag_min=None)
        if rest.active() and scores:
            allowed = set(
                self.cat.file_ids_matching(
                    rest.folder, rest.min_duration, rest.max_duration, rest.formats, rest.keywords
                ).tolist()
            )
            scores = {f: p for f, p in scores.items() if f in allowed}
        vocabulary = self.cat.tag_names
        wanted = [vocabulary[i] for i in indices]
        hits = []
        for rank, (fid, p) in enumerate(sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:k], 1):
            segments = self.cat.file_segments(fid)
            tags_of = self.cat.segment_tags([s.segment_id for s in segments])

            def together(s, tags_of=tags_of) -> float:
                have = dict(tags_of.get(s.segment_id, ()))
                return min(have.get(n, 0.0) for n in wanted)

            best = max(segments, key=together)  # the earliest of equals
            hits.append(
                Hit(
                    rank,
                    best.path,
                    best.start_s,
                    best.end_s,
                    p,
                    fid,
                    best.segment_id,
                    best.duration_s,
                    best.format,
                    tuple(tags_of.get(best.segment_id, ())),
                )
            )
        return with_meta(self.cat, hits)

    def resolve_tags(self, names: Sequence[str]) -> tuple[int, ...]:
        """Tag names (any case) → indices into the catalogue's vocabulary; a SearchError naming
        the near matches for a name it does not have."""
        vocabulary = self.cat.tag_names
        if not vocabulary:
            raise SearchError(
                f"catalogue '{self.cat.path}' has no sound tags: the model that indexed it does "
                "not tag windows, so there is nothing to filter by tag"
            )
        if self._tag_lookup[0] is not vocabulary:
            lookup: dict[str, int] = {}
            for i, name in enumerate(vocabulary):
                lookup.setdefault(name.casefold(), i)
            self._tag_lookup = (vocabulary, lookup)
        out = []
        for name in names:
            i = self._tag_lookup[1].get(str(name).strip().casefold())
            if i is None:
                raise SearchError(_unknown_tag(str(name), vocabulary))
            out.append(i)
        return tuple(dict.fromkeys(out))

    @staticmethod
    def _tag_min(filters: Filters | None) -> float:
        p = CONFIDENT_TAG if filters is None or filters.tag_min is None else filters.tag_min
        if not 0.0 <= float(p) <= 1.0:
            raise SearchError(f"the tag threshold must be within 0-1, got {p:g}")
        return float(p)

    def search_like(
        self,
        path: str | Path,
        k: int = 10,
        start: float | None = None,
        end: float | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Sounds like (a span of) an audio file; the file itself is left out of the results."""
        query = self.embed_example(path, start, end)
        resolved = str(Path(path).expanduser().absolute())
        own = self.cat.file_id_for_path(resolved)
        return self.search_vector(query, k, filters, exclude_file=own)

    def search_like_segment(
        self, segment_id: int, k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        rows = self.cat.segments([segment_id])
        if segment_id not in rows:
            raise SearchError(f"no segment with id {segment_id} in '{self.cat.path}'")
        query = self.cat.segment_vector(segment_id)
        return self.search_vector(
            query / np.linalg.norm(query), k, filters, exclude_file=rows[segment_id].file_id
        )

    def embed_example(self, path: str | Path, start: float | None, end: float | None) -> np.ndarray:
        from earshot.audio.io import load

        samples = load(path, self.model.config.audio.sample_rate)
        return self.embed_samples(samples, start, end, f"'{path}'")

    def embed_samples(
        self,
        samples: np.ndarray,
        start: float | None = None,
        end: float | None = None,
        label: str = "the example",
    ) -> np.ndarray:
        """`embed_example` for a sound already decoded: mono (n,) at the model's sample rate.
        `label` names it in the error for a span without audio."""
        from earshot.audio.windows import windows

        audio = self.model.config.audio
        lo = 0 if start is None else max(0, round(start * audio.sample_rate))
        hi = len(samples) if end is None else min(len(samples), round(end * audio.sample_rate))
        if hi - lo < audio.n_fft:
            span = f"{lo / audio.sample_rate:g}-{hi / audio.sample_rate:g} s"
            raise SearchError(f"the example span {span} of {label} holds no audio to compare")
        ws = list(windows([samples[lo:hi]], audio.sample_rate, audio.window_s, audio.hop_s))
        vectors = self.model.encode_audio(np.stack([w.samples for w in ws])).numpy()
        mean = vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)

    def search_vector(
        self,
        query: np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        exclude_file: int | None = None,
    ) -> list[Hit]:
        """Top `k` files by their best window's cosine similarity to `query` (d,)."""
        if k < 1:
            raise SearchError("k must be at least 1")
        allowed = None
        if filters is not None and filters.active():
            allowed = self._allowed(filters)
            if len(allowed) == 0:
                return []
        index = self.ann()
        # The index's own count, not COUNT(*) over the catalogue: that scan is a hot-path cost.
        total = index.count if allowed is None else len(allowed)
        if total == 0:
            return []
        pool = min(total, max(50, 10 * k))
        while True:
            scores, ids = index.search(query[None].astype(np.float32), pool, allowed)
            best: dict[int, tuple[float, int]] = {}
            rows = self.cat.segments([int(i) for i in ids[0] if i >= 0])
            for score, sid in zip(scores[0], ids[0], strict=True):
                row = rows.get(int(sid))
                if row is None or row.file_id == exclude_file:
                    continue
                if row.file_id not in best or score > best[row.file_id][0]:
                    best[row.file_id] = (float(score), int(sid))
            # Long files fill the pool with their own windows: widen it until k files appear.
            if len(best) >= k or pool >= total:
                break
            pool = min(total, pool * 4)
        ranked = sorted(best.values(), key=lambda t: -t[0])[:k]
        tags = self.cat.segment_tags([sid for _, sid in ranked])
        hits = [
            self._hit(r, sid, score, rows, tags.get(sid, ()))
            for r, (score, sid) in enumerate(ranked, 1)
        ]
        return with_meta(self.cat, hits)

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
                filters.folder,
                filters.min_duration,
                filters.max_duration,
                filters.formats,
                tags=tags,
                tag_min=tag_min,
                keywords=filters.keywords,
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

    def _fuse(
        self, text: str, query: np.ndarray, vector_hits: list[Hit], k: int, filters: Filters | None
    ) -> list[Hit]:
        """Reciprocal-rank fusion of the vector ranking and FTS5 matches on names and tags."""
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
        out = []
        for rank, (fid, score) in enumerate(sorted(fused.items(), key=lambda t: -t[1])[:k], 1):
            hit = by_file.get(fid) or self._best_window(fid, query)
            out.append(replace(hit, rank=rank, score=score))
        tags = self.cat.segment_tags([h.segment_id for h in out if not h.tags])
        for i, h in enumerate(out):
            if h.segment_id in tags:
                out[i] = replace(h, tags=tuple(tags[h.segment_id]))
        return with_meta(self.cat, out)

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


def _unknown_tag(name: str, vocabulary: Sequence[str]) -> str:
    """'no tag named ...' with the vocabulary's nearest names (difflib, then substrings)."""
    folded: dict[str, str] = {}
    for n in vocabulary:
        folded.setdefault(n.casefold(), n)
    key = name.strip().casefold()
    near = [folded[n] for n in difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)]
    if key and len(near) < 5:
        near += [n for f, n in folded.items() if key in f and n not in near][: 5 - len(near)]
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return (
        f"no sound tag named '{name}' among the catalogue's {len(vocabulary)} tags "
        f"(matched ignoring case){hint}"
    )
