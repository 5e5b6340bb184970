"""Receiving an uploaded example sound: streamed to a temporary file, capped before it is read.

Used by `POST /api/search/like`. The body is either a multipart form with a field named 'file'
(Content-Type multipart/form-data) or raw bytes sent as application/octet-stream, audio/* or
video/* (an optional X-Filename header names it); any other Content-Type, or none, is refused
with 415: a web page of another site can send text/plain or a urlencoded form to this server
without a CORS preflight, and the raw types it cannot. (Multipart forms it can send too:
`guard.py` refuses those by their Origin.) The caller deletes the file.

Time: the body must arrive within `Settings.upload_timeout_s`, with no gap longer than
`Settings.upload_idle_s`, or the answer is 408 and the connection is closed, so a client
sending a byte now and then (slow-loris) cannot hold the upload open.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from earshot.serve.service import ApiError, Settings, shorten

_MULTIPART_SLACK = 64 * 1024  # form boundaries and part headers around the file itself


RAW_TYPES = ("application/octet-stream", "audio/", "video/")


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def _upload_name(raw: str | None) -> str:
    name = os.path.basename(str(raw or "").replace("\\", "/")) or "upload"
    return shorten(name, 120)


async def receive_upload(request: Request, settings: Settings) -> tuple[str, str]:
    """Stream the body to a temporary file; 413 as soon as it is known to be too large.

    A declared Content-Length over the cap is refused before a byte is read; a body without one
    is counted as it arrives and refused at the first chunk past the cap.
    """
    limit = settings.max_upload_bytes
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    multipart = media == "multipart/form-data"
    if not multipart and not (media.startswith(RAW_TYPES[1:]) or media == RAW_TYPES[0]):
        raise ApiError(
            415,
            f"an upload is sent as multipart/form-data (a field named 'file'), or as raw bytes "
            f"with Content-Type application/octet-stream or audio/*, not "
            f"{repr(shorten(media, 60)) if media else 'without a Content-Type'}",
        )
    cap = limit + (_MULTIPART_SLACK if multipart else 0)
    too_large = ApiError(
        413,
        f"the upload is larger than {settings.max_upload_mb:g} MB, the limit for examples "
        "(earshot serve --max-upload-mb): send a shorter sound",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "the Content-Length header is not a number")
        if int(declared) > cap:
            raise too_large

    async def body():
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.upload_timeout_s
        chunks = request.stream().__aiter__()
        received = 0
        while True:
            wait = min(settings.upload_idle_s, deadline - loop.time())
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _TooSlow from None
            received += len(chunk)
            if received > cap:
                raise _TooLarge
            yield chunk

    fd, path = tempfile.mkstemp(prefix="earshot-upload-")
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            if multipart:
                parser = MultiPartParser(request.headers, body(), max_files=1, max_fields=8)
                form = await parser.parse()
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise ApiError(400, "send the sound as a multipart form field named 'file'")
                name = _upload_name(upload.filename)
                while chunk := await upload.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise _TooLarge
                    out.write(chunk)
                await upload.close()
            else:
                name = _upload_name(request.headers.get("x-filename"))
                async for chunk in body():
                    written += len(chunk)
                    out.write(chunk)
        if written == 0:
            raise ApiError(400, "the upload is empty: send an audio file")
        return path, name
    except _TooLarge:
        os.unlink(path)
        raise too_large from None
    except _TooSlow:
        os.unlink(path)
        raise ApiError(
            408,
            f"the upload did not arrive in time (all of it within {settings.upload_timeout_s:g} "
            f"s, no pause over {settings.upload_idle_s:g} s): send it again, or a shorter sound",
        ) from None
    except MultiPartException as e:
        os.unlink(path)
        raise ApiError(400, f"the upload is not a valid multipart form: {e.message}") from None
    except BaseException:
        os.unlink(path)
        raise
