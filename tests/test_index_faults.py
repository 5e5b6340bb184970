"""`earshot index` against hostile or unlucky inputs (issue #19): each test is a red-team repro.

One bad file, name or root must never stop a run or cost the catalogue its entries: it is
skipped or reported with a reason, and the good files beside it are indexed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earshot.index.build import Indexer
from earshot.index.decoding import decode_entry
from earshot.index.scan import ScanEntry
from earshot.index.store import Catalogue
from earshot.model.io import save_model
from earshot.testing.audio import write_tone, write_truncated
from earshot.testing.models import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def root(tmp_path):
    """A folder with one good clip."""
    folder = tmp_path / "lib"
    folder.mkdir()
    write_tone(folder / "good.wav", 1.0, 16000)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_text_dir):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), folder)
    return folder


def index(cat, model, *paths, **kw):
    return Indexer(cat, model, workers=kw.pop("workers", 0), progress=False).run(
        [str(p) for p in paths], **kw
    )


class Hung(BaseException):
    """Not an OSError (TimeoutError is one): no `except OSError` or `except Exception` in the
    code under test may swallow it."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() or a read loop."""

    def expired(*_):
        raise Hung(f"still running after {seconds} s (blocked on a pipe or device?)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def reasons(summary) -> dict[str, str]:
    return dict(summary.skipped)


# --- 1. one bad file never stops the run ----------------------------------------------------


def test_a_non_utf8_file_name_is_skipped_and_its_neighbours_indexed(tmp_path, root, model):
    raw = os.fsencode(root)
    write_tone(root / "x.wav", 1.0, 16000)
    os.rename(os.fsencode(root / "x.wav"), raw + b"/caf\xe9.wav")
    os.mkdir(raw + b"/d\xe9j\xe0")
    write_tone(root / "y.wav", 1.0, 16000)
    os.rename(os.fsencode(root / "y.wav"), raw + b"/d\xe9j\xe0/vu.wav")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 1 and len(s.skipped) == 2, s.as_dict()
        for path, why in s.skipped:
            path.encode("utf-8")  # printable: no surrogates
            assert "not valid UTF-8" in why
        assert any(p.endswith("caf\\xe9.wav") for p, _ in s.skipped)
        json.dumps(s.as_dict(), ensure_ascii=False).encode("utf-8")
        assert cat.check() == []
        assert index(cat, model, root).skipped  # reported again, never fatal


def test_cli_prints_a_non_utf8_name_instead_of_crashing(tmp_path, root, model_dir, capfd):
    from earshot.cli import main

    os.rename(os.fsencode(root / "good.wav"), os.fsencode(root) + b"/caf\xe9.wav")
    write_tone(root / "other.wav", 1.0, 16000)
    code = main(["index", str(root), "--db", str(tmp_path / "c.sqlite"), "--model", str(model_dir)])
    out = capfd.readouterr().out
    assert code == 0 and "1 added" in out and "caf\\xe9.wav" in out and "UTF-8" in out


def huge_float_wav(path: Path, amplitude: float = 1e20) -> Path:
    x = np.sin(np.linspace(0, 2000, 16000, dtype=np.float32))[:, None] * np.float32(amplitude)
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


def test_a_float_wav_at_1e20_is_skipped_and_its_neighbours_indexed(tmp_path, root, model):
    huge_float_wav(root / "huge.wav")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 1, s.as_dict()
        assert "beyond full scale" in reasons(s)[str(root / "huge.wav")]
        assert cat.check() == []


def test_cli_embed_refuses_a_huge_float_wav_instead_of_printing_nan(tmp_path, model_dir, capsys):
    from earshot.cli import main

    path = huge_float_wav(tmp_path / "huge.wav")
    code = main(["embed", "--model", str(model_dir), "--json", "--audio", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and "beyond full scale" in err and "NaN" not in out


class NaNModel:
    """Gives NaN vectors for windows louder than 0.8 (as a broken model or input might)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_audio(self, waves, *args, **kwargs):
        vectors = self._model.encode_audio(waves, *args, **kwargs)
        loud = np.abs(np.asarray(waves)).max(axis=1) > 0.8
        vectors[loud] = float("nan")
        return vectors


def test_non_finite_vectors_skip_their_file_not_the_batch(tmp_path, root, model):
    write_tone(root / "loud.wav", 1.0, 16000, amplitude=0.95, noise=0.0)
    write_tone(root / "zlong.wav", 23.0, 16000, amplitude=0.95, noise=0.0)
    import earshot.index.decoding as decoding

    with Catalogue(tmp_path / "c.sqlite") as cat:
        old = decoding.LONG_FILE_S
        decoding.LONG_FILE_S = 20.0  # zlong is streamed here: that path is guarded too
        try:
            s = Indexer(cat, NaNModel(model), workers=0, progress=False).run([str(root)])
        finally:
            decoding.LONG_FILE_S = old
        assert s.added == 1, s.as_dict()
        assert set(reasons(s)) == {str(root / "loud.wav"), str(root / "zlong.wav")}
        assert all("not finite" in why for why in reasons(s).values())
        assert cat.check() == []


def one_hz_wav(path: Path) -> Path:
    # 40 KB of 16-bit samples at 1 Hz: 20,000 s (5.6 h) once resampled to 32 kHz.
    sf.write(path, np.zeros((20000, 1)), 1, subtype="PCM_16")
    return path


def test_a_1_hz_sample_rate_is_refused_before_decoding(tmp_path, root, model):
    one_hz_wav(root / "slow.wav")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 1
        assert "sample rate of 1 Hz" in reasons(s)[str(root / "slow.wav")]


def test_a_file_long_by_its_header_is_streamed_not_decoded_whole(
    tmp_path, root, model, monkeypatch
):
    import earshot.index.decoding as decoding

    path = write_tone(root / "long.wav", 23.0, 8000, subtype="PCM_U8")  # small on disk
    monkeypatch.setattr(decoding, "LONG_FILE_S", 20.0)
    st = path.stat()
    decoded = decode_entry(ScanEntry(str(path), st.st_size, st.st_mtime_ns), model.config.audio)
    assert decoded.error is None and decoded.windows is None  # left for the streaming path
    assert decoded.record.duration_s == pytest.approx(23.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 2 and s.segments == 1 + 4


def test_a_header_that_understates_the_length_stops_windowing(tmp_path, model, monkeypatch):
    import earshot.index.decoding as decoding

    path = write_tone(tmp_path / "long.wav", 23.0, 8000)
    monkeypatch.setattr(decoding, "LONG_FILE_S", 20.0)
    audio = model.config.audio
    window_bytes = 4 * round(audio.window_s * audio.sample_rate)
    monkeypatch.setattr(decoding, "_MAX_WORKER_BYTES", 2 * window_bytes)  # 2 windows: 10 s
    real = decoding.read_record

    def lying(entry, content_hash):
        rec = real(entry, content_hash)
        return rec.__class__(**{**rec.__dict__, "duration_s": 10.0})

    monkeypatch.setattr(decoding, "read_record", lying)
    st = path.stat()
    decoded = decode_entry(ScanEntry(str(path), st.st_size, st.st_mtime_ns), audio)
    assert decoded.error is None and decoded.windows is None


def test_an_unexpected_exception_skips_the_file(tmp_path, root, model, monkeypatch):
    import earshot.audio.windows as windows

    real = windows.window_file

    def explode(path, audio):
        if str(path).endswith("bad.wav"):
            raise MemoryError
        return real(path, audio)

    monkeypatch.setattr(windows, "window_file", explode)
    write_tone(root / "bad.wav", 1.0, 16000, freq=900.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 1 and "out of memory" in reasons(s)[str(root / "bad.wav")]


# 1: a pool of one used to decode in the indexer itself, where the crash ended the run.
@pytest.mark.parametrize("workers", [2, 1])
def test_a_decoder_crash_skips_its_file_not_the_run(tmp_path, root, model, monkeypatch, workers):
    import earshot.index.decoding as decoding
    from earshot.testing.faults import crash_on_some

    monkeypatch.setattr(decoding, "decode_entry", crash_on_some)  # pickled by name to the workers
    write_tone(root / "crash.wav", 1.0, 16000, freq=900.0)
    write_tone(root / "later.wav", 1.0, 16000, freq=1200.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = Indexer(cat, model, workers=workers, progress=False).run([str(root)])
        assert s.added == 2, s.as_dict()
        assert "decoder crashed" in reasons(s)[str(root / "crash.wav")]
        assert cat.file_states()[str(root / "later.wav")].status == "ok"


@pytest.mark.parametrize("workers", [-1, True])
def test_a_negative_worker_count_is_refused(tmp_path, model, workers):
    with Catalogue(tmp_path / "c.sqlite") as cat, pytest.raises(ValueError, match="0 or more"):
        Indexer(cat, model, workers=workers, progress=False)


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 0), (3, 2), (5, 4), (64, 4), (None, 0)])
def test_default_workers_decode_here_on_two_cores_and_beside_it_on_more(
    tmp_path, model, monkeypatch, cpus, workers
):
    import earshot.index.build as build

    monkeypatch.setattr(build.os, "cpu_count", lambda: cpus)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        assert Indexer(cat, model, progress=False).workers == workers


# Decoding in the indexer's own process (workers=0, the default on 2 cores): a crash there ends
# the run, so it runs in a subprocess; the run after it must skip that file, not die on it again.
CRASH_SCRIPT = """
import json, os, sys
import earshot.audio.windows as windows
import earshot.index.build as build
import earshot.index.decoding as decoding
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.testing.faults import crash_on_some, decode_fully_crashing_on_some
build.decode_fully = decode_fully_crashing_on_some
if sys.argv[4] == "streamed":  # every file is long: the crash comes as it streams at commit
    decoding.LONG_FILE_S = 0.5
    window_file = windows.window_file
    def crashing(path, audio):
        if os.path.basename(path).startswith("crash"):
            os._exit(139)
        return window_file(path, audio)
    windows.window_file = crashing
else:
    decoding.decode_entry = crash_on_some
with Catalogue(sys.argv[1]) as cat:
    model = load_model(sys.argv[2], with_text=False)
    s = Indexer(cat, model, workers=0, progress=False).run([sys.argv[3]])
print(json.dumps(s.as_dict()))
"""


@pytest.mark.parametrize("streamed", [False, True], ids=["short", "streamed"])
def test_a_decoder_crash_in_the_indexer_is_skipped_by_the_next_run(
    tmp_path, root, model_dir, streamed
):
    from earshot.index.journal import CRASHED_HERE, journal_path

    write_tone(root / "crash.wav", 1.0, 16000, freq=900.0)
    write_tone(root / "later.wav", 1.0, 16000, freq=1200.0)
    db = tmp_path / "c.sqlite"
    mode = "streamed" if streamed else "short"
    cmd = [sys.executable, "-c", CRASH_SCRIPT, str(db), str(model_dir), str(root), mode]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert first.returncode == 139, first.stderr
    assert journal_path(db).read_text() == f"{root / 'crash.wav'}\n"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    s = json.loads(second.stdout)
    assert s["added"] == 2, s
    assert s["skipped"] == [{"path": str(root / "crash.wav"), "reason": CRASHED_HERE}]
    assert not journal_path(db).exists()
    with Catalogue(db) as cat:
        states = cat.file_states()
        assert states[str(root / "crash.wav")].status == "skipped"
        assert {states[str(root / n)].status for n in ("good.wav", "later.wav")} == {"ok"}
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert third.returncode == 0 and json.loads(third.stdout)["unchanged"] == 3, third.stderr


def test_a_file_left_in_the_journal_by_a_killed_run_is_indexed_if_it_decodes(tmp_path, root, model):
    from earshot.index.journal import journal_path

    db = tmp_path / "c.sqlite"
    journal_path(db).write_text(f"{root / 'good.wav'}\n")  # kill -9 mid-decode leaves this
    with Catalogue(db) as cat:
        s = index(cat, model, root)
        assert s.added == 1 and s.skipped == [], s.as_dict()
    assert not journal_path(db).exists()


# --- 2. a missing root keeps its entries -----------------------------------------------------


def test_a_missing_root_is_unavailable_and_keeps_its_entries(tmp_path, model):
    drive = tmp_path / "drive"
    drive.mkdir()
    write_tone(drive / "a.wav", 1.0, 16000)
    write_tone(drive / "b.wav", 1.0, 16000, freq=800.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, drive)
        drive.rename(tmp_path / "unplugged")
        s = index(cat, model, drive)
        assert s.removed == 0 and len(cat.file_states()) == 2
        assert any(p.startswith(f"unavailable: {drive}") for p in s.problems), s.problems
        s = index(cat, model, drive, prune=True)
        assert s.removed == 2 and cat.file_states() == {}


def test_an_empty_root_folder_is_taken_for_an_unmounted_drive(tmp_path, model):
    mount = tmp_path / "mnt"
    mount.mkdir()
    write_tone(mount / "a.wav", 1.0, 16000)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, mount)
        (mount / "a.wav").unlink()  # what an unmounted mount point looks like
        s = index(cat, model, mount)
        assert s.removed == 0 and len(cat.file_states()) == 1
        assert any("unavailable" in p and "empty" in p for p in s.problems), s.problems
        assert index(cat, model, mount, prune=True).removed == 1


def test_cli_prune_flag(tmp_path, root, model_dir, capsys):
    from earshot.cli import build_parser, main

    drive = tmp_path / "drive"
    drive.mkdir()
    write_tone(drive / "a.wav", 1.0, 16000)
    db = str(tmp_path / "c.sqlite")
    model = ["--db", db, "--model", str(model_dir)]
    assert main(["index", str(drive), *model]) == 0
    drive.rename(tmp_path / "gone")
    capsys.readouterr()
    assert main(["index", str(drive), *model]) == 1  # nothing to index: an error, no change
    assert "earshot: error: nothing to index" in capsys.readouterr().err
    assert main(["index", str(drive), str(root), *model]) == 1
    out = capsys.readouterr().out
    assert "0 removed" in out and f"unavailable: {drive}" in out
    assert main(["index", str(drive), *model, "--prune"]) == 0  # asked for: not a failure
    assert "1 removed" in capsys.readouterr().out
    with Catalogue(db) as cat:
        assert set(cat.file_states()) == {str(root / "good.wav")}
    index_help = build_parser()._subparsers._group_actions[0].choices["index"].format_help()
    assert "--prune" in index_help and "unavailable" in index_help
    with pytest.raises(SystemExit):
        main(["index", str(drive), "--db", db, "--prune", "--keep-missing"])


# --- 3. never read a pipe or a device ------------------------------------------------------


def test_a_fifo_or_a_link_to_dev_zero_given_as_the_path_is_refused(tmp_path, root, model):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.wav"
    zero.symlink_to("/dev/zero")
    with Catalogue(tmp_path / "c.sqlite") as cat, deadline(20):
        s = index(cat, model, fifo, zero, root)
    assert s.added == 1
    assert "not a regular file" in reasons(s)[str(fifo)]
    assert "not a regular file" in reasons(s)[str(zero)]


def test_decoding_never_hashes_a_pipe(tmp_path, model):
    # The file turned into a FIFO between the scan and the decode.
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with deadline(20):
        d = decode_entry(ScanEntry(str(fifo), 1000, 0), model.config.audio)
    assert "not a regular file" in d.error


# --- 4. symlinks -----------------------------------------------------------------------------


def test_a_file_linked_from_outside_the_root_is_removed_with_its_link(tmp_path, root, model):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_tone(outside / "far.wav", 1.0, 16000, freq=700.0)
    (root / "far-link.wav").symlink_to(outside / "far.wav")
    (root / "good-link.wav").symlink_to(root / "good.wav")  # a duplicate: indexed once
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        assert s.added == 2 and set(cat.file_states()) == {
            str(root / "good.wav"),
            str(root / "far-link.wav"),
        }
        (root / "far-link.wav").unlink()
        s = index(cat, model, root)
        assert s.removed == 1 and set(cat.file_states()) == {str(root / "good.wav")}


SECRET = "password=hunter2 api_key=abcdef0123456789\n"


@pytest.mark.parametrize("name", ["secret.wav", "secret.m4a", "secret.mp3"])
def test_a_link_to_a_private_file_never_leaks_its_bytes(tmp_path, root, model, name):
    private = tmp_path / "private.txt"
    private.write_text(SECRET)
    (root / name).symlink_to(private)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
        stored = dict(cat.skipped())
    why = reasons(s)[str(root / name)]
    assert stored[str(root / name)] == why
    for word in ("password", "hunter", "pass", "api_", "b'"):
        assert word not in why, why
    assert "not" in why  # still says what is wrong


# --- 5. paths that do not exist ---------------------------------------------------------------


def test_cli_index_of_paths_that_do_not_exist_is_an_error(tmp_path, model_dir, capsys):
    from earshot.cli import main

    db = tmp_path / "c.sqlite"
    code = main(["index", str(tmp_path / "nope"), str(tmp_path / "nada"), "--db", str(db)])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("earshot: error: ") and "nope" in err and "nada" in err
    assert not db.exists()  # nothing was created


def test_cli_index_with_some_paths_missing_indexes_the_rest_and_fails(
    tmp_path, root, model_dir, capsys
):
    from earshot.cli import main

    db = tmp_path / "c.sqlite"
    argv = ["index", str(tmp_path / "nope"), str(root), "--db", str(db), "--model", str(model_dir)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and "1 added" in out and "unavailable" in out
    assert "earshot: warning: 1 of 2 paths unavailable" in err


# --- 6. truncated WAV and AIFF ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".wav", ".aiff"])
def test_truncated_wav_and_aiff_are_skipped(tmp_path, root, model, suffix):
    full = write_tone(tmp_path / f"full{suffix}", 3.0, 16000)
    write_truncated(full, root / f"cut{suffix}", 0.5)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, root)
    assert s.added == 1
    assert "truncated" in reasons(s)[str(root / f"cut{suffix}")]


# --- 7. workers die with the indexer ---------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Live descendants of `pid`, from /proc (psutil is not a dependency)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # subprocesses or a training run: CI runs it (make test-all)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_indexer_kills_its_decode_workers(tmp_path, model_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(60):
        write_tone(root / f"clip{i:02d}.wav", 4.0, 44100, freq=200.0 + 20 * i, seed=i)
    db = str(tmp_path / "c.sqlite")
    cmd = [sys.executable, "-m", "earshot.cli", "index", str(root), "--db", db]
    cmd += ["--model", str(model_dir), "--workers", "2", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        give_up = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < give_up and proc.poll() is None:
            time.sleep(0.1)
            workers = _children(proc.pid)
        time.sleep(0.5)  # let them start work
        assert proc.poll() is None and len(workers) >= 2, "the indexer finished too soon"
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        give_up = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < give_up:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived the indexer"
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- two indexers on one catalogue at once (issue #19) ---------------------------------------

HOLD_SCRIPT = """
import sys, time
from pathlib import Path
import earshot.index.build as build
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.model.io import load_model
build.BATCH_FILES = 2
commit = Indexer._commit
def held_commit(self, *args):
    commit(self, *args)
    print("committed", flush=True)
    give_up = time.monotonic() + 120
    while not Path(sys.argv[4]).exists() and time.monotonic() < give_up:  # mid-run, locked
        time.sleep(0.05)
Indexer._commit = held_commit
cat = Catalogue(sys.argv[1])
s = Indexer(cat, load_model(sys.argv[2], with_text=False), workers=0, progress=False).run(
    [sys.argv[3]]
)
print("finished", s.added, s.segments, flush=True)
"""


def _line(proc: subprocess.Popen, seconds: float) -> str:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline() if ready else ""


@pytest.mark.slow  # 11 s of subprocesses killed and rerun; make test-all and CI run it
def test_a_second_indexer_on_the_same_catalogue_refuses_instead_of_embedding_again(
    tmp_path, model_dir
):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        write_tone(root / f"clip{i:02d}.wav", 1.5, 16000, freq=200.0 + 50 * i, seed=i)
    db, release = tmp_path / "c.sqlite", tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(db), str(model_dir), str(root), str(release)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _line(first, 120).strip() == "committed", "the first indexer never committed"
        cmd = [sys.executable, "-m", "earshot.cli", "index", str(root), "--db", str(db)]
        cmd += ["--model", str(model_dir), "--workers", "1", "--json"]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert first.poll() is None, "the first indexer was no longer running"
        # Without the lock it embedded the 22 files the first had not committed yet (and the
        # first then embedded them again).
        assert second.returncode == 1 and second.stdout == "", second.stdout
        assert second.stderr.strip() == (
            f"earshot: error: catalogue '{db}' is being indexed by another process "
            f"(pid {first.pid}); try again when it has finished"
        )
        release.touch()
        out, _ = first.communicate(timeout=120)
        assert first.returncode == 0 and out.splitlines()[-1] == "finished 24 24", out
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
        first.wait()
    with Catalogue(db) as cat:
        states = cat.file_states()
        assert len(states) == 24 and {s.status for s in states.values()} == {"ok"}
        assert cat.segment_count() == 24 and cat.check() == []
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=180)  # released: runs
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["unchanged"] == 24 and summary["segments_added"] == 0


def test_the_index_lock_dies_with_its_holder(tmp_path):
    from earshot.index.writelock import IndexLocked, index_lock, lock_path

    db = tmp_path / "c.sqlite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom earshot.index.writelock import index_lock\n"
            "with index_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _line(holder, 60).strip() == "held"
        started = time.monotonic()
        locked = rf"indexed by another process \(pid {holder.pid}\)"
        with pytest.raises(IndexLocked, match=locked), index_lock(db, wait_s=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 5  # it waited, briefly
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs, the kernel drops it
        holder.wait()
        with index_lock(db, wait_s=0):
            assert lock_path(db).read_text() == f"{os.getpid()}\n"
        assert lock_path(db).read_text() == ""  # released: no stale pid left behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        holder.wait()
