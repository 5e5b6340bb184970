"""The server's gate: Host check, optional bearer token, security headers on every answer.

A pure ASGI middleware (no per-request task or body buffering), so it adds microseconds.

- Host: while the server listens on loopback only, a request whose Host header is not a loopback
  name is refused. A web page on another site can point a DNS name at 127.0.0.1 (DNS
  rebinding); the browser would then send that name as Host, and this check stops it reading
  the catalogue.
- Token: when set, every route (page, static files, /docs, /openapi.json, the API) needs it as
  `Authorization: Bearer <token>`, as the `earshot_token` cookie (holding its SHA-256, set when
  the page is opened once with `?token=`), or as `?token=`. Compared in constant time.
- Cross-site requests: a request that can change or cost something (any method but GET, HEAD
  and OPTIONS: the upload of a search by example) is refused with 403 when a browser says it
  comes from a page of another origin: an `Origin` header naming another host than the request's
  Host (and not one of --cors-origin), or `Sec-Fetch-Site: cross-site` / `same-site`. Such a
  page can send a multipart form without a CORS preflight (CSRF); clients that are not browsers
  send no Origin and are not affected. `uploads.py` also takes only the content types the API
  documents, so a `text/plain` "simple" POST is refused too.
- Redirects (`?token=` taken out of the address) go to a path on this site only: never to a
  scheme-relative `//host` or `/\\host`, which browsers would follow off-site.
- Headers: a strict Content-Security-Policy (everything from this origin, nothing inline),
  nosniff, no framing, no referrer, and Cross-Origin-Resource-Policy: same-origin so another
  site cannot embed the recordings.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.datastructures import Headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
COOKIE = "earshot_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_TOKEN_PAGE_CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>earshot: token needed</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1rem;
color:#1d2430}}input,button{{font:inherit;padding:.5rem .7rem;border:1px solid #8a94a6;
border-radius:6px}}button{{background:#1f5fd1;color:#fff;border-color:#1f5fd1}}
p.err{{color:#a01d1d}}</style></head>
<body><h1>earshot</h1>
<p>This server was started with a token. Open the link that <code>earshot serve</code> printed,
or enter the token here.</p>{error}
<form method="get" action="/"><label for="token">Token</label><br>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button>Open</button></form></body></html>
"""


def host_name(host_header: str) -> str:
    """'127.0.0.1:8000' → '127.0.0.1'; '[::1]:8000' → '::1'; 'Example.COM.' → 'example.com'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    name = host_name(host) if host.startswith("[") else host.strip().lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Guard:
    def __init__(self, app, settings):
        self.app = app
        self.allowed = None if settings.allowed_hosts is None else set(settings.allowed_hosts)
        self.token = settings.token
        self.digest = token_digest(settings.token) if settings.token else None
        self.cors_origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = list(message.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in own):
                    own.append((b"content-security-policy", _CSP.encode()))
                message["headers"] = [*own, *_SECURITY_HEADERS]
            await send(message)

        if self.allowed is not None:
            host = host_name(headers.get("host", ""))
            if host not in self.allowed:
                await _json(
                    send_secured,
                    400,
                    f"this server answers to {', '.join(sorted(self.allowed))} only, not "
                    f"'{host[:80]}' (a guard against DNS rebinding); start it with --host to "
                    "serve other names",
                )
                return
        if scope["method"] not in SAFE_METHODS and not self._same_origin(headers):
            await _json(
                send_secured,
                403,
                f"a web page of another site ({_shown_origin(headers)}) may not send "
                f"{scope['method']} requests to this server; start it with --cors-origin "
                "ORIGIN to let that page use the API",
            )
            return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if not self._authorised(headers, query):
                await self._refuse(scope, headers, send_secured, "token" in query)
                return
            if "token" in query and scope["method"] == "GET" and not _is_api(scope):
                # Opened with ?token=: keep it in a cookie and take it out of the address bar.
                rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
                location = on_site(scope["path"]) + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={self.digest}; Path=/; HttpOnly; SameSite=Strict"
                await send_secured(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [
                            (b"location", location.encode("latin-1", "replace")),
                            (b"set-cookie", cookie.encode()),
                            (b"content-length", b"0"),
                        ],
                    }
                )
                await send_secured({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send_secured)

    def _same_origin(self, headers: Headers) -> bool:
        """Whether a browser, if one sent this, sent it from a page of this server (or of an
        origin named with --cors-origin). A request without Origin or Sec-Fetch-Site is not
        from a browser's cross-site page, and passes."""
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "none").lower() in ("same-origin", "none")
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc == headers.get("host", "").strip().lower()

    def _authorised(self, headers: Headers, query: dict) -> bool:
        assert self.token is not None and self.digest is not None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return True
        if "token" in query and _same(query["token"], self.token):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and _same(value, self.digest):
                return True
        return False

    async def _refuse(self, scope: Scope, headers: Headers, send: Send, tried: bool) -> None:
        if not _is_api(scope) and "text/html" in headers.get("accept", ""):
            error = '<p class="err">That token is not right.</p>' if tried else ""
            body = _TOKEN_PAGE.format(error=error).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="earshot"'),
                        # This page alone carries its style inline, and loads nothing.
                        (b"content-security-policy", _TOKEN_PAGE_CSP),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await _json(
            send,
            401,
            "this server needs a token: send 'Authorization: Bearer <token>', or open the link "
            "`earshot serve` printed",
            [(b"www-authenticate", b'Bearer realm="earshot"')],
        )


def on_site(path: str) -> str:
    """A redirect target that stays on this site: `path` with one leading slash, percent-
    encoded. '//evil.com/' (or '/\\evil.com/') would be a scheme-relative URL to another host."""
    return quote("/" + path.lstrip("/\\"), safe="/!$&'()*+,;=:@-._~")


def _shown_origin(headers: Headers) -> str:
    origin = headers.get("origin")
    if origin is not None:
        return "Origin " + "".join(c if c.isprintable() else "?" for c in origin[:80])
    return f"Sec-Fetch-Site: {headers.get('sec-fetch-site', '')[:20]}"


def _is_api(scope: Scope) -> bool:
    return scope["path"].startswith("/api/") or scope["path"] == "/openapi.json"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


async def _json(send: Send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
