"""`GET /api/clip/{id}` (a span as a download) and `GET /api/audio/{id}` for formats browsers
cannot decode (transcoded to WAV, streamed, seekable), through FastAPI's test client."""

from __future__ import annotations

import io
import os
import re
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import soundfile as sf
from fastapi.testclient import TestClient

from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.serve import Settings, create_app
from earshot.serve.playback import HEADER_BYTES, browser_plays, parse_range
from earshot.testing.playback import write_unplayable
from earshot.testing.serve import build_library

BASE = "http://127.0.0.1:8000"
MAX_CLIP_S = 20.0


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_text_dir):
    base = tmp_path_factory.mktemp("serve-clip")
    write_unplayable(base)
    return build_library(base, tiny_text_dir)


@pytest.fixture(scope="module")
def client(lib):
    cat = Catalogue(lib.db, readonly=True)
    app = create_app(cat, load_model(lib.model_dir), Settings(max_clip_s=MAX_CLIP_S))
    with TestClient(app, base_url=BASE) as c:
        yield c
    cat.close()


@pytest.fixture(scope="module")
def ids(client) -> dict[str, int]:
    hits = client.get("/api/search", params={"q": "anything", "k": 100}).json()["hits"]
    return {h["name"]: h["file_id"] for h in hits}


def read(content: bytes, dtype: str = "int16") -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(content), dtype=dtype, always_2d=True)


def disposition_name(header: str) -> str:
    star = re.search(r"filename\*=UTF-8''([^;]+)", header)
    if star:
        return unquote(star.group(1))
    return re.search(r'filename="([^"]*)"', header).group(1)


# -- /api/clip ------------------------------------------------------------------------------


def test_a_wav_span_is_the_sources_samples_exactly(client, ids, lib):
    path = lib.root / "birds" / "wren.wav"  # 12 s, 22050 Hz, 16-bit mono
    r = client.get(f"/api/clip/{ids['wren.wav']}", params={"start": 1.5, "end": 4.25})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    header = r.headers["content-disposition"]
    assert header.startswith("attachment;") and disposition_name(header) == "wren_1.5-4.25.wav"
    got, rate = read(r.content)
    source, source_rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == source_rate == 22050 and sf.info(io.BytesIO(r.content)).subtype == "PCM_16"
    assert np.array_equal(got, source[round(1.5 * rate) : round(4.25 * rate)])


def test_source_format_keeps_the_container_rate_channels_and_depth(client, ids, lib):
    # A 24-bit stereo 48 kHz AIFF named with a non-ASCII letter.
    path = lib.root / "odd" / "gull é.aiff"
    r = client.get(
        f"/api/clip/{ids['gull é.aiff']}", params={"start": 0.5, "end": 1.25, "format": "source"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/aiff"
    header = r.headers["content-disposition"]
    assert 'filename="gull e_0.5-1.25.aiff"' in header  # the ASCII fallback
    assert disposition_name(header) == "gull é_0.5-1.25.aiff"  # RFC 5987
    info = sf.info(io.BytesIO(r.content))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "AIFF", "PCM_24", 48000, 2,
    )  # fmt: skip
    got, _ = read(r.content, "int32")
    source, _ = sf.read(path, dtype="int32", always_2d=True)
    assert np.array_equal(got, source[24000:60000])
    flac = client.get(
        f"/api/clip/{ids['owl.flac']}", params={"start": 0, "end": 1, "format": "source"}
    )
    assert flac.headers["content-type"] == "audio/flac"
    assert disposition_name(flac.headers["content-disposition"]) == "owl_0-1.flac"
    got, rate = read(flac.content)
    assert rate == 44100 and got.shape == (44100, 2)
    assert np.array_equal(got, sf.read(lib.root / "birds" / "owl.flac", dtype="int16")[0][:44100])


def test_fades_touch_only_the_ends(client, ids, lib):
    params = {"start": 2, "end": 4, "fade": 50}
    r = client.get(f"/api/clip/{ids['wren.wav']}", params=params)
    got, rate = read(r.content, "float64")
    source, _ = sf.read(lib.root / "birds" / "wren.wav", dtype="float64", always_2d=True)
    span = source[2 * rate : 4 * rate]
    n = round(0.05 * rate)
    assert np.array_equal(got[n:-n], span[n:-n])
    ramp = np.arange(1, n + 1) / (n + 1)
    assert np.allclose(got[:n, 0], span[:n, 0] * ramp, atol=1 / 32768)
    assert np.allclose(got[-n:, 0], span[-n:, 0] * ramp[::-1], atol=1 / 32768)
    assert abs(got[0, 0]) < abs(span[0, 0]) or span[0, 0] == 0
    power = client.get(
        f"/api/clip/{ids['wren.wav']}", params={**params, "fade_shape": "equal-power"}
    )
    loud, _ = read(power.content, "float64")
    assert np.allclose(loud[:n, 0], span[:n, 0] * np.sin(ramp * np.pi / 2), atol=1 / 32768)


def test_a_wav_clip_of_a_pyav_source_says_it_was_decoded(client, ids):
    r = client.get(f"/api/clip/{ids['crane.wma']}", params={"start": 0.2, "end": 1.2})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    got, rate = read(r.content)
    assert rate == 44100 and got.shape == (44100, 2) and np.abs(got).max() > 1000
    assert "decoded from WMAV2" in r.headers["x-earshot-note"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"start": 3, "end": 2}, "must be after start"),
        ({"start": 1, "end": 1}, "must be after start"),
        ({"start": 11, "end": 14}, "only 12.000 s long"),
        ({"start": 13, "end": 14}, "starts at 13 s"),
        ({"start": -1, "end": 2}, "start: Input should be greater than or equal to 0"),
        ({"end": 2}, "start: Field required"),
        ({"start": 0, "end": "nan"}, "end: Input should be"),
        ({"start": 0, "end": 2, "format": "mp3"}, "format: Input should be 'wav' or 'source'"),
        ({"start": 0, "end": 2, "fade": -5}, "fade: Input should be greater than"),
    ],
)
def test_bad_clip_bounds_are_422_with_a_sentence(client, ids, params, words):
    r = client.get(f"/api/clip/{ids['wren.wav']}", params=params)
    assert r.status_code == 422
    assert words in r.json()["error"], r.json()
    assert str(os.sep) + "birds" not in r.json()["error"]  # names the file, never its path


