"""The query parameters the API's routes share, each bounded (every number finite and within
SQLite's integers, every string capped), and the search filters a request's parameters make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from earshot.serve.service import ApiError, shorten

MAX_K = 100
# Bounds on every number a request carries, so that none reaches SQLite or JSON out of range
# (an int beyond SQLite's 64 bits, or inf, was an HTTP 500): ids are SQLite INTEGERs, times
# and durations finite seconds below 10^9 (some 31 years).
MAX_ID = 2**63 - 1
MAX_SECONDS = 1e9
MAX_FOLDER = 4096  # characters: PATH_MAX
MAX_NAME = 256  # characters of a format or tag name
MinDuration = Annotated[
    float | None,
    Query(
        ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds: files this long or longer"
    ),
]
MaxDuration = Annotated[
    float | None,
    Query(
        ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds: files this long or shorter"
    ),
]
Folder = Annotated[
    str | None,
    Query(
        max_length=MAX_FOLDER,
        description="only files under this folder: absolute, ~/..., or a folder name or "
        "relative path matched as whole components (foley, sfx/foley)",
    ),
]
Offset = Annotated[
    int, Query(ge=0, le=10000, description="hits to pass over first (paging; stable order)")
]
Sort = Annotated[
    str,
    Query(
        pattern="^(score|name|duration|date)$",
        description="score (default); name, duration (shortest first) or date (newest first) "
        "reorder the 200 best files by score, the good matches first, then the weak",
    ),
]
Spans = Annotated[int, Query(ge=1, le=20, description="each file's best N non-overlapping windows")]
ExampleFilters = Annotated[
    str,
    Query(
        max_length=1000,
        description="filters in the search box's syntax, without a description: "
        "'dur:<5 ext:wav sr:>=48k -rain'",
    ),
]
ShowWeak = Annotated[
    bool,
    Query(
        description="true (default): every hit, each marked with its band; false: where some "
        "hit is good, only the good ones"
    ),
]
Formats = Annotated[
    list[str] | None, Query(alias="format", description="only these formats: wav, flac, ...")
]
Tags = Annotated[
    list[str] | None,
    Query(
        alias="tag",
        description="only files with this sound tag, e.g. Dog (any case; repeatable: all of "
        "them); for catalogues indexed by a tagging model",
    ),
]
TagMin = Annotated[
    float | None,
    Query(
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="a tag counts from this probability in some window (0.3)",
    ),
]


def request_filters(folder, min_duration, max_duration, formats, tags=None, tag_min=None):
    from earshot.filters import Filters, folder_form
    from earshot.search import SearchError

    if folder is not None and not folder.strip():
        folder = None
    parts = None
    if folder is not None:
        # Absolute, ~/... (the server's home, as hits shorten it), or a folder name / relative
        # path matched as whole components of a file's folder.
        try:
            folder, relative = folder_form(folder)
        except SearchError as e:
            raise ApiError(400, str(e)) from None
        parts = (relative,) if relative else None
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise ApiError(400, "min_duration is larger than max_duration: no file can match")
    for name in (*(formats or ()), *(tags or ())):
        if len(name) > MAX_NAME:
            raise ApiError(
                400, f"a format or tag name is at most {MAX_NAME} characters: '{shorten(name)}'"
            )
    formats = tuple(f for f in (formats or ()) if f.strip()) or None
    # Not split on commas: AudioSet names hold them ("Domestic animals, pets").
    tags = tuple(t.strip() for t in (tags or ()) if t.strip()) or None
    return Filters(folder, min_duration, max_duration, formats, tags, tag_min, folder_parts=parts)


@dataclass(frozen=True)
class Narrowing:
    """What every search route takes beside its query: the filters, the page and whether weak
    hits are shown (`narrowing`, a FastAPI dependency, reads them from the query string)."""

    filters: Any  # earshot.filters.Filters
    offset: int
    sort: str
    spans: int
    show_weak: bool

    @property
    def page(self) -> dict:
        return {"offset": self.offset, "sort": self.sort, "spans": self.spans}


def narrowing(
    folder: Folder = None,
    min_duration: MinDuration = None,
    max_duration: MaxDuration = None,
    formats: Formats = None,
    tags: Tags = None,
    tag_min: TagMin = None,
    offset: Offset = 0,
    sort: Sort = "score",
    spans: Spans = 1,
    show_weak: ShowWeak = True,
) -> Narrowing:
    filters = request_filters(folder, min_duration, max_duration, formats, tags, tag_min)
    return Narrowing(filters, offset, sort, spans, show_weak)


Narrowed = Annotated[Narrowing, Depends(narrowing)]
