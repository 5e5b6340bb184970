"""`earshot serve` under hostile requests (issue #19), each test built from a red-team repro:
out-of-range numbers (HTTP 500s), an off-site redirect, an upload whose header lies about its
length, cross-site uploads, and clients that send slowly (slow-loris)."""

from __future__ import annotations

import http.client
import io
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from earshot.index.store import Catalogue, FileRecord
from earshot.model.io import load_model, model_id
from earshot.serve import Settings, create_app
from earshot.testing.audio import write_tone
from earshot.testing.serve import ServerThread

BASE = "http://127.0.0.1:8000"
TOKEN = "faults-token-3b9e"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, model):
    """Three real recordings (for audio and peaks) with random vectors of two windows each."""
    base = tmp_path_factory.mktemp("serve-faults")
    dim = model.config.joint_dim
    rng = np.random.default_rng(0)
    with Catalogue(base / "c.sqlite") as cat:
        cat.bind_model(model_id(model), dim)
        with cat.batch():
            for i, freq in enumerate((300.0, 900.0, 2000.0)):
                path = write_tone(base / f"tone{i}.wav", 3.0, 16000, freq=freq, seed=i)
                record = FileRecord(str(path), path.stat().st_size, 1, f"h{i}", 3.0, 16000, 1,
                                    "WAV", "PCM_16")  # fmt: skip
                v = rng.standard_normal((2, dim))
                cat.put_file(record, [(0.0, 2.0, v[0]), (1.0, 3.0, v[1])])
    cat = Catalogue(base / "c.sqlite", readonly=True)
    yield cat
    cat.close()


def make_app(catalogue, model, **settings):
    return create_app(catalogue, model, Settings(**settings))


@pytest.fixture(scope="module")
def client(catalogue, model):
    with TestClient(make_app(catalogue, model), base_url=BASE) as c:
        yield c


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, 0.5 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- 4. every number in range, every error a 4xx in JSON ---------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/similar/1?segment=99999999999999999999", "segment"),  # beyond SQLite's int64
        ("/api/similar/1?segment=9223372036854775808", "segment"),
        ("/api/search?q=rain&min_duration=inf", "min_duration"),  # JSON has no inf
        ("/api/search?q=rain&max_duration=1e400", "max_duration"),
        ("/api/similar/1?min_duration=-inf", "min_duration"),
        ("/api/search?q=rain&tag_min=nan", "tag_min"),
        ("/api/search?q=rain&k=99999999999999999999", "k"),
        ("/api/peaks/1?n=99999999999999999999", "n"),
        ("/api/search?q=rain&folder=/" + "a" * 5000, "folder"),
    ],
)
def test_out_of_range_numbers_are_a_422_naming_the_parameter(client, url, name):
    r = client.get(url)
    assert r.status_code == 422, r.text
    assert r.json()["status"] == 422 and r.json()["error"].startswith(f"{name}: ")


def test_the_segment_at_the_top_of_sqlites_range_is_a_404(client):
    r = client.get(f"/api/similar/1?segment={2**63 - 1}")
    assert r.status_code == 404 and "has no segment" in r.json()["error"]


# Values for each kind of parameter: junk, edges, out of range, and what breaks parsers.
_NUMBERS = ["", "-1", "1.5", "1e400", "inf", "nan", "99999999999999999999", "%00", "abc"]
_TEXTS = ["", "%00", "%FF%FE", "%ED%A0%80", "a" * 2000, "../../etc", "NEAR(a b)", "%E2%80%AE"]
_IDS = ["0", "1", "2", "-1", "99999999999999999999", "1e3", "%00", "..%2f..", "abc", "1.0"]


def _params(schema: dict) -> list[tuple[str, str, dict]]:
    """(path, parameter, its schema) for every GET route's parameters in the OpenAPI document."""
    out = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            for p in op.get("parameters", []):
                out.append((method, path, p))
    return out


def _kind(param: dict) -> str:
    s = param.get("schema", {})
    types = {t.get("type") for t in s.get("anyOf", [s])} | {s.get("items", {}).get("type")}
    if types & {"integer", "number"}:
        return "number"
    return "text"


def test_no_parameter_of_any_endpoint_gives_a_500(client):
    schema = client.get("/openapi.json").json()
    seen = set()
    failures = []
    for method, path, param in _params(schema):
        values = _IDS if param["in"] == "path" else _NUMBERS if _kind(param) == "number" else _TEXTS
        for value in values:
            if param["in"] == "path":
                url = path.replace("{" + param["name"] + "}", value)
            else:
                filled = path.replace("{file_id}", "1")
                extra = "q=rain&" if path == "/api/search" and param["name"] != "q" else ""
                url = f"{filled}?{extra}{param['name']}={value}"
            if (method, url) in seen:
                continue
            seen.add((method, url))
            if method == "post":
                r = client.post(url, content=wav_bytes(0.5), headers={"content-type": "audio/wav"})
            else:
                r = client.get(url)
            if r.status_code >= 500:
                failures.append(f"{method.upper()} {url} -> {r.status_code} {r.text[:120]}")
            elif r.status_code >= 400 and r.headers["content-type"] == "application/json":
                assert r.json()["status"] == r.status_code and r.json()["error"]
    assert len(seen) > 100
    assert failures == []


