"""`earshot index`: scan, diff, embed, commit — and every way a folder of audio can go wrong."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from earshot.index.build import Indexer
from earshot.index.store import Catalogue, CatalogueError, ModelMismatchError
from earshot.model.io import save_model
from earshot.testing.audio import (
    make_corrupt_files,
    write_av,
    write_noise,
    write_tone,
    write_truncated,
)
from earshot.testing.models import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    (root / "birds").mkdir(parents=True)
    (root / "street" / "night").mkdir(parents=True)
    write_tone(root / "birds" / "robin.wav", 3.0, 22050, freq=3000.0)
    write_tone(root / "birds" / "owl.flac", 2.0, 44100, channels=2, freq=400.0, seed=1)
    write_noise(root / "street" / "traffic.ogg", 4.0, 32000, seed=2)
    write_tone(root / "street" / "night" / "long_hum.wav", 23.0, 16000, freq=120.0, seed=3)
    (root / "notes.txt").write_text("not audio, not indexed")
    return root


def index(cat, model, *paths, **kw):
    return Indexer(cat, model, workers=kw.pop("workers", 0), progress=False).run(
        [str(p) for p in paths], **kw
    )


class CountingModel:
    """Wraps a model and counts the windows it embeds."""

    def __init__(self, model):
        self._model, self.windows = model, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_audio(self, waves, *args, **kwargs):
        self.windows += len(waves)
        return self._model.encode_audio(waves, *args, **kwargs)


def test_index_then_reindex_unchanged(tmp_path, library, model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, library)
        assert (s.added, s.updated, s.removed, s.skipped) == (4, 0, 0, [])
        assert s.segments == 1 + 1 + 1 + 4  # the 23 s file has windows 0-10, 5-15, 10-20, 15-23
        assert cat.check() == []
        counting = CountingModel(model)
        again = Indexer(cat, counting, workers=0, progress=False).run([str(library)])
        assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
        assert counting.windows == 0


def test_changed_removed_moved_and_kept(tmp_path, library, model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, library)
        write_tone(library / "birds" / "robin.wav", 5.0, 22050, freq=2500.0)  # changed
        (library / "street" / "traffic.ogg").unlink()  # gone
        shutil.move(library / "birds" / "owl.flac", library / "owl-moved.flac")  # moved
        counting = CountingModel(model)
        s = Indexer(cat, counting, workers=0, progress=False).run([str(library)])
        assert (s.updated, s.removed, s.reused, s.added) == (1, 2, 1, 1)
        assert counting.windows == 1  # only the changed robin; the moved owl kept its vectors
        paths = set(cat.file_states())
        assert str(library / "owl-moved.flac") in paths
        assert str(library / "street" / "traffic.ogg") not in paths
        (library / "owl-moved.flac").unlink()
        s = index(cat, model, library, keep_missing=True)
        assert s.removed == 0 and str(library / "owl-moved.flac") in cat.file_states()
        assert cat.check() == []


def test_removal_only_under_the_given_roots(tmp_path, library, model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, library / "birds", library / "street")
        s = index(cat, model, library / "birds")  # street is not mentioned: left alone
        assert s.removed == 0 and len(cat.file_states()) == 4


def test_bad_files_are_skipped_with_reasons_and_never_stop_the_run(tmp_path, library, model):
    bad = make_corrupt_files(tmp_path / "bad")
    for name in ("empty", "html", "random", "truncated_flac", "no_frames"):
        src = bad[name]
        shutil.copy(src, library / f"bad_{name}{src.suffix or '.wav'}")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, library)
        assert s.added == 4
        reasons = dict(s.skipped)
        assert len(reasons) == 5, reasons
        assert "empty file" in reasons[str(library / "bad_empty.wav")]
        assert "not an audio file" in reasons[str(library / "bad_html.wav")]
        assert cat.skipped() and cat.check() == []
        again = index(cat, model, library)  # skipped files are not retried while unchanged
        assert again.skipped == [] and again.unchanged == 9


def test_phone_and_camera_files_are_indexed_through_pyav(tmp_path, library, model):
    phone = library / "phone"
    phone.mkdir()
    write_av(phone / "memo.m4a", 12.0, 48000, channels=2, freq=800.0)
    write_av(phone / "clip.mp4", 3.0, 44100, video=True)
    write_truncated(write_av(tmp_path / "whole.m4a", 3.0, 44100), phone / "cut.m4a", 0.5)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, library)
        assert s.added == 6
        reasons = dict(s.skipped)
        assert list(reasons) == [str(phone / "cut.m4a")]
        assert "corrupt or truncated audio/video file" in reasons[str(phone / "cut.m4a")]
        # 12 s (+ AAC padding) in 10 s windows, 5 s hop: 0-10 and 5-12; the 3 s clip: one.
        assert s.segments == 1 + 1 + 1 + 4 + 2 + 1
        assert cat.check() == []


def test_file_vanishing_mid_run(tmp_path, library, model, monkeypatch):
    import earshot.index.decoding as decoding

    real = decoding.decode_entry

    def vanish_owl(entry, audio, with_windows=True):
        if entry.path.endswith("owl.flac"):
            os.unlink(entry.path)
        return real(entry, audio, with_windows)

    monkeypatch.setattr(decoding, "decode_entry", vanish_owl)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, library)
        assert s.added == 3 and s.skipped == []
        assert not any(p.endswith("owl.flac") for p in cat.file_states())


def test_one_spelling_per_file_however_the_root_is_written(tmp_path, library, model, monkeypatch):
    # `index ../library` and `index /abs/library` are one library: before, each spelling kept
    # its own copy of every file ("also at" twins), and --like FILE found the file itself.
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, "../library/")
        assert s.added == 4
        assert sorted(cat.file_states()) == sorted(
            str(p) for p in library.rglob("*") if p.suffix in {".wav", ".flac", ".ogg"}
        )
        for spelling in (library, "./../work/../library", f"{library}//birds/.."):
            again = index(cat, model, spelling)
            assert (again.added, again.removed, again.unchanged) == (0, 0, 4), spelling
        assert len(cat.file_states()) == 4


def test_entries_an_older_earshot_stored_with_dots_are_folded(
    tmp_path, library, model, monkeypatch
):
    import earshot.index.build as build
    import earshot.index.scan as scan_module

    def old_absolute(path):  # what an older earshot stored: Path.absolute() keeps `..`
        return str(Path(path).expanduser().absolute())

    monkeypatch.chdir(library / "birds")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        with monkeypatch.context() as old:
            old.setattr(build, "absolute", old_absolute)
            old.setattr(scan_module, "absolute", old_absolute)
            index(cat, model, "../street")
            index(cat, model, library / "street")
        assert len(cat.file_states()) == 4  # two files, each under two spellings
        (library / "street" / "traffic.ogg").unlink()
        s = index(cat, model, library / "street")
        # the gone file's two entries are removed; the other file's dotted twin is folded
        assert (s.removed, s.respelled, s.unchanged) == (2, 1, 1)
        assert s.as_dict()["respelled"] == 1  # what `index --json` and the CLI line report
        assert list(cat.file_states()) == [str(library / "street" / "night" / "long_hum.wav")]


def test_symlink_loops_and_duplicate_links(tmp_path, library, model):
    (library / "birds" / "loop").symlink_to(library)  # a folder that contains itself
    (library / "robin-link.wav").symlink_to(library / "birds" / "robin.wav")
    (library / "dangling.wav").symlink_to(library / "nowhere.wav")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, library)
        assert s.added == 4
        # The dangling link is not read, but reported (and listed by `earshot skipped`).
        assert [(p, "symbolic link to nothing" in r) for p, r in s.skipped] == [
            (str(library / "dangling.wav"), True)
        ]


def test_unreadable_folder_is_reported_and_its_files_kept(tmp_path, library, model, monkeypatch):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, library)
        real_scandir = os.scandir
        blocked = str(library / "birds")

        def scandir(path="."):
            if str(path) == blocked:
                raise PermissionError(13, "Permission denied", path)
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
        s = index(cat, model, library)
        assert any("folder not read" in p and blocked in p for p in s.problems)
        assert s.removed == 0  # unseen is not gone
        assert len(cat.file_states()) == 4


def test_missing_root_is_reported(tmp_path, library, model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = index(cat, model, tmp_path / "no-such-folder", library)
        assert s.added == 4 and any("no-such-folder" in p for p in s.problems)


def test_refuses_a_second_model(tmp_path, library, model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, model, library / "birds")
        with pytest.raises(ModelMismatchError, match="model"):
            index(cat, tiny_model(seed=5), library / "street")
        assert len(cat.file_states()) == 2


def test_full_disk_is_a_clear_error_and_the_catalogue_survives(tmp_path, library, model):
    path = tmp_path / "c.sqlite"
    with Catalogue(path) as cat:
        index(cat, model, library / "birds")
        for i in range(20):  # enough rows to need new pages
            write_tone(library / "street" / f"extra{i:02d}.wav", 0.2, 8000, seed=10 + i)
        pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
        cat.db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(CatalogueError, match="full"):
            index(cat, model, library / "street")
    with Catalogue(path) as cat:
        assert cat.check() == [] and len(cat.file_states()) == 2
        assert index(cat, model, library / "street").added == 22  # usable again once there is room


def test_parallel_workers_give_the_same_vectors(tmp_path, library, model):
    with Catalogue(tmp_path / "a.sqlite") as a, Catalogue(tmp_path / "b.sqlite") as b:
        index(a, model, library, workers=0)
        index(b, model, library, workers=2)
        ia, va = a.vectors()
        ib, vb = b.vectors()
        pa = {s.path: s.start_s for s in a.segments(ia.tolist()).values()}
        pb = {s.path: s.start_s for s in b.segments(ib.tolist()).values()}
        assert pa.keys() == pb.keys() and len(va) == len(vb)


KILL_SCRIPT = """
import sys
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.model.io import load_model
import earshot.index.build as build
build.BATCH_FILES = 2
cat = Catalogue(sys.argv[1])
Indexer(cat, load_model(sys.argv[2], with_text=False), workers=0, progress=False).run([sys.argv[3]])
print("finished", flush=True)
"""


@pytest.mark.slow  # 13 s of subprocesses killed and rerun; make test-all and CI run it
def test_kill_9_at_any_moment_then_rerun(tmp_path, model):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        write_tone(root / f"clip{i:02d}.wav", 1.5, 16000, freq=200.0 + 50 * i, seed=i)
    model_dir = tmp_path / "model"
    save_model(model, model_dir)
    db = tmp_path / "c.sqlite"
    for delay in (2.5, 3.0, 3.5, 4.0):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(db), str(model_dir), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Catalogue(db) as cat:
            assert cat.check() == []
    with Catalogue(db) as cat:
        done_before = {p for p, s in cat.file_states().items() if s.status == "ok"}
        counting = CountingModel(model)
        s = Indexer(cat, counting, workers=0, progress=False).run([str(root)])
        assert s.unchanged == len(done_before)  # nothing committed is re-embedded
        assert counting.windows == 24 - len(done_before)
        assert len(cat.file_states()) == 24 and cat.segment_count() == 24
        assert cat.check() == []


def test_cli_index_summary(tmp_path, library, model, capsys, tiny_text_dir):
    from earshot.cli import main

    folder = tmp_path / "m"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), folder)
    db = tmp_path / "c.sqlite"
    code = main(["index", str(library), "--db", str(db), "--model", str(folder), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    import json

    summary = json.loads(out)
    assert summary["added"] == 4 and summary["catalogue"]["files_ok"] == 4
    code = main(["index", str(library), "--db", str(db), "--model", str(folder)])
    assert code == 0 and "0 added" in capsys.readouterr().out
    code = main(["index", str(library), "--db", str(db), "--random-init", "--encoder", "cnn10"])
    assert code == 1 and "model" in capsys.readouterr().err
