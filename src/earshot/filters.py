"""What a search may be narrowed by: a file's folder, duration, format, audio facts, sound tags
and keyword phrases (`Filters`), merged with what a query's syntax asks (`Filters.with_query`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from earshot.errors import SearchError
from earshot.fsutil import absolute
from earshot.query_syntax import ParsedQuery, fts_phrase


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
    # The query syntax's (earshot.query_syntax), also usable alone: inclusive (lo, hi) ranges
    # (None: open), folder names or relative paths whose components a file's folder holds
    # (any case), and words or phrases that leave a file out when its keyword row (name,
    # folders, metadata, confident sound tags) holds them. (`"phrase"` and a `tag:` the
    # catalogue does not tag become `keywords`.)
    sample_rate: tuple[float | None, float | None] | None = None
    channels: tuple[float | None, float | None] | None = None
    folder_parts: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

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

    def more(self) -> dict:
        """The catalogue's further file conditions (`keywords`,
        `index.filter_queries._more_filters`)."""
        exclude = [fts_phrase(w) for w in self.exclude or ()]
        out = {
            "keywords": self.keywords,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "folder_parts": self.folder_parts,
            "fts_exclude": [m for m in exclude if m] or None,
        }
        return {k: v for k, v in out.items() if v is not None}

    def with_query(self, parsed: ParsedQuery) -> Filters:
        """These filters and the fields of a parsed query, both applying."""
        folder, parts = self.folder, list(self.folder_parts or ())
        for value in parsed.folders:
            absolute, relative = folder_form(value)
            if absolute is not None:
                if folder is not None and absolute != folder:
                    raise SearchError(
                        f"two folders asked for ('{folder}' and '{absolute}'): a file is in one"
                    )
                folder = absolute
            else:
                parts.append(relative)
        lo, hi = self.min_duration, self.max_duration
        if parsed.duration is not None:
            lo = _tighter(lo, parsed.duration.lo, max)
            hi = _tighter(hi, parsed.duration.hi, min)
        formats = tuple(dict.fromkeys((*(self.formats or ()), *parsed.formats))) or None

        def joined(mine, theirs):
            return tuple(dict.fromkeys((*(mine or ()), *theirs))) or None

        def ranged(mine, theirs):
            if theirs is None:
                return mine
            if mine is None:
                return (theirs.lo, theirs.hi)
            return (_tighter(mine[0], theirs.lo, max), _tighter(mine[1], theirs.hi, min))

        return replace(
            self,
            folder=folder,
            folder_parts=tuple(dict.fromkeys(parts)) or None,
            min_duration=lo,
            max_duration=hi,
            formats=formats,
            tags=joined(self.tags, parsed.tags),
            keywords=joined(self.keywords, parsed.phrases),
            exclude=joined(self.exclude, parsed.exclude),
            sample_rate=ranged(self.sample_rate, parsed.sample_rate),
            channels=ranged(self.channels, parsed.channels),
        )

    def parts(self) -> list[tuple[str, Filters]]:
        """Each condition alone, as (its query-syntax form, the filters of it alone): what
        `Searcher.why_empty` tries one by one to name the condition no file passes."""
        out: list[tuple[str, Filters]] = []
        if self.folder is not None:
            out.append((f"folder:{_quoted(self.folder)}", Filters(folder=self.folder)))
        for part in self.folder_parts or ():
            out.append((f"folder:{_quoted(part)}", Filters(folder_parts=(part,))))
        if self.min_duration is not None or self.max_duration is not None:
            label = _range_form("dur", (self.min_duration, self.max_duration))
            lasting = Filters(min_duration=self.min_duration, max_duration=self.max_duration)
            out.append((label, lasting))
        if self.formats:
            out.append((f"ext:{','.join(self.formats)}", Filters(formats=self.formats)))
        for name in self.tags or ():
            out.append((f"tag:{_quoted(name)}", Filters(tags=(name,), tag_min=self.tag_min)))
        for phrase in self.keywords or ():
            out.append((f'"{phrase}"', Filters(keywords=(phrase,))))
        if self.sample_rate is not None:
            out.append((_range_form("sr", self.sample_rate), Filters(sample_rate=self.sample_rate)))
        if self.channels is not None:
            out.append((_range_form("ch", self.channels), Filters(channels=self.channels)))
        for word in self.exclude or ():
            out.append((f"-{_quoted(word)}", Filters(exclude=(word,))))
        return out


def _quoted(value: str) -> str:
    return f'"{value}"' if any(c.isspace() or c == "," for c in value) else value


def _range_form(name: str, bounds: tuple[float | None, float | None]) -> str:
    lo, hi = bounds
    if lo is not None and hi is not None:
        return f"{name}:{lo:g}" if lo == hi else f"{name}:{lo:g}..{hi:g}"
    return f"{name}:>={lo:g}" if lo is not None else f"{name}:<={hi:g}"


def _tighter(a, b, pick):
    return b if a is None else a if b is None else pick(a, b)


def folder_form(value: str) -> tuple[str | None, str | None]:
    """(absolute folder, None) for an absolute or ~ path; (None, relative path) for a folder
    name or a relative path ("foley", "./sfx/foley/"), matched as whole components anywhere.
    Both shortened forms hits show are accepted."""
    value = str(value).strip()
    if not value:
        raise SearchError("an empty folder filter: name a folder, e.g. folder:foley")
    if value.lower().startswith("s3://"):  # a bucket's folder (shards): its components
        rest = "/".join(p for p in value[5:].split("/") if p)
        if not rest:
            raise SearchError(f"folder '{value}' names no bucket: give s3://BUCKET/PREFIX")
        return None, rest
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return absolute(expanded), None
    relative = os.path.normpath(value).replace(os.sep, "/")
    if relative in (".", "..") or relative.startswith("../"):
        raise SearchError(
            f"folder '{value}' leads out of every folder: give its name or an absolute path"
        )
    return None, relative


def file_filters(filters: Filters) -> tuple:
    """The positional file filters of the catalogue's queries (folder, durations, formats)."""
    return filters.folder, filters.min_duration, filters.max_duration, filters.formats