@pytest.mark.parametrize(
    "value", ["bytes=99999999999999999999-", "bytes=-0", "bytes=5-1", "bytes=abc", "bytes=0-0,"]
)
def test_odd_range_headers_are_not_a_500(client, value):
    r = client.get("/api/audio/1", headers={"Range": value})
    assert r.status_code < 500, r.text


# --- 5. a redirect stays on this site ----------------------------------------------------------


def _raw_get(port: int, target: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _location(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"location":
            return value.strip().decode()
    raise AssertionError(f"no Location in {head!r}")


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.com/", "/evil.com/"),
        ("///evil.com/x", "/evil.com/x"),
        ("/\\evil.com/", "/evil.com/"),
        ("/%2F%2Fevil.com/", "/evil.com/"),
        ("/%5C%5Cevil.com", "/evil.com"),
        ("/docs", "/docs"),
        ("/a%3Fb%0D%0ASet-Cookie:x", "/a%3Fb%0D%0ASet-Cookie:x"),
    ],
)
def test_the_token_redirect_never_leaves_the_site(catalogue, model, target, location):
    app = make_app(catalogue, model, token=TOKEN)
    with ServerThread(app) as server:
        head = _raw_get(server.port, f"{target}?token={TOKEN}&q=rain")
    assert head.startswith(b"HTTP/1.1 303"), head
    assert _location(head) == f"{location}?q=rain"
    assert not _location(head).startswith(("//", "/\\")) and "://" not in _location(head)


# --- 6. upload caps count decoded samples; only documented types, only from this site ----------


