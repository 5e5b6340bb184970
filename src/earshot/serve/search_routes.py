"""The API's searches: by description or tags (`/api/search`), by a catalogued file or segment
(`/api/similar/{id}`), by an uploaded example (`POST /api/search/like`), and the menus the page
builds its searches from (tags, example searches, facets). Every answer is `answer`'s JSON."""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from earshot.hits import EXAMPLE_HINT
from earshot.serve.params import MAX_ID, MAX_K, MAX_SECONDS, ExampleFilters, Narrowed
from earshot.serve.service import Service, Settings
from earshot.serve.uploads import receive_upload


def add_search_routes(app: FastAPI, svc: Service, settings: Settings) -> None:
    """The search routes, on `app`, over `svc`."""

    @app.get(
        "/api/search",
        tags=["search"],
        summary="Files that sound like a description (or, with only tags, the files with them)",
    )
    def search(
        n: Narrowed,
        q: str = Query(
            "",
            max_length=1000,
            description="what you hear, e.g. 'a dog barks'; may be left out when tag is given",
        ),
        k: int = Query(20, ge=1, le=MAX_K, description="how many files"),
        hybrid: bool | None = Query(
            None,
            description="fuse keyword matches on names, tags and embedded metadata; default: "
            "on where the catalogue holds embedded descriptions or a query word picks files "
            "out by name or folder",
        ),
    ):
        t0 = time.perf_counter()
        if not q.strip() and n.filters.tags:
            hits = svc.search_tags(k, n.filters, **n.page)
        else:
            hits = svc.search_text(q, k, n.filters, hybrid, **n.page)
        query = {"text": q, "k": k, "offset": n.offset, "sort": n.sort}
        reason = svc.why_empty(hits, n.filters, q)
        return answer(query, n.filters, hits, t0, n.show_weak, q.strip() or None, reason=reason)

    @app.get(
        "/api/tags",
        tags=["search"],
        summary="The sound tags files have (in some window at >= 0.3), most files first",
    )
    def sound_tags(limit: int = Query(1000, ge=1, le=100000)):
        menu = svc.tag_menu()
        return {
            "vocabulary": len(svc.cat.tag_names),
            "tags": [{"name": name, "files": n} for name, n in menu[:limit]],
        }

    @app.get(
        "/api/examples",
        tags=["search"],
        summary="Example searches from what the catalogue knows (its commonest tags or name words)",
    )
    def example_searches():
        from earshot.serve.examples import examples

        names, records = svc.cat.file_names()
        return examples(svc.tag_menu(), names, records)

    @app.get(
        "/api/facets",
        tags=["files"],
        summary="The formats, sample rates and channel counts of indexed files, most files first",
    )
    def file_facets():
        from earshot.serve.examples import facets

        return facets(svc.cat.facets())

    @app.get(
        "/api/similar/{file_id}",
        tags=["search"],
        summary="More like this: files that sound like a file, or one of its segments",
    )
    def similar(
        file_id: str,
        n: Narrowed,
        segment: int | None = Query(None, ge=1, le=MAX_ID, description="a segment id of this file"),
        k: int = Query(20, ge=1, le=MAX_K),
        q: ExampleFilters = "",
    ):
        filters = svc.searcher.example_filters(q, n.filters)
        info = svc.file(file_id)
        t0 = time.perf_counter()
        hits = svc.similar(info, segment, k, filters, **n.page)
        query = {"file_id": info["id"], "name": info["name"], "segment_id": segment, "k": k}
        if q.strip():
            query["q"] = q
        if segment is not None:
            row = svc.cat.segments([segment])[segment]
            query |= {"start": round(row.start_s, 3), "end": round(row.end_s, 3)}
        reason = svc.why_empty(hits, filters)
        return answer(query, filters, hits, t0, n.show_weak, by_example=True, reason=reason)

    @app.post(
        "/api/search/like",
        tags=["search"],
        summary="Search by example: upload a short sound (multipart field 'file', or raw bytes "
        "as application/octet-stream or audio/*)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "audio/*": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def search_like(
        request: Request,
        n: Narrowed,
        k: int = Query(20, ge=1, le=MAX_K),
        start: float | None = Query(
            None,
            ge=0,
            le=MAX_SECONDS,
            allow_inf_nan=False,
            description="start of the span to compare (s)",
        ),
        end: float | None = Query(
            None,
            gt=0,
            le=MAX_SECONDS,
            allow_inf_nan=False,
            description="end of the span to compare (s)",
        ),
        q: ExampleFilters = "",
    ):
        filters = svc.searcher.example_filters(q, n.filters)  # refused before the upload is read
        path, name = await receive_upload(request, settings)
        try:
            t0 = time.perf_counter()
            hits, seconds = await run_in_threadpool(
                lambda: svc.like_upload(path, name, k, start, end, filters, **n.page)
            )
        finally:
            os.unlink(path)
        query = {"upload": name, "duration": round(seconds, 3), "k": k}
        if q.strip():
            query["q"] = q
        reason = svc.why_empty(hits, filters)
        return answer(query, filters, hits, t0, n.show_weak, by_example=True, reason=reason)


def answer(
    query: dict,
    filters,
    hits: list,
    t0: float,
    show_weak: bool = True,
    asked: str | None = None,
    by_example: bool = False,
    reason: str | None = None,
) -> dict:
    from earshot.hits import Results, trim_weak

    results = hits if isinstance(hits, Results) else Results.of(hits)
    shown = results if show_weak else trim_weak(results)
    active = {k: v for k, v in vars(filters).items() if v is not None}
    return {
        "query": query,
        "filters": active,
        "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        "band": results.best_band(),
        "message": results.message(asked, *([EXAMPLE_HINT] if by_example else []), reason=reason),
        "empty_reason": reason,  # an empty first page: the filter(s) no file passes
        "offset": results.offset,
        "more": bool(results.more),
        "total_estimate": results.total_estimate,
        "weak_hidden": len(results) - len(shown),
        "hybrid": bool(getattr(results, "hybrid", False)),  # score: a reciprocal-rank sum
        "hits": [h.as_dict() for h in shown],  # as `earshot search --json`
    }
