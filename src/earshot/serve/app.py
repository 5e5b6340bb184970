"""earshot's HTTP API and web page, built by `create_app(index_or_catalogue, model, settings)`.

The model and the `Searcher` are made once, in `service.Service`; requests only use them.
Searches run one at a time under a lock (the tokenizer and the Searcher's caches are not made
for concurrent use; on a few cores a queue costs nothing a parallel run would win back), while
file metadata, audio and waveform peaks are served alongside.

Security (see `guard.py`, `uploads.py` and `server.py`): requests name files by catalogue id
only, never by path; every number a request carries is bounded (finite, within SQLite's
integers), so none is a 500; uploads are capped in bytes before they are read and in seconds
of decoded audio while they are decoded, take only the content types documented here, and
must arrive in time; POSTs from pages of other sites are refused (CSRF); an optional bearer
token guards every route; Host headers are checked against loopback names unless the server
is exposed; CORS is off unless origins are named.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from earshot.errors import AudioDecodeError, EarshotError
from earshot.hits import EXAMPLE_HINT, tags_json
from earshot.serve.guard import Guard
from earshot.serve.playback import MAX_FADE_MS, audio_response, clip_response
from earshot.serve.service import (
    ApiError,
    Service,
    Settings,
    shorten,
)
from earshot.serve.uploads import receive_upload

log = logging.getLogger("earshot.serve")

STATIC_DIR = Path(__file__).with_name("static")
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",  # the page's ES modules need a JavaScript type
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The only files the server reads besides catalogued audio: the names found in static/ when
# the server starts, a fixed table that a request's name picks from, never a path.
STATIC_FILES = {
    p.name: _STATIC_TYPES[p.suffix]
    for p in sorted(STATIC_DIR.iterdir())
    if p.suffix in _STATIC_TYPES and p.is_file()
}
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
        "reorder the 200 best files by score",
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


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


def create_app(
    index_or_catalogue=None,
    model=None,
    settings: Settings | None = None,
    *,
    service: Service | None = None,
) -> FastAPI:
    """The ASGI app over an `earshot.Index` or a `Catalogue` and the model that indexed it,
    or over a `service` already made (`earshot.scale.serve`: the same page over shards)."""
    from earshot import __version__

    if service is not None:
        svc, settings = service, service.settings
    else:
        catalogue = getattr(index_or_catalogue, "catalogue", index_or_catalogue)
        model = model if model is not None else getattr(index_or_catalogue, "model", None)
        if model is None:
            raise EarshotError("create_app needs the model that indexed the catalogue")
        settings = settings or Settings()
        svc = Service(catalogue, model, settings)

    app = FastAPI(
        title="earshot",
        version=__version__,
        summary="Search recordings by describing them, or by example.",
        description="Every answer is JSON; an error is an object with an 'error' sentence and "
        "the 'status' code. Files are named by catalogue id only. When the server was started "
        "with a token, send the header 'Authorization: Bearer TOKEN' (the page uses a cookie). "
        "POSTs from web pages of other origins (by their Origin header) are refused with 403 "
        "unless the server names them with --cors-origin.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = svc
    app.state.settings = settings

    # -- errors: always JSON, always a sentence -------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        response = error_response(exc.status, exc.message)
        if exc.status in (408, 413, 415):  # the body may be unread: end the connection
            response.headers["connection"] = "close"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"no such page or endpoint: {request.url.path} (the API is under /api/)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        ]
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(EarshotError)
    async def _earshot_error(request: Request, exc: EarshotError):
        from earshot.search import SearchError

        return error_response(400 if isinstance(exc, SearchError) else 500, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    # -- the page --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return _static_file("index.html", "text/html; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return _static_file("docs.html", "text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC_FILES:  # the name picks from a fixed table, never a path
            raise ApiError(404, f"no static file '{shorten(name)}'")
        return _static_file(name, STATIC_FILES[name])

    # -- the API ---------------------------------------------------------------------------
    @app.get("/api/health", tags=["server"], summary="Liveness: the model and catalogue are up")
    def health():
        return {"status": "ok", "model_id": svc.model_id, "generation": svc.cat.generation}

    @app.get("/api/stats", tags=["server"], summary="The catalogue, the model and the server")
    def stats():
        c = svc.model.config
        return {
            "catalogue": svc.cat.stats(),
            "model": {
                "id": svc.model_id,
                "name": Path(svc.model.source).name if getattr(svc.model, "source", None) else None,
                "untrained": settings.untrained,
                "audio_encoder": c.encoder.name,
                "text_model": c.text.model,
                "window_s": c.audio.window_s,
                "hop_s": c.audio.hop_s,
            },
            "server": {
                "uptime_s": round(time.time() - svc.started, 1),
                "requests": dict(svc.counts),
                "text_batches": svc.batcher.batches,
                "peaks_cached": len(svc.peaks),
                "token_required": settings.token is not None,
                "limits": {
                    "max_k": MAX_K,
                    "max_upload_mb": settings.max_upload_mb,
                    "max_upload_s": settings.max_upload_s,
                    "max_clip_s": settings.max_clip_s,
                },
            },
        }

    @app.get(
        "/api/skipped",
        tags=["files"],
        summary="Files the catalogue could not index, with the reasons, by path",
    )
    def skipped(
        limit: int = Query(1000, ge=1, le=10000, description="how many files"),
        offset: int = Query(0, ge=0, le=MAX_ID, description="how many to pass over first"),
    ):
        return {
            "count": svc.cat.stats()["files_skipped"],
            "limit": limit,
            "offset": offset,
            "skipped": svc.cat.skipped_files(limit, offset),
        }

    @app.get("/api/folders", tags=["files"], summary="Folders holding indexed files, most first")
    def folders(limit: int = Query(500, ge=1, le=5000)):
        return {"folders": [{"folder": f, "files": n} for f, n in svc.cat.folders(limit)]}

    @app.get(
        "/api/search",
        tags=["search"],
        summary="Files that sound like a description (or, with only tags, the files with them)",
    )
    def search(
        q: str = Query(
            "",
            max_length=1000,
            description="what you hear, e.g. 'a dog barks'; may be left out when tag is given",
        ),
        k: int = Query(20, ge=1, le=MAX_K, description="how many files"),
        folder: Folder = None,
        min_duration: MinDuration = None,
        max_duration: MaxDuration = None,
        formats: Formats = None,
        tags: Tags = None,
        tag_min: TagMin = None,
        hybrid: bool | None = Query(
            None,
            description="fuse keyword matches on names, tags and embedded metadata; default: "
            "on where the catalogue holds embedded descriptions or a query word picks files "
            "out by name or folder",
        ),
        offset: Offset = 0,
        sort: Sort = "score",
        spans: Spans = 1,
        show_weak: ShowWeak = True,
    ):
        filters = _filters(folder, min_duration, max_duration, formats, tags, tag_min)
        page = {"offset": offset, "sort": sort, "spans": spans}
        t0 = time.perf_counter()
        if not q.strip() and filters.tags:
            hits = svc.search_tags(k, filters, **page)
        else:
            hits = svc.search_text(q, k, filters, hybrid, **page)
        query = {"text": q, "k": k, "offset": offset, "sort": sort}
        reason = svc.why_empty(hits, filters, q)
        return _answer(query, filters, hits, t0, show_weak, q.strip() or None, reason=reason)

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
        segment: int | None = Query(None, ge=1, le=MAX_ID, description="a segment id of this file"),
        k: int = Query(20, ge=1, le=MAX_K),
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
        q: ExampleFilters = "",
    ):
        filters = _filters(folder, min_duration, max_duration, formats, tags, tag_min)
        filters = svc.searcher.example_filters(q, filters)
        info = svc.file(file_id)
        t0 = time.perf_counter()
        hits = svc.similar(info, segment, k, filters, offset=offset, sort=sort, spans=spans)
        query = {"file_id": info["id"], "name": info["name"], "segment_id": segment, "k": k}
        if q.strip():
            query["q"] = q
        if segment is not None:
            row = svc.cat.segments([segment])[segment]
            query |= {"start": round(row.start_s, 3), "end": round(row.end_s, 3)}
        reason = svc.why_empty(hits, filters)
        return _answer(query, filters, hits, t0, show_weak, by_example=True, reason=reason)

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
        q: ExampleFilters = "",
    ):
        filters = _filters(folder, min_duration, max_duration, formats, tags, tag_min)
        filters = svc.searcher.example_filters(q, filters)  # refused before the upload is read
        path, name = await receive_upload(request, settings)
        page = {"offset": offset, "sort": sort, "spans": spans}
        try:
            t0 = time.perf_counter()
            hits, seconds = await run_in_threadpool(
                lambda: svc.like_upload(path, name, k, start, end, filters, **page)
            )
        finally:
            os.unlink(path)
        query = {"upload": name, "duration": round(seconds, 3), "k": k}
        if q.strip():
            query["q"] = q
        reason = svc.why_empty(hits, filters)
        return _answer(query, filters, hits, t0, show_weak, by_example=True, reason=reason)

    @app.get("/api/files/{file_id}", tags=["files"], summary="A file's metadata and segments")
    def file_info(file_id: str):
        info = svc.file(file_id)
        segments = svc.cat.file_segments(info["id"])
        keep = ("id", "path", "folder", "name", "ext", "size", "duration_s", "sample_rate",
                "channels", "format", "subtype", "tags", "status", "skip_reason",
                "meta")  # fmt: skip
        return {
            **{key: info.get(key) for key in keep},
            "sound_tags": tags_json(info.get("sound_tags") or ()),
            "segments": [
                {"segment_id": s.segment_id, "start": round(s.start_s, 3), "end": round(s.end_s, 3)}
                for s in segments
            ],
        }

    @app.get(
        "/api/audio/{file_id}",
        tags=["files"],
        summary="The recording, seekable (HTTP Range): the file itself where browsers play its "
        "format, else transcoded on the fly to 16-bit WAV (AIFF, CAF, W64, AU, WMA, ALAC...)",
    )
    def audio(file_id: str, request: Request):
        info = svc.playable(file_id)
        svc.counts["audio"] += 1
        return audio_response(info, request.headers.get("range"))

    @app.get(
        "/api/clip/{file_id}",
        tags=["files"],
        summary="A span of a recording as a file to download, cut at its own rate and "
        "channels: WAV, or the file's own format",
    )
    def clip(
        file_id: str,
        start: float = Query(..., ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="s"),
        end: float = Query(..., gt=0, le=MAX_SECONDS, allow_inf_nan=False, description="s"),
        format: Literal["wav", "source"] = Query(
            "wav",
            description="wav, or source: the recording's own format where it can be "
            "written (else WAV, said in the X-Earshot-Note header)",
        ),
        fade: float = Query(
            0, ge=0, le=MAX_FADE_MS, allow_inf_nan=False, description="fade in and out (ms)"
        ),
        fade_shape: Literal["linear", "equal-power"] = Query("linear"),
    ):
        if end <= start:
            raise ApiError(422, f"end ({end:g} s) must be after start ({start:g} s)")
        info = svc.playable(file_id)
        svc.counts["clip"] += 1
        return clip_response(info, start, end, format, fade, fade_shape, settings.max_clip_s)

    @app.get(
        "/api/peaks/{file_id}",
        tags=["files"],
        summary="A waveform thumbnail: the loudest |sample| in each of n equal slices",
    )
    def peaks(file_id: str, n: int = Query(400, ge=8, le=4000)):
        info = svc.playable(file_id)
        svc.counts["peaks"] += 1
        key = (info["id"], info["size"], info["mtime_ns"], n)
        try:
            values, duration = svc.peaks.get(key, info["path"], n)
        except AudioDecodeError as e:
            raise ApiError(422, f"cannot draw file {info['id']}: {e.reason}") from None
        return {"file_id": info["id"], "duration": round(duration, 3), "peaks": values}

    # Guard inside CORS: a CORS preflight carries no credentials, so it must be answered first.
    app.add_middleware(Guard, settings=settings)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Range"],
            expose_headers=[
                "Content-Range",
                "Accept-Ranges",
                "Content-Length",
                "Content-Disposition",
                "X-Earshot-Note",
            ],
        )
    return app


# -- helpers ------------------------------------------------------------------------------


def _static_file(name: str, media_type: str) -> FileResponse:
    return FileResponse(
        STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"}
    )


def _filters(folder, min_duration, max_duration, formats, tags=None, tag_min=None):
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


def _answer(
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
        "hybrid": bool(getattr(results, "hybrid", False)),  # scores: reciprocal-rank sums
        "hits": [h.as_dict() for h in shown],  # as `earshot search --json`
    }