def _adts(samples: np.ndarray, rate: int, bit_rate: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        for at in range(0, len(samples), 16384):
            frame = av.AudioFrame.from_ndarray(
                samples[None, at : at + 16384].astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def lying_adts(tmp_path_factory) -> Path:
    """ADTS AAC: one loud second at 256 kb/s, then two silent minutes at 8 kb/s. FFmpeg guesses
    an ADTS file's duration from its first frames' bitrate: about 15 s for 121 s of audio."""
    pytest.importorskip("av")
    rate = 8000
    loud = 0.8 * np.random.default_rng(0).standard_normal(rate).clip(-1.25, 1.25)
    path = tmp_path_factory.mktemp("adts") / "long.aac"
    path.write_bytes(_adts(loud, rate, 256_000) + _adts(np.zeros(120 * rate), rate, 8_000))
    return path


def _counting_stream(monkeypatch) -> list[int]:
    """Count the samples the server decodes from uploads."""
    import earshot.audio.io as audio_io

    decoded: list[int] = []
    real = audio_io.stream

    def counted(*args, **kwargs):
        for block in real(*args, **kwargs):
            decoded.append(len(block))
            yield block

    monkeypatch.setattr(audio_io, "stream", counted)
    return decoded


def test_an_upload_longer_than_its_header_says_stops_decoding_at_the_cap(
    catalogue, model, lying_adts, monkeypatch
):
    from earshot.audio.io import probe

    probed = probe(lying_adts).duration_s
    decoded = _counting_stream(monkeypatch)
    app = make_app(catalogue, model, max_upload_s=20)
    r = TestClient(app, base_url=BASE).post(
        "/api/search/like", files={"file": ("long.aac", lying_adts.read_bytes(), "audio/aac")}
    )
    assert r.status_code == 413, r.text
    assert "long.aac" in r.json()["error"] and "--max-upload-s" in r.json()["error"]
    rate = model.config.audio.sample_rate
    # Decoding stopped within one block (5 s) past the cap, not at the end of the file.
    if probed <= 20:  # the header lied (a decoder that reads it right refuses it up front)
        assert sum(decoded) <= (20 + 5 + 1) * rate
    assert sum(decoded) < 60 * rate


def test_the_cap_holds_whatever_the_header_says(catalogue, model, monkeypatch):
    import earshot.audio.io as audio_io

    real = audio_io.probe
    monkeypatch.setattr(
        audio_io,
        "probe",
        lambda path: real(path).__class__(**{**vars(real(path)), "duration_s": 1.0}),
    )
    decoded = _counting_stream(monkeypatch)
    client = TestClient(make_app(catalogue, model, max_upload_s=3), base_url=BASE)
    r = client.post(
        "/api/search/like", content=wav_bytes(30), headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 413 and "holds more than 3 s of audio" in r.json()["error"]
    assert sum(decoded) <= (3 + 5 + 1) * model.config.audio.sample_rate
    ok = client.post(
        "/api/search/like", content=wav_bytes(3), headers={"content-type": "audio/wav"}
    )
    assert ok.status_code == 200 and ok.json()["query"]["duration"] == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8", None]
)
def test_uploads_of_undocumented_content_types_are_refused(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/api/search/like", content=wav_bytes(1), headers=headers)
    if ctype is None:  # httpx sends none for raw bytes without one
        assert "content-type" not in r.request.headers
    assert r.status_code == 415, r.text
    assert "multipart/form-data" in r.json()["error"]
    assert "application/octet-stream" in r.json()["error"]


@pytest.mark.parametrize("ctype", ["application/octet-stream", "audio/wav", "Audio/X-WAV"])
def test_uploads_of_documented_raw_types_are_taken(client, ctype):
    r = client.post("/api/search/like", content=wav_bytes(1), headers={"content-type": ctype})
    assert r.status_code == 200, r.text


def test_a_page_of_another_site_cannot_post_an_upload(catalogue, model):
    upload = {"files": {"file": ("a.wav", wav_bytes(1), "audio/wav")}}
    client = TestClient(make_app(catalogue, model), base_url=BASE)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8001"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = client.post("/api/search/like", headers=headers, **upload)
        assert r.status_code == 403, headers
        assert "another site" in r.json()["error"] and "--cors-origin" in r.json()["error"]
    for headers in ({}, {"Origin": BASE}, {"Sec-Fetch-Site": "same-origin"}):
        assert client.post("/api/search/like", headers=headers, **upload).status_code == 200
    # GETs are not refused by origin (CORS keeps other sites from reading them).
    assert client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 200
    # An origin named with --cors-origin may post.
    named = TestClient(
        make_app(catalogue, model, cors_origins=("http://localhost:3000",)), base_url=BASE
    )
    r = named.post("/api/search/like", headers={"Origin": "http://localhost:3000"}, **upload)
    assert r.status_code == 200, r.text


# --- 7. slow clients are cut off ---------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float, dribble: bytes = b"") -> tuple[bool, bytes]:
    """Send `dribble` a byte at a time every 0.1 s until the server closes the connection;
    (whether it did within `seconds`, what it answered)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + seconds
    answer = b""
    at = 0
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
            if not data:
                return True, answer
            answer += data
        except TimeoutError:
            pass
        except ConnectionError:
            return True, answer
        if dribble:
            try:
                sock.sendall(dribble[at % len(dribble) : at % len(dribble) + 1])
            except OSError:
                return True, answer
            at += 1
    return False, answer


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(catalogue, model):
    app = make_app(catalogue, model)
    with ServerThread(app, head_timeout_s=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            closed, _ = _closed_within(s, 6.0, dribble=b"X-Slow: yes\r\n")
        assert closed
        with socket.create_connection(("127.0.0.1", server.port)) as s:  # silent: cut off too
            closed, _ = _closed_within(s, 6.0)
        assert closed
        # A prompt client is served, and kept alive across requests.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        sockets = []
        for _ in range(3):
            conn.request("GET", "/api/health")
            r = conn.getresponse()
            assert r.status == 200 and r.read()
            sockets.append(conn.sock)
            time.sleep(0.3)
        conn.close()
        assert sockets[0] is sockets[1] is sockets[2]  # one connection


def test_an_upload_body_sent_slowly_gets_a_408_and_the_connection_closes(catalogue, model):
    app = make_app(catalogue, model, upload_timeout_s=2.0, upload_idle_s=0.5)
    with ServerThread(app) as server:
        for pause in (0.1, 1.0):  # trickling (past the total), then stalled (past the idle)
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(
                    b"POST /api/search/like HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
                )
                answer, closed = b"", False
                deadline = time.monotonic() + 8
                s.settimeout(pause)
                while time.monotonic() < deadline:
                    try:
                        s.sendall(b"R")
                        data = s.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        closed = True
                        break
                    if not data:
                        closed = True
                        break
                    answer += data
            assert answer.startswith(b"HTTP/1.1 408"), (pause, answer)
            assert b"did not arrive in time" in answer and closed, pause


def test_serve_runs_uvicorn_with_the_timeouts(catalogue, model, monkeypatch, tmp_path, capsys):
    import uvicorn

    import earshot.commands.serve as serve_cmd
    from earshot.cli import main
    from earshot.serve.server import HeadTimeoutH11Protocol

    calls = []
    app = make_app(catalogue, model)
    monkeypatch.setattr(serve_cmd, "build_app", lambda args: app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", "--db", str(tmp_path / "any.sqlite")]) == 0
    options = calls[0]
    assert issubclass(options["http"], HeadTimeoutH11Protocol)
    assert options["http"].head_timeout == 10.0
    assert options["timeout_keep_alive"] == 5 and options["limit_concurrency"] == 64
    assert options["h11_max_incomplete_event_size"] == 16 * 1024


def test_settings_document_the_upload_time_limits():
    s = Settings()
    assert (s.upload_timeout_s, s.upload_idle_s) == (120.0, 15.0)