def test_clip_length_is_capped_and_ids_are_checked(client, ids):
    long = client.get(f"/api/clip/{ids['market.wav']}", params={"start": 0, "end": 25})
    assert long.status_code == 422 and f"at most {MAX_CLIP_S:g} s" in long.json()["error"]
    ok = client.get(f"/api/clip/{ids['market.wav']}", params={"start": 0, "end": MAX_CLIP_S})
    assert ok.status_code == 200 and len(read(ok.content)[0]) == MAX_CLIP_S * 16000
    for raw in ("999999", "abc", "1;rm"):
        r = client.get(f"/api/clip/{raw}", params={"start": 0, "end": 1})
        assert r.status_code == 404 and "no file with id" in r.json()["error"]


def test_clips_leave_no_temporary_files(client, ids, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for fmt in ("wav", "source"):
        r = client.get(f"/api/clip/{ids['owl.flac']}", params={"start": 0, "end": 1, "format": fmt})
        assert r.status_code == 200
    bad = client.get(f"/api/clip/{ids['owl.flac']}", params={"start": 0, "end": 99})
    assert bad.status_code == 422
    assert list(tmp_path.iterdir()) == []


def test_clip_folders_of_dead_servers_are_swept(tmp_path):
    import subprocess
    import sys
    import time

    from earshot.serve.playback import CLIP_PREFIX, sweep_stale_clips

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    folders = {
        "dead": tmp_path / f"{CLIP_PREFIX}{dead}-abc",  # its server was killed mid-clip
        "live": tmp_path / f"{CLIP_PREFIX}{os.getppid()}-abc",  # a running server's
        "mine": tmp_path / f"{CLIP_PREFIX}{os.getpid()}-abc",
        "old": tmp_path / f"{CLIP_PREFIX}k2j4x",  # an older earshot's name, a day old
        "new": tmp_path / f"{CLIP_PREFIX}q9z8y",  # the same, an hour old
    }
    for path in folders.values():
        path.mkdir()
        (path / "clip.wav").write_bytes(b"RIFF")
    day = time.time() - 86400 - 60
    os.utime(folders["old"], (day, day))
    hour = time.time() - 3600
    os.utime(folders["new"], (hour, hour))
    (tmp_path / "unrelated").mkdir()
    assert sweep_stale_clips(str(tmp_path)) == 2
    assert sorted(n for n, p in folders.items() if p.exists()) == ["live", "mine", "new"]
    assert (tmp_path / "unrelated").exists()


# -- /api/audio: transcoded where the browser cannot play the file ----------------------------


PLAYS = [
    "WAV PCM_16",
    "WAV FLOAT",
    "WAVEX PCM_24",
    "RF64 PCM_16",
    "WAV ULAW",
    "FLAC PCM_24",
    "OGG VORBIS",
    "OGG OPUS",
    "MP3 MPEG_LAYER_III",
    "MP4 AAC",
    "MP4 MP3",
    "AAC AAC",
]
NOT = [
    "AIFF PCM_16",
    "AIFF PCM_24",
    "AIFF FLOAT",
    "CAF PCM_16",
    "W64 PCM_16",
    "AU PCM_16",
    "WAV DOUBLE",
    "WAV IMA_ADPCM",
    "WAV MS_ADPCM",
    "ASF WMAV2",
    "MP4 ALAC",
    "SVX PCM_16",
]


def test_browser_formats_table():
    """What headless Chromium was found to play (serve/playback.py's docstring)."""
    for pair in PLAYS:
        assert browser_plays(*pair.split()), pair
    for pair in NOT:
        assert not browser_plays(*pair.split()), pair
    assert not browser_plays(None, None)


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [
        ("gull é.aiff", 48000, 2),
        ("tern.aif", 44100, 1),
        ("heron.caf", 44100, 2),
        ("stork.wav", 22050, 1),
        ("quad.caf", 32000, 1),  # 4 channels: mixed to mono
    ],
)
def test_unplayable_formats_are_served_as_16_bit_wav(client, ids, lib, name, rate, channels):
    r = client.get(f"/api/audio/{ids[name]}")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.headers["accept-ranges"] == "bytes"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers["content-disposition"].startswith("inline;")
    info = sf.info(io.BytesIO(r.content))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV", "PCM_16", rate, channels,
    )  # fmt: skip
    got, _ = read(r.content, "float64")
    source, _ = sf.read(lib.root / "odd" / name, dtype="float32", always_2d=True)
    if source.shape[1] > 2:
        source = source.mean(axis=1, keepdims=True)
    assert got.shape == source.shape
    assert np.abs(got - source).max() <= 1 / 32768 + 1e-12  # only the 16-bit rounding


