"""Search by sound tags alone: the files having every tag asked for, likeliest first, each
with the window where its tags are likeliest together (`TagSearch`, a part of
`earshot.search.Searcher`: it reads the searcher's catalogue and ranks through its `_rate` and
`_finish`); tag names resolved against the catalogue's vocabulary, near matches named."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import replace

from earshot.errors import SearchError
from earshot.filters import Filters, file_filters
from earshot.hits import Hit, Results
from earshot.index.tag_blobs import CONFIDENT_TAG

# sort=name|duration|date reorders the SORT_CAP best files by score (the relevant set), never
# the whole catalogue: "the 200 best matches for 'rain', by name".
SORT_CAP = 200


def page_cap(offset: int, k: int, sort: str) -> int:
    """How many files by score a page draws from: through the page for sort=score, the whole
    relevant set (SORT_CAP, or further when paging beyond it) for the other sorts."""
    return offset + k if sort == "score" else max(SORT_CAP, offset + k)


class TagSearch:
    """`Searcher`'s tag search and tag-name lookup."""

    def search_tags(
        self,
        tags: Sequence[str] = (),
        k: int = 10,
        filters: Filters | None = None,
        *,
        spans: int = 1,
        offset: int = 0,
        sort: str = "score",
    ) -> Results:
        """Files having every one of `tags` (and those of `filters`), no text: ranked by the
        weakest tag's best probability over the file's windows, each with the window where the
        tags are likeliest together. Hit.score is that probability (and its confidence)."""
        if k < 1:
            raise SearchError("k must be at least 1")
        self._memo = {}
        filters = filters or Filters()
        asked = Filters(tags=tags).tags or ()  # one name, or several
        names = tuple(dict.fromkeys((*asked, *(filters.tags or ()))))
        if not names:
            raise SearchError("no tag given: name a sound tag, e.g. --tag Dog")
        indices = self.resolve_tags(names)
        scores = self.cat.files_with_tags(indices, self._tag_min(filters))
        rest = replace(filters, tags=None, tag_min=None)
        if rest.active() and scores:
            allowed = set(self.cat.file_ids_matching(*file_filters(rest), **rest.more()).tolist())
            scores = {f: p for f, p in scores.items() if f in allowed}
        vocabulary = self.cat.tag_names
        wanted = [vocabulary[i] for i in indices]
        cap = page_cap(offset, k, sort) + 1
        hits = []
        ordered = sorted(scores.items(), key=lambda t: (-t[1], t[0]))
        for rank, (fid, p) in enumerate(ordered[: cap + 8], 1):
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
        hits = self._rate(hits, None, "text")  # a probability: its own confidence
        out = self._finish(hits, None, k, spans=1, offset=offset, sort=sort, kind="tags")
        out.more = out.more or len(ordered) > len(hits)
        out.total_estimate = max(out.total_estimate, len(ordered))
        return out

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
                raise SearchError(unknown_tag(str(name), vocabulary))
            out.append(i)
        return tuple(dict.fromkeys(out))

    @staticmethod
    def _tag_min(filters: Filters | None) -> float:
        p = CONFIDENT_TAG if filters is None or filters.tag_min is None else filters.tag_min
        if not 0.0 <= float(p) <= 1.0:
            raise SearchError(f"the tag threshold must be within 0-1, got {p:g}")
        return float(p)


def unknown_tag(name: str, vocabulary: Sequence[str]) -> str:
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
