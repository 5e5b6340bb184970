"""`earshot serve`'s guards: ids only, capped uploads, the token, Host, CORS, the bind warning."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.serve import Settings, create_app
from earshot.serve.app import STATIC_DIR
from earshot.testing.serve import ServerThread, build_library

BASE = "http://127.0.0.1:8000"
SECRET = "earshot-test-secret-7f3a"


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_text_dir):
    return build_library(tmp_path_factory.mktemp("serve-security"), tiny_text_dir)


@pytest.fixture(scope="module")
def catalogue(lib):
    cat = Catalogue(lib.db, readonly=True)
    yield cat
    cat.close()


@pytest.fixture(scope="module")
def model(lib):
    return load_model(lib.model_dir)


def make_client(catalogue, model, **settings) -> TestClient:
    return TestClient(create_app(catalogue, model, Settings(**settings)), base_url=BASE)


@pytest.fixture(scope="module")
def app(catalogue, model):
    return create_app(catalogue, model, Settings(max_upload_mb=0.5, max_upload_s=5))


# --- paths never reach the filesystem ---------------------------------------------------------

_opened: list[str] | None = None
_hook_lock = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event in ("open", "os.open") and args:
        target = args[0]
        if isinstance(target, bytes | str):
            with _hook_lock:
                _opened.append(target.decode() if isinstance(target, bytes) else target)


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only when asked


def finished(sent: list[dict]) -> bool:
    """Whether the app has sent the last part of its response."""
    last = sent[-1] if sent else {}
    return last.get("type") == "http.response.body" and not last.get("more_body")


def asgi_get(app, raw_path: str, headers: list | None = None) -> tuple[int, dict, bytes]:
    """One GET straight into the ASGI app with `raw_path` as the client sent it (no client-side
    normalisation of '..'); the path is percent-decoded the way uvicorn decodes it."""
    path, _, query = raw_path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []
    asked = 0

    async def receive():
        # Like a server: the request once, then nothing until the client goes away.
        nonlocal asked
        asked += 1
        if asked == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        while not finished(sent):
            await asyncio.sleep(0.001)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


TRAVERSALS = [
    "/api/audio/../../../../etc/passwd",
    "/api/audio/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/api/audio/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/audio/%2e%2e",
    "/api/audio/..",
    "/api/audio/%2Fetc%2Fpasswd",
    "/api/audio/1%00",
    "/api/audio/1%2f..%2f..%2fsecret.txt",
    "/api/files/..%2F..%2Fetc%2Fpasswd",
    "/api/peaks/%2e%2e%2fsecret.txt",
    "/api/similar/..%5c..%5csecret.txt",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/../app.py",
    "/static/index.html%00.js",
    "/static/app.js%2f..%2f..%2fapp.py",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


def test_path_like_ids_never_read_a_file(app, lib, tmp_path):
    global _opened
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    targets = [*TRAVERSALS, f"/api/audio/{secret}", f"/api/audio/{str(secret).replace('/', '%2f')}"]
    # Warm up first: the first requests import modules lazily, and Python reads source files.
    for route in ("audio", "files", "peaks", "similar"):
        assert asgi_get(app, f"/api/{route}/1")[0] == 200
        assert asgi_get(app, f"/api/{route}/x")[0] == 404
    assert asgi_get(app, "/static/app.js")[0] == 200
    _opened = []
    try:
        answers = [(raw, *asgi_get(app, raw)) for raw in targets]
    finally:
        opened, _opened = _opened, None
    for raw, status, headers, body in answers:
        assert status == 404, raw
        assert headers["content-type"] == "application/json", raw
        error = json.loads(body)["error"]
        assert error and SECRET not in error and "root:" not in body.decode(), raw
    readable = {str(p) for p in lib.root.rglob("*")} | {str(p) for p in STATIC_DIR.iterdir()}
    assert not [p for p in opened if "passwd" in p or "secret" in p or p.endswith("app.py")]
    assert not [p for p in opened if p.startswith(("/etc", str(tmp_path)))]
    assert not [p for p in opened if p not in readable and not p.startswith(("/proc", "/sys"))]


def test_traversal_over_a_real_socket(app):
    """The same through uvicorn, with the raw request line a client could send."""
    with ServerThread(app) as server:
        for raw in ("/api/audio/../../../../etc/passwd", "/static/..%2f..%2fserve%2fapp.py"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.putrequest("GET", raw, skip_accept_encoding=True)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
            conn.close()
            assert r.status == 404, raw
            assert b"root:" not in body and b"def create_app" not in body
            assert json.loads(body)["status"] == 404


def test_only_catalogued_files_are_served(app, catalogue):
    client = TestClient(app, base_url=BASE)
    ids = {row[0] for row in catalogue.db.execute("SELECT id FROM files")}
    for fid in range(0, max(ids) + 3):
        status = client.get(f"/api/audio/{fid}").status_code
        assert status == (200 if fid in ids else 404), fid


# --- uploads ----------------------------------------------------------------------------------


def asgi_post(app, headers: list, chunks, path: str = "/api/search/like"):
    """POST into the ASGI app, counting how much of the body the app pulled."""
    pulled = {"messages": 0, "bytes": 0}
    it = iter(chunks)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def receive():
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled["messages"] += 1
        pulled["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def endless(chunk: bytes, limit: int = 10_000):
    for _ in range(limit):
        yield chunk


def test_declared_oversized_upload_is_refused_before_a_byte_is_read(app):
    chunk = b"\0" * 65536
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"104857600")]
    status, body, pulled = asgi_post(app, headers, endless(chunk))
    assert status == 413
    assert "larger than 0.5 MB" in body["error"] and "--max-upload-mb" in body["error"]
    assert pulled["messages"] == 0


def test_undeclared_oversized_upload_stops_at_the_cap(app):
    chunk = b"\0" * 65536
    cap = int(0.5 * 2**20)
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    for ctype, first in (
        (b"application/octet-stream", chunk),
        (b"multipart/form-data; boundary=xyz", part),
    ):
        body_chunks = itertools.chain([first], endless(chunk))
        status, body, pulled = asgi_post(app, [(b"content-type", ctype)], body_chunks)
        assert status == 413, ctype
        assert "larger than 0.5 MB" in body["error"]
        # Read up to the cap (plus the multipart allowance) and one chunk past it; no further.
        assert pulled["bytes"] <= cap + 64 * 1024 + len(chunk), ctype


def test_oversized_upload_through_the_client(app, lib):
    client = TestClient(app, base_url=BASE)
    big = b"RIFF" + b"\0" * (600 * 1024)
    r = client.post("/api/search/like", files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413 and r.json()["status"] == 413
    assert "larger than 0.5 MB" in r.json()["error"]


def test_too_long_audio_is_refused_with_its_length(app, lib):
    client = TestClient(app, base_url=BASE)
    wren = (lib.root / "birds" / "wren.wav").read_bytes()  # 12 s, 0.5 MB at 22 kHz 16-bit
    assert len(wren) > 0.5 * 2**20  # too big for this app, so use a roomier one below
    roomy = create_app(app.state.service.cat, app.state.service.model, Settings(max_upload_s=5))
    r = TestClient(roomy, base_url=BASE).post(
        "/api/search/like", files={"file": ("wren.wav", wren, "audio/wav")}
    )
    assert r.status_code == 413
    assert r.json()["error"] == (
        "'wren.wav' is 12.0 s long; examples are limited to 5 s (earshot serve "
        "--max-upload-s): trim it to the part you mean"
    )
    short = (lib.root / "birds" / "robin_song.wav").read_bytes()
    ok = client.post("/api/search/like", files={"file": ("robin.wav", short, "audio/wav")})
    assert ok.status_code == 200


# --- the token --------------------------------------------------------------------------------

ROUTES = [
    "/",
    "/docs",
    "/openapi.json",
    "/static/app.js",
    "/static/style.css",
    "/static/favicon.svg",
    "/api/health",
    "/api/stats",
    "/api/folders",
    "/api/search?q=rain",
    "/api/files/1",
    "/api/audio/1",
    "/api/peaks/1",
    "/api/similar/1",
    "/no/such/page",
]


def test_token_is_required_on_every_route(catalogue, model, lib):
    client = make_client(catalogue, model, token="s3cret-token")
    upload = {
        "files": {"file": ("robin.wav", (lib.root / "birds" / "robin_song.wav").read_bytes())}
    }
    for route in ROUTES:
        r = client.get(route)
        assert r.status_code == 401, route
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"].startswith("this server needs a token"), route
        wrong = client.get(route, headers={"Authorization": "Bearer s3cret-tokex"})
        assert wrong.status_code == 401, route
        right = client.get(route, headers={"Authorization": "Bearer s3cret-token"})
        assert right.status_code == (404 if route == "/no/such/page" else 200), route
    assert client.post("/api/search/like", **upload).status_code == 401
    r = client.post("/api/search/like", headers={"Authorization": "Bearer s3cret-token"}, **upload)
    assert r.status_code == 200


def test_token_in_the_link_becomes_a_cookie(catalogue, model):
    client = make_client(catalogue, model, token="s3cret-token")
    r = client.get("/?token=wrong", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert "That token is not right" in r.text and '<form method="get"' in r.text
    r = client.get("/?token=s3cret-token&q=rain", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?q=rain"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret-token" not in cookie
    # The client keeps the cookie: the page, its scripts and the API now answer.
    assert client.get("/").status_code == 200
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/search", params={"q": "rain"}).status_code == 200
    client.cookies.clear()
    assert client.get("/api/health").status_code == 401
    assert client.get("/api/health?token=s3cret-token").status_code == 200


def test_no_token_no_check(catalogue, model):
    client = make_client(catalogue, model)
    assert client.get("/api/health").status_code == 200


# --- Host, CORS, headers ----------------------------------------------------------------------


def test_host_header_must_be_loopback_unless_exposed(catalogue, model):
    client = make_client(catalogue, model)
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example:8000", "127.0.0.1.evil.example", "attacker.test"):
        r = client.get("/api/health", headers={"Host": host})
        assert r.status_code == 400, host
        assert "DNS rebinding" in r.json()["error"]
    exposed = make_client(catalogue, model, allowed_hosts=None)
    assert exposed.get("/api/health", headers={"Host": "my-server.lan:8000"}).status_code == 200


def test_cors_is_off_by_default(catalogue, model):
    client = make_client(catalogue, model)
    r = client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    pre = client.options(
        "/api/search",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert not [h for h in pre.headers if h.lower().startswith("access-control-")]


def test_cors_for_named_origins_only(catalogue, model):
    client = make_client(
        catalogue, model, cors_origins=("http://localhost:3000",), token="s3cret-token"
    )
    pre = client.options(
        "/api/search",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert pre.status_code == 200  # answered before the token check: preflights carry none
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = client.get(
        "/api/health",
        headers={"Origin": "http://localhost:3000", "Authorization": "Bearer s3cret-token"},
    )
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = client.get(
        "/api/health",
        headers={"Origin": "http://evil.example", "Authorization": "Bearer s3cret-token"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_security_headers(catalogue, model):
    client = make_client(catalogue, model)
    for route in ("/", "/api/health", "/api/nothing"):
        r = client.get(route)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cross-origin-resource-policy"] == "same-origin"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


# --- the command --------------------------------------------------------------------------------


def run_serve(lib, monkeypatch, capsys, *flags):
    import uvicorn

    from earshot.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    code = main(["serve", "--db", str(lib.db), *flags])
    err = capsys.readouterr().err
    for app, _ in calls:
        app.state.service.cat.close()
    return code, err, calls


def test_binding_beyond_loopback_warns(lib, monkeypatch, capsys):
    monkeypatch.delenv("EARSHOT_TOKEN", raising=False)
    code, err, calls = run_serve(lib, monkeypatch, capsys, "--host", "0.0.0.0", "--port", "8123")
    assert code == 0 and calls[0][1]["host"] == "0.0.0.0" and calls[0][1]["port"] == 8123
    assert "warning: listening on 0.0.0.0" in err and "set --token" in err
    assert calls[0][0].state.settings.allowed_hosts is None

    code, err, calls = run_serve(lib, monkeypatch, capsys)
    assert code == 0 and calls[0][1]["host"] == "127.0.0.1"
    assert "warning" not in err and "http://127.0.0.1:8000/" in err
    assert calls[0][0].state.settings.allowed_hosts == ("127.0.0.1", "localhost", "::1")


def test_token_from_flag_or_environment(lib, monkeypatch, capsys):
    monkeypatch.setenv("EARSHOT_TOKEN", "from-env")
    code, err, calls = run_serve(lib, monkeypatch, capsys, "--host", "0.0.0.0")
    assert calls[0][0].state.settings.token == "from-env"
    assert "warning: listening on 0.0.0.0" in err and "set --token" not in err
    assert "?token=from-env" in err
    code, err, calls = run_serve(lib, monkeypatch, capsys, "--token", "flag")
    assert calls[0][0].state.settings.token == "flag"
    code, err, calls = run_serve(lib, monkeypatch, capsys, "--token", "  ")
    assert code == 1 and "--token (or EARSHOT_TOKEN) is empty" in err and not calls


def test_serve_without_a_catalogue_says_what_to_do(tmp_path, monkeypatch, capsys):
    from earshot.cli import main

    code = main(["serve", "--db", str(tmp_path / "none.sqlite")])
    assert code == 1
    assert "no catalogue at" in capsys.readouterr().err
    assert not Path(tmp_path / "none.sqlite").exists()
