"""earshot.weights: resolution order, verification, and downloads from a loopback server."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import earshot
from earshot import weights as W
from earshot.cli import main
from earshot.errors import ModelLoadError
from earshot.weights import KNOWN_WEIGHTS, WeightsRef, fetch, read_audioset_labels, resolve_weights

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SHARED = Path(earshot.__file__).resolve().parents[2].parent / "shared"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            mode = srv.mode
            drop = srv.drops > 0
            if drop:
                srv.drops -= 1
        if self.path != "/file" or mode == "404":
            self.send_error(404, "Not Found")
            return
        body = srv.payload if mode != "wrong" else bytes(b ^ 0xFF for b in srv.payload)
        start = 0
        if rng and mode != "ignore_range" and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if mode == "slow":
            self.wfile.write(rest[:1000])
            self.wfile.flush()
            time.sleep(srv.stall_s)
            return
        if drop:  # half the bytes, then the connection goes
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        for i in range(0, len(rest), 1 << 15):
            self.wfile.write(rest[i : i + (1 << 15)])
            if srv.chunk_delay_s:
                time.sleep(srv.chunk_delay_s)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, payload: bytes):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.mode = "ok"
        self.drops = 0
        self.stall_s = 1.5
        self.chunk_delay_s = 0.0
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/file"


@pytest.fixture
def server():
    srv = _Server(PAYLOAD)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """A private cache and shared folder, downloads allowed, short timeouts, no proxies."""
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EARSHOT_SHARED_DIR", str(tmp_path / "shared"))
    for name in ("EARSHOT_WEIGHTS_DIR", "EARSHOT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(fetch, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)
    return tmp_path


def _ref(url: str = "http://127.0.0.1:9/file", **kw) -> WeightsRef:
    fields = dict(id="test-blob", file="blob.bin", sha256=SHA, size=len(PAYLOAD), url=url)
    fields["subdir"] = "testset"
    return WeightsRef(**{**fields, **kw})


def _cached(ref: WeightsRef) -> Path:
    return W.cache_dir(ref) / ref.file


def _put(path: Path, data: bytes = PAYLOAD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the entry ------------------------------------------------------------------------------


def test_ref_round_trips_through_config_json():
    for ref in KNOWN_WEIGHTS.values():
        assert WeightsRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    with pytest.raises(ValueError, match="unknown weights field"):
        WeightsRef.from_dict({**KNOWN_WEIGHTS["audioset-labels"].to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="lacks: url"):
        WeightsRef.from_dict({"id": "x", "file": "x.pt"})


@pytest.mark.parametrize(
    "bad",
    [
        {"file": "../../etc/passwd"},
        {"file": "a/b.pt"},
        {"id": ".."},
        {"subdir": "../up"},
        {"sha256": "ABC"},
        {"size": -1},
        {"url": "file:///etc/passwd"},
    ],
)
def test_ref_refuses_unsafe_or_malformed_fields(bad):
    with pytest.raises(ValueError):
        _ref(**{"url": "http://127.0.0.1/x", **bad})


def test_known_weights_registry():
    mn04 = KNOWN_WEIGHTS["efficientat-mn04-as"]
    assert mn04.file == "mn04_as_mAP_432.pt" and mn04.size == 4066513 and mn04.licence == "MIT"
    assert mn04.url.endswith("/releases/download/v0.0.1/mn04_as_mAP_432.pt")
    assert KNOWN_WEIGHTS["audioset-labels"].sha256.startswith("cdd10498")
    assert not KNOWN_WEIGHTS["efficientat-mn10-as"].pinned
    with pytest.raises(ModelLoadError, match="known: audioset-labels"):
        W.known_weights("nope")


# -- resolution order -----------------------------------------------------------------------


def test_resolution_order(env, server, monkeypatch):
    ref = _ref(server.url)
    explicit = _put(env / "mine" / "renamed.bin")
    env_dir = env / "envdir"
    _put(env_dir / ref.file)
    cached = _put(_cached(ref))
    shared = _put(env / "shared" / "weights" / "testset" / ref.file)
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(env_dir))

    assert resolve_weights(ref, path=explicit) == explicit  # 1. explicit path
    assert resolve_weights(ref, path=explicit.parent.parent / "envdir") == env_dir / ref.file
    assert resolve_weights(ref) == env_dir / ref.file  # 1. env var
    monkeypatch.delenv("EARSHOT_WEIGHTS_DIR")
    assert resolve_weights(ref) == cached  # 2. cache
    cached.unlink()
    assert resolve_weights(ref) == shared  # 3. development copy
    shared.unlink()
    assert server.requests == []
    got = resolve_weights(ref, progress=False)  # 4. download
    assert got == cached and got.read_bytes() == PAYLOAD
    assert server.requests == [("/file", None)]
    assert not (got.parent / (ref.file + ".part")).exists()


def test_env_dir_also_finds_the_subdir_layout(env, monkeypatch):
    ref = _ref("http://127.0.0.1:9/file")
    p = _put(env / "w" / "testset" / ref.file)
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(env / "w"))
    assert resolve_weights(ref) == p


def test_wrong_file_where_the_user_pointed_is_an_error(env, monkeypatch):
    ref = _ref("http://127.0.0.1:9/file")
    bad = _put(env / "bad.bin", PAYLOAD[:-1] + b"\0")
    with pytest.raises(ModelLoadError, match="is wrong: sha256"):
        resolve_weights(ref, path=bad)
    with pytest.raises(ModelLoadError, match="no file at the path given"):
        resolve_weights(ref, path=env / "absent.bin")
    _put(env / "w" / ref.file, b"short")
    monkeypatch.setenv("EARSHOT_WEIGHTS_DIR", str(env / "w"))
    with pytest.raises(ModelLoadError, match=r"EARSHOT_WEIGHTS_DIR.*size 5 bytes"):
        resolve_weights(ref)


def test_damaged_cache_is_replaced_and_bad_shared_copy_skipped(env, server):
    ref = _ref(server.url)
    cached = _put(_cached(ref), b"x" * len(PAYLOAD))
    _put(env / "shared" / "weights" / "testset" / ref.file, b"y" * len(PAYLOAD))
    with pytest.warns(UserWarning) as record:
        got = resolve_weights(ref, progress=False)
    messages = " | ".join(str(w.message) for w in record)
    assert "removing damaged cached copy" in messages and "skipping" in messages
    assert got == cached and got.read_bytes() == PAYLOAD


# -- download -------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_with_range(server):
    server.drops = 1
    ref = _ref(server.url)
    got = resolve_weights(ref, progress=False)
    assert got.read_bytes() == PAYLOAD
    assert server.requests == [("/file", None), ("/file", f"bytes={len(PAYLOAD) // 2}-")]


def test_existing_part_is_resumed(server):
    ref = _ref(server.url)
    _put(_cached(ref).with_name("blob.bin.part"), PAYLOAD[:1000])
    assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/file", "bytes=1000-")]


def test_server_ignoring_range_restarts_cleanly(server):
    server.mode = "ignore_range"
    ref = _ref(server.url)
    _put(_cached(ref).with_name("blob.bin.part"), PAYLOAD[:1000])
    assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/file", "bytes=1000-")]


def test_stale_part_gets_one_clean_retry(server):
    ref = _ref(server.url)
    _put(_cached(ref).with_name("blob.bin.part"), b"\0" * 1000)  # not a prefix of the file
    assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/file", "bytes=1000-"), ("/file", None)]


def test_part_beyond_the_size_is_discarded(server):
    ref = _ref(server.url)
    _put(_cached(ref).with_name("blob.bin.part"), PAYLOAD + b"extra")
    assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/file", None)]


def test_wrong_bytes_fail_clearly_and_leave_nothing(server):
    server.mode = "wrong"
    ref = _ref(server.url)
    with pytest.raises(ModelLoadError) as e:
        resolve_weights(ref, progress=False)
    msg = str(e.value)
    assert "not the expected file" in msg and f"expected {SHA}" in msg
    assert "partial file was deleted" in msg
    folder = W.cache_dir(ref)
    assert not (folder / ref.file).exists() and not (folder / "blob.bin.part").exists()


def test_too_many_bytes_are_refused(server):
    server.payload = PAYLOAD + b"more"
    ref = _ref(server.url)
    with pytest.raises(ModelLoadError, match="more than the expected"):
        resolve_weights(ref, progress=False)
    assert not (W.cache_dir(ref) / "blob.bin.part").exists()


def test_404_names_the_url(server):
    server.mode = "404"
    ref = _ref(server.url)
    t = time.monotonic()
    with pytest.raises(ModelLoadError, match="HTTP 404") as e:
        resolve_weights(ref, progress=False)
    assert time.monotonic() - t < 2
    assert server.url in str(e.value) and len(server.requests) == 1


def test_slow_server_times_out_without_hanging(server):
    server.mode = "slow"
    ref = _ref(server.url)
    t = time.monotonic()
    with pytest.raises(ModelLoadError, match="kept failing") as e:
        resolve_weights(ref, progress=False)
    assert time.monotonic() - t < 5  # 3 attempts x 0.5 s read timeout
    assert len(server.requests) == W.ATTEMPTS
    assert "next try resumes it" in str(e.value)
    # each attempt resumed where the last stopped, and the bytes received are kept
    assert [r for _, r in server.requests] == [None, "bytes=1000-", "bytes=2000-"]
    assert (W.cache_dir(ref) / "blob.bin.part").stat().st_size == 3000
    server.mode = "ok"
    assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/file", "bytes=3000-")


def test_progress_bar_goes_to_stderr(server, capsys):
    resolve_weights(_ref(server.url), progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "blob.bin" in out.err


def _assert_missing_message(msg: str, ref: WeightsRef) -> None:
    assert ref.file in msg and ref.url in msg and SHA in msg
    assert str(_cached(ref)) in msg  # where it was looked for and where to put it
    assert "EARSHOT_WEIGHTS_DIR" in msg and "development copy" in msg
    assert f"earshot weights fetch {ref.id}" in msg


@pytest.mark.parametrize("var", ["EARSHOT_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_fails_at_once_with_the_places(server, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    ref = _ref(server.url)
    t = time.monotonic()
    with pytest.raises(ModelLoadError) as e:
        resolve_weights(ref)
    assert time.monotonic() - t < 1
    assert server.requests == []
    msg = str(e.value)
    _assert_missing_message(msg, ref)
    assert f"{var} is set" in msg
    with pytest.raises(ModelLoadError, match=f"{var} is set"):
        W.download(ref, W.cache_dir(ref), progress=False)


def test_unreachable_server_fails_at_once():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ref = _ref(f"http://127.0.0.1:{port}/file")
    t = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot reach") as e:
        resolve_weights(ref, progress=False)
    assert time.monotonic() - t < 1  # no retries
    _assert_missing_message(str(e.value), ref)


def test_unwritable_cache_is_a_clear_error(server, env, monkeypatch):
    blocker = _put(env / "not-a-folder", b"")
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(blocker))
    with pytest.raises(ModelLoadError, match="the download failed"):
        resolve_weights(_ref(server.url), progress=False)


def test_allow_download_false_says_so(server):
    with pytest.raises(ModelLoadError, match="downloading was not allowed"):
        resolve_weights(_ref(server.url), allow_download=False)
    assert server.requests == []


def test_concurrent_resolvers_share_one_download(server):
    server.chunk_delay_s = 0.02  # ~0.2 s per download: they overlap
    ref = _ref(server.url)
    final = _cached(ref)
    results: list[Path] = []
    seen_sizes: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # a reader never sees a partial file under the final name
        while not done.is_set():
            if final.exists():
                seen_sizes.add(final.stat().st_size)
            time.sleep(0.002)

    def resolve() -> None:
        results.append(resolve_weights(ref, progress=False))

    threads = [threading.Thread(target=f) for f in (watch, resolve, resolve)]
    for th in threads:
        th.start()
    for th in threads[1:]:
        th.join(10)
    done.set()
    threads[0].join()
    assert results == [final, final]
    assert final.read_bytes() == PAYLOAD
    assert seen_sizes <= {len(PAYLOAD)}
    assert len(server.requests) == 1


def test_concurrent_process_does_not_corrupt_the_cache(server, env):
    server.chunk_delay_s = 0.05  # ~0.5 s per download
    ref = _ref(server.url)
    code = (
        "import sys, earshot.weights as W\n"
        f"ref = W.WeightsRef.from_dict({ref.to_dict()!r})\n"
        "print(W.resolve_weights(ref, progress=False))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests, "the other process never started its download"
    mine = resolve_weights(ref, progress=False)  # waits for the other's lock, then finds it
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert Path(out.strip()) == mine == _cached(ref)
    assert mine.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    assert not mine.with_name("blob.bin.part").exists()


def test_unpinned_entry_records_its_hash(server):
    ref = _ref(server.url, sha256=None, size=None)
    with pytest.warns(UserWarning, match=f"unpinned.*sha256 {SHA}"):
        got = resolve_weights(ref, progress=False)
    record = got.with_name("blob.bin.sha256")
    assert record.read_text().split()[0] == SHA
    resolve_weights(ref)  # the cached copy checks against the record, silently
    got.write_bytes(b"tampered")
    with pytest.warns(UserWarning) as caught:
        assert resolve_weights(ref, progress=False).read_bytes() == PAYLOAD
    messages = [str(w.message) for w in caught]
    assert any("damaged cached copy" in m for m in messages)
    assert any(f"unpinned: downloaded {ref.url} with sha256 {SHA}" in m for m in messages)
    assert len(server.requests) == 2


def test_unpinned_copy_elsewhere_is_used_with_a_warning(env):
    ref = _ref("http://127.0.0.1:9/file", sha256=None, size=None)
    p = _put(env / "mine.bin")
    with pytest.warns(UserWarning, match="unverified"):
        assert resolve_weights(ref, path=p) == p


# -- the real entries -----------------------------------------------------------------------


@pytest.fixture
def real_shared(monkeypatch):
    if not (SHARED / "weights" / "efficientat" / "mn04_as_mAP_432.pt").is_file():
        pytest.skip(f"no development copy of the weights at {SHARED / 'weights'}")
    monkeypatch.delenv("EARSHOT_SHARED_DIR")
    return SHARED / "weights" / "efficientat"


def test_real_mn04_resolves_to_the_shared_copy(real_shared):
    ref = KNOWN_WEIGHTS["efficientat-mn04-as"]
    assert W.shared_dir() == SHARED
    assert resolve_weights(ref, allow_download=False) == real_shared / ref.file
    labels = resolve_weights(KNOWN_WEIGHTS["audioset-labels"], allow_download=False)
    names = read_audioset_labels(labels)
    assert len(names) == 527 and names[0] == "Speech"
    assert names[1] == "Male speech, man speaking"


def test_read_audioset_labels_validates(tmp_path):
    good = ["index,mid,display_name", *[f'{i},/m/{i},"Class {i}"' for i in range(527)]]
    p = tmp_path / "labels.csv"
    p.write_text("\n".join(good) + "\n")
    assert read_audioset_labels(p)[526] == "Class 526"
    p.write_text("\n".join(good[:-1]) + "\n")
    with pytest.raises(ModelLoadError, match="526 classes, expected 527"):
        read_audioset_labels(p)
    p.write_text("\n".join(["idx,mid,name", *good[1:]]))
    with pytest.raises(ModelLoadError, match="header"):
        read_audioset_labels(p)
    p.write_text("\n".join([good[0], good[2], good[1], *good[3:]]))
    with pytest.raises(ModelLoadError, match="line 2"):
        read_audioset_labels(p)


# -- the command ----------------------------------------------------------------------------


def test_cli_weights(server, monkeypatch, capsys):
    ref = _ref(server.url)
    monkeypatch.setitem(KNOWN_WEIGHTS, ref.id, ref)
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "test-blob  blob.bin" in out and "missing  (earshot weights fetch test-blob)" in out
    assert main(["weights", "path", ref.id]) == 1
    assert "not found" in capsys.readouterr().err
    assert server.requests == []  # listing and path never download

    assert main(["weights", "fetch", ref.id, "--quiet"]) == 0
    assert str(_cached(ref)) in capsys.readouterr().out
    assert main(["weights", "fetch", ref.id]) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert main(["weights", "path", ref.id]) == 0
    assert capsys.readouterr().out.strip() == str(_cached(ref))
    assert main(["weights", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[ref.id]["path"] == str(_cached(ref)) and rows[ref.id]["sha256"] == SHA
    assert main(["weights", "fetch", "nope"]) == 1
    assert "unknown weights 'nope'" in capsys.readouterr().err
    assert len(server.requests) == 1


# -- md5-pinned entries (Zenodo), PANNs through the resolver, hub checkpoints ---------------

MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_md5_pinned_entry_is_verified_and_kept_out_of_older_configs(server):
    ref = _ref(server.url, sha256=None, md5=MD5)
    assert ref.pinned
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pinned by md5: no "unpinned" warning
        assert resolve_weights(ref, progress=False) == _cached(ref)
    assert not _cached(ref).with_name("blob.bin.sha256").exists()  # pinned: nothing recorded
    _put(_cached(ref), PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))  # same size, other bytes
    assert W.check_file(_cached(ref), ref).startswith("md5 ")
    server.mode = "wrong"
    _cached(ref).unlink()
    with pytest.raises(ModelLoadError, match="md5"):
        resolve_weights(ref, progress=False)
    assert not _cached(ref).exists()
    # `md5` is written only where set: configs (and model ids) made before it are unchanged
    assert "md5" not in KNOWN_WEIGHTS["efficientat-mn04-as"].to_dict()
    # ... nor in a model config naming the weights (what the model id hashes): the general
    # model's id must stay the one its catalogues were bound to
    from earshot.config import ModelConfig
    from earshot.model.pretrained import pretrained_config

    config = pretrained_config("mn04")
    assert config.encoder.weights is not None
    assert "md5" not in json.dumps(config.to_dict())
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert WeightsRef.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="md5"):
        _ref(md5="XYZ")


def test_panns_entries_name_the_official_zenodo_files():
    for name, mb, md5 in (("cnn14", 327428481, "541141fa"), ("cnn10", 25237595, "bfb1f1f9")):
        ref = KNOWN_WEIGHTS[f"panns-{name}-as"]
        assert ref.url.startswith("https://zenodo.org/record/3987831/files/")
        assert ref.size == mb and ref.md5.startswith(md5) and ref.pinned
        assert ref.sha256 is None and "no sha256" in ref.description


def _panns_ref(url: str, data: bytes) -> WeightsRef:
    return WeightsRef(
        id="panns-cnn10-as",
        file="Cnn10_mAP-0.380.pth",
        sha256=None,
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        url=url,
        subdir="panns",
    )


def test_init_model_panns_by_name_downloads_through_the_resolver(
    tmp_path, monkeypatch, capsys, tiny_text_dir
):
    pytest.importorskip("torchlibrosa", reason="torchlibrosa is a dev extra")
    import torch

    from earshot.encoders.audio import STANDARD_ENCODERS, build_audio_encoder
    from earshot.model.io import load_model
    from earshot.testing.panns import write_panns_checkpoint

    panns = build_audio_encoder(STANDARD_ENCODERS["cnn10"], 64)
    with torch.no_grad():
        panns.bn0.running_mean.fill_(0.5)
    data = write_panns_checkpoint(tmp_path / "ck.pth", panns).read_bytes()
    srv = _Server(data)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        ref = _panns_ref(srv.url, data)
        monkeypatch.setitem(KNOWN_WEIGHTS, ref.id, ref)
        argv = ["init-model", str(tmp_path / "m"), "--panns", "cnn10"]
        assert main([*argv, "--text-model", str(tiny_text_dir)]) == 0
        out = capsys.readouterr().out
        assert str(_cached(ref)) in out and "cnn10" in out
        loaded = load_model(tmp_path / "m", with_text=False)
        assert loaded.config.encoder.name == "cnn10"
        assert torch.equal(loaded.audio_encoder.bn0.running_mean, panns.bn0.running_mean)
        assert len(srv.requests) == 1
        code = main([*argv[:2], "--panns", "cnn10", "--encoder", "cnn14"])
        assert code == 1 and "cannot fill --encoder cnn14" in capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()


def test_init_model_panns_offline_names_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EARSHOT_OFFLINE", "1")
    assert main(["init-model", str(tmp_path / "m"), "--panns", "cnn14"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("earshot: error: weights 'panns-cnn14-as' (Cnn14_mAP-0.431.pth)")
    assert "EARSHOT_OFFLINE is set" in err and "md5 541141fa2ee191a88f24a3219fff024e" in err
    assert "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth" in err
    assert "earshot weights fetch panns-cnn14-as" in err and not (tmp_path / "m").exists()


def test_weights_list_shows_files_and_hub_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"panns-cnn14-as", "panns-cnn10-as", "efficientat-mn04-as"} <= set(rows)
    assert rows["laion/clap-htsat-unfused"]["kind"] == "hub"
    assert rows["laion/clap-htsat-unfused"]["path"] is None
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "laion/clap-htsat-unfused  (Hugging Face hub checkpoint)" in out
    assert "missing  (earshot weights fetch laion/clap-htsat-unfused)" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "fetch", "laion/clap-htsat-unfused"]) == 1
    err = capsys.readouterr().err
    assert "hub checkpoint 'laion/clap-htsat-unfused'" in err and "HF_HUB_OFFLINE is set" in err
