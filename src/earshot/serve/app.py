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
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from earshot.errors import AudioDecodeError, EarshotError
from earshot.hits import tags_json
from earshot.serve.guard import Guard
from earshot.serve.params import MAX_ID, MAX_K, MAX_SECONDS
from earshot.serve.playback import MAX_FADE_MS, audio_response, clip_response
from earshot.serve.search_routes import add_search_routes
from earshot.serve.service import (
    ApiError,
    Service,
    Settings,
    shorten,
)

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

    add_search_routes(app, svc, settings)

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
