"""`bench/fuzz_decode.py --quick` (issue #19): ~50 malformed and good files indexed by
`earshot index` in a subprocess under time and memory limits; and regressions for what the
fuzz found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import earshot.index.decoding as decoding
from earshot.audio.io import probe
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.testing.audio import write_adts, write_tone, write_truncated
from earshot.testing.models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_fuzz_run_skips_every_bad_file_with_a_reason_and_indexes_the_good():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz_decode.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    result = json.loads(done.stdout)  # stdout is the JSON summary and nothing else
    assert done.returncode == 0 and result["failures"] == [], result["failures"]
    assert result["ok"] and result["quick"] and result["model"] == "tiny"
    assert result["files"]["cases"] >= 40 and result["files"]["bad"] >= 30
    kinds = result["kinds"]
    for kind in ("truncated", "flipped_header", "zero_length", "header_only", "not_audio",
                 "absurd_rate", "huge_channels", "bad_samples", "non_utf8_name", "fifo",
                 "link_to_device", "link_outside_root", "broken_link", "folder_named_audio",
                 "long_silent", "adts_lying_length", "good"):  # fmt: skip
        assert kinds[kind]["files"] >= 1, kind
    for kind, counts in kinds.items():
        assert counts.get("wrong", 0) == 0, kind
        if kind != "folder_named_audio":  # a folder is walked, not reported
            assert counts["unreported"] == 0, kind
    for kind in ("zero_length", "not_audio", "absurd_rate", "bad_samples", "fifo",
                 "link_to_device", "broken_link", "non_utf8_name"):  # fmt: skip
        assert kinds[kind]["skipped"] == kinds[kind]["files"], kind
    assert kinds["good"]["indexed"] == kinds["good"]["files"]
    run = result["index"]
    assert run["exit_code"] == 0 and not run["traceback"] and not run["timed_out"]
    assert run["processes"] >= 2  # the indexer and its decode workers were measured
    memory = result["memory"]
    assert memory["bound_mb"] == 1500 and memory["within_bound"]
    assert 0 < memory["peak_process_mb"] <= memory["peak_tree_mb"] <= 1500
    assert result["skipped_command"]["bad_files_unlisted"] == 0
    assert result["rerun"]["added"] == 0 and result["rerun"]["skipped"] == 2  # non-UTF-8 names


# --- regressions --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("streamed", [False, True], ids=["in-worker", "streamed"])
def test_a_bare_aac_is_catalogued_at_the_length_that_decoded(
    tmp_path, model, monkeypatch, streamed
):
    # FFmpeg guesses an ADTS file's length from its first frames' bit rate: silence then sound
    # made 65 s into 312 s; the catalogue (duration filters, hours) took the guess.
    root = tmp_path / "lib"
    root.mkdir()
    rng = np.random.default_rng(0)
    noise = (0.4 * rng.standard_normal(3 * 16000)).astype(np.float32)
    path = write_adts(root / "memo.aac", [np.zeros(40 * 16000, np.float32), noise])
    assert probe(path).duration_s > 60  # the guess
    if streamed:  # as for a file long by its header: decoded at commit, window by window
        monkeypatch.setattr(decoding, "LONG_FILE_S", 10.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = Indexer(cat, model, workers=0, progress=False).run([str(root)])
        assert s.added == 1 and s.audio_s == pytest.approx(43.0, abs=0.3)
        (duration,) = cat.db.execute("SELECT duration_s FROM files").fetchone()
    assert duration == pytest.approx(43.0, abs=0.3)


def test_a_cut_mp3_is_catalogued_at_the_length_that_decoded(tmp_path, model):
    # A cut MP3 decodes as a shorter clip (audio/io.py), but its Xing header promises the whole.
    root = tmp_path / "lib"
    root.mkdir()
    whole = write_tone(tmp_path / "whole.mp3", 20.0, 16000)
    write_truncated(whole, root / "cut.mp3", 0.5)
    promised = probe(root / "cut.mp3").duration_s
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = Indexer(cat, model, workers=0, progress=False).run([str(root)])
        assert s.added == 1
        (duration,) = cat.db.execute("SELECT duration_s FROM files").fetchone()
    assert promised > 19 and 8 < duration < 12


def test_an_accurate_header_length_is_kept(tmp_path, model):
    root = tmp_path / "lib"
    root.mkdir()
    write_tone(root / "a.wav", 23.0, 22050)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(root)])
        (duration,) = cat.db.execute("SELECT duration_s FROM files").fetchone()
    assert duration == 23.0  # the header's, exactly: resampling rounds the decoded length