def test_transcoded_audio_honours_ranges_byte_for_byte(client, ids):
    url = f"/api/audio/{ids['gull é.aiff']}"
    whole = client.get(url).content
    n = len(whole)
    assert n == HEADER_BYTES + 3 * 48000 * 2 * 2
    rng = np.random.default_rng(0)
    ranges = [(0, 0), (0, 43), (10, 100), (43, 44), (45, 46), (n - 1, n - 1), (1001, 5000)]
    ranges += [tuple(sorted(rng.integers(0, n, 2))) for _ in range(5)]
    for a, b in ranges:
        r = client.get(url, headers={"Range": f"bytes={a}-{b}"})
        assert r.status_code == 206, (a, b)
        assert r.headers["content-range"] == f"bytes {a}-{b}/{n}"
        assert r.headers["content-length"] == str(b - a + 1)
        assert r.content == whole[a : b + 1], (a, b)
    assert client.get(url, headers={"Range": "bytes=-7"}).content == whole[-7:]
    opened = client.get(url, headers={"Range": f"bytes={n - 20}-"})
    assert opened.status_code == 206 and opened.content == whole[-20:]
    past_end = client.get(url, headers={"Range": f"bytes={n - 5}-{n + 100}"})
    assert past_end.content == whole[-5:]
    beyond = client.get(url, headers={"Range": f"bytes={n}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{n}"
    several = client.get(url, headers={"Range": "bytes=0-1,5-6"})  # answered whole
    assert several.status_code == 200 and several.content == whole


def test_a_range_decodes_only_its_own_frames(client, ids, monkeypatch):
    """A seek near the end of a transcoded file reads a few frames there, not the file."""
    from earshot.serve import playback

    asked: list[tuple[int, int]] = []
    real = playback.read_frames

    def spy(source, first, last, *args, **kwargs):
        asked.append((first, last))
        return real(source, first, last, *args, **kwargs)

    monkeypatch.setattr(playback, "read_frames", spy)
    url = f"/api/audio/{ids['gull é.aiff']}"
    frame = 4  # 16-bit stereo
    a = HEADER_BYTES + 140_000 * frame + 2
    r = client.get(url, headers={"Range": f"bytes={a}-{a + 3999}"})
    assert r.status_code == 206 and len(r.content) == 4000
    assert asked == [(140_000, 140_000 + 1001)]


@pytest.mark.parametrize("name", ["late.wma", "late.m4a", "late.aac"])
def test_a_late_range_of_a_pyav_format_seeks_and_gives_the_same_samples(tmp_path, name):

    from earshot.audio.av_io import _open
    from earshot.audio.recording import _seek_to, open_source, read_frames
    from earshot.testing.audio import write_av

    path = write_av(tmp_path / name, 30.0, 44100, channels=2, seed=3)
    source = open_source(path)
    first = int(source.frames * 0.8)
    last = first + 30_000
    with _open(str(path)) as (container, track):
        at, _ = _seek_to(container, track, source.sample_rate, first)
    assert 0 < at < first  # it jumped, and landed before the range
    seeking = np.concatenate(list(read_frames(source, first, last, seek=True)))
    from_start = np.concatenate(list(read_frames(source, first, last)))
    assert seeking.shape == from_start.shape == (30_000, 2)
    assert np.array_equal(seeking, from_start)


def test_wma_is_transcoded_and_playable_formats_are_not(client, ids, lib):
    wma = client.get(f"/api/audio/{ids['crane.wma']}")
    assert (
        wma.headers["content-type"] == "audio/wav"
        and "WMAV2" in wma.headers["x-earshot-transcoded"]
    )
    got, rate = read(wma.content)
    assert rate == 44100 and got.shape[1] == 2 and abs(len(got) - 2 * 44100) < 44100 * 0.1
    four = client.get(f"/api/audio/{ids['choir.wav']}")  # a plain WAV: the file itself
    assert four.content == (lib.root / "odd" / "choir.wav").read_bytes()
    assert "x-earshot-transcoded" not in four.headers


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 99)
    assert parse_range("bytes=90-200", 100) == (90, 99)
    assert parse_range("bytes=-200", 100) == (0, 99)
    assert parse_range("bytes=5-2", 100) is None
    assert parse_range("items=0-1", 100) is None
    with pytest.raises(playback_unsatisfiable()):
        parse_range("bytes=100-", 100)
    with pytest.raises(playback_unsatisfiable()):
        parse_range("bytes=-0", 100)


def playback_unsatisfiable():
    from earshot.serve.playback import RangeNotSatisfiable

    return RangeNotSatisfiable


def test_serve_flag_sets_the_clip_limit():
    from earshot.cli import build_parser
    from earshot.commands.serve import settings_from_args
    from earshot.errors import EarshotError

    args = build_parser().parse_args(["serve", "--max-clip-s", "30"])
    assert settings_from_args(args).max_clip_s == 30.0
    assert settings_from_args(build_parser().parse_args(["serve"])).max_clip_s == 600.0
    with pytest.raises(EarshotError, match="--max-clip-s must be positive"):
        settings_from_args(build_parser().parse_args(["serve", "--max-clip-s", "0"]))


def test_a_clip_is_removed_even_when_the_client_goes_away(lib, tmp_path, monkeypatch):
    """Sending fails part-way (the browser cancelled the download): the temporary file goes."""
    import asyncio
    import tempfile

    from earshot.serve.playback import clip_response

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = lib.root / "street" / "market.wav"
    info = {"id": 1, "path": str(path), "name": path.name}
    response = clip_response(info, 0.0, 10.0, "wav", 0.0, "linear", 600.0)
    assert [p.name for p in tmp_path.iterdir()] and response.path.is_file()

    async def receive():
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    scope = {"type": "http", "method": "GET", "headers": [], "asgi": {"spec_version": "2.4"}}
    with pytest.raises(OSError):
        asyncio.run(response(scope, receive, send))
    assert list(tmp_path.iterdir()) == []


def test_a_named_origin_can_read_the_clips_name(lib, ids):
    cat = Catalogue(lib.db, readonly=True)
    app = create_app(cat, load_model(lib.model_dir), Settings(cors_origins=("http://daw.local",)))
    with TestClient(app, base_url=BASE) as c:
        r = c.get(
            f"/api/clip/{ids['wren.wav']}",
            params={"start": 0, "end": 1},
            headers={"Origin": "http://daw.local"},
        )
    cat.close()
    assert r.status_code == 200
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"content-disposition", "x-earshot-note", "content-range"} <= exposed
