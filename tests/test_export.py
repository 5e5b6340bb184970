"""`earshot export`: a span cut at the file's own rate and channels, in its format or as WAV."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earshot.audio.export import fade_gains
from earshot.audio.recording import open_source, read_frames, span_frames
from earshot.cli import main
from earshot.index.schema import FileRecord
from earshot.index.store import Catalogue
from earshot.testing.audio import write_av, write_tone


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def exported(capsys, *argv) -> dict:
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def wav24(tmp_path) -> Path:
    """5 s of 24-bit stereo at 48 kHz: neither the model's rate nor its channel count."""
    return write_tone(tmp_path / "door slam.wav", 5.0, 48000, channels=2, subtype="PCM_24")


@pytest.mark.parametrize(
    ("name", "rate", "channels", "subtype", "dtype"),
    [
        ("a.wav", 48000, 2, "PCM_24", "int32"),
        ("b.wav", 44100, 1, "FLOAT", "float32"),
        ("c.flac", 96000, 2, "PCM_24", "int32"),
        ("d.aiff", 22050, 3, "PCM_16", "int16"),
        ("e.caf", 44100, 2, "PCM_32", "int32"),
        ("f.w64", 8000, 1, "PCM_16", "int16"),
        ("g.au", 16000, 1, "ULAW", "int16"),
    ],
)
def test_same_format_is_the_sources_samples_bit_for_bit(
    tmp_path, capsys, name, rate, channels, subtype, dtype
):
    src = write_tone(tmp_path / name, 3.0, rate, channels=channels, subtype=subtype)
    out = tmp_path / f"out{src.suffix}"
    doc = exported(capsys, "export", src, "--start", 0.25, "--end", 1.75, "-o", out)
    info = sf.info(out)
    source = sf.info(src)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        source.format, source.subtype, rate, channels,
    )  # fmt: skip
    got = sf.read(out, dtype=dtype, always_2d=True)[0]
    want = sf.read(src, dtype=dtype, always_2d=True)[0][round(0.25 * rate) : round(1.75 * rate)]
    assert got.shape == want.shape and np.array_equal(got, want)
    assert doc["frames"] == len(want) and doc["note"] is None
    assert (doc["sample_rate"], doc["channels"]) == (rate, channels)


def test_wav_from_any_source_keeps_depth_where_wav_can(tmp_path, capsys, wav24):
    flac = write_tone(tmp_path / "x.flac", 2.0, 44100, channels=2, subtype="PCM_24")
    out = tmp_path / "x.wav"
    doc = exported(capsys, "export", flac, "--start", 0.5, "--end", 1.5, "-o", out)
    assert doc["format"] == "WAV" and doc["subtype"] == "PCM_24"  # chosen by -o's suffix
    got = sf.read(out, dtype="int32")[0]
    assert np.array_equal(got, sf.read(flac, dtype="int32")[0][22050:66150])
    # --format wav without -o: named after the source and the span, in the current folder.
    os.chdir(tmp_path)
    doc = exported(capsys, "export", wav24, "--start", 1, "--end", 2.5, "--format", "wav")
    assert doc["path"] == "door slam_1-2.5.wav" and Path(doc["path"]).is_file()


def test_lossy_and_pyav_sources(tmp_path, capsys):
    ogg = write_tone(tmp_path / "v.ogg", 2.0, 44100, channels=2)
    doc = exported(capsys, "export", ogg, "--start", 0, "--end", 1, "-o", tmp_path / "v2.ogg")
    assert sf.info(tmp_path / "v2.ogg").subtype == "VORBIS" and "lossy" in doc["note"]
    m4a = write_av(tmp_path / "memo.m4a", 3.0, 44100, channels=2)
    doc = exported(capsys, "export", m4a, "--start", 1, "--end", 2, "-o", tmp_path)
    assert doc["path"].endswith("memo_1-2.m4a") and doc["format"] == "mp4" and "AAC" in doc["note"]
    assert sf.info(tmp_path / "v2.ogg").samplerate == 44100
    import av

    with av.open(doc["path"]) as c:
        track = c.streams.audio[0]
        assert (track.codec_context.name, track.codec_context.sample_rate) == ("aac", 44100)
        assert track.codec_context.layout.nb_channels == 2
    # As WAV: the decoded samples, where the M4A's own decoding puts them.
    wav = tmp_path / "memo.wav"
    doc = exported(capsys, "export", m4a, "--start", 1, "--end", 2, "-o", wav)
    assert doc["subtype"] == "PCM_16" and "decoded from AAC" in doc["note"]
    got, rate = sf.read(wav, dtype="int16", always_2d=True)
    assert rate == 44100 and got.shape == (44100, 2) and np.abs(got).max() > 3000
    decoded = np.concatenate(list(read_frames(open_source(m4a), 44100, 88200)))
    assert np.array_equal(got, np.rint(decoded * 32768).astype(np.int16))  # the decoder's own


def test_a_format_nothing_here_writes_falls_back_to_wav(tmp_path, capsys):
    wma = write_av(tmp_path / "old.wma", 2.0, 44100, channels=2)
    doc = exported(capsys, "export", wma, "--start", 0.5, "--end", 1.0, "-o", tmp_path)
    # wmav2 can be encoded by PyAV: then it is a WMA; either way it is said.
    assert doc["path"].endswith(("old_0.5-1.wma", "old_0.5-1.wav"))
    assert doc["note"]


def test_fades(tmp_path, capsys, wav24):
    out = tmp_path / "f.wav"
    exported(capsys, "export", wav24, "--start", 1, "--end", 2, "--fade", 10, "-o", out)
    got = sf.read(out, dtype="float64")[0]
    src = sf.read(wav24, dtype="float64")[0][48000:96000]
    n = 480
    assert np.array_equal(got[n:-n], src[n:-n])
    ramp = np.arange(1, n + 1) / (n + 1)
    assert np.allclose(got[:n], src[:n] * ramp[:, None], atol=2**-23)
    assert np.allclose(got[-n:], src[-n:] * ramp[::-1, None], atol=2**-23)
    eq = tmp_path / "eq.wav"
    exported(capsys, "export", wav24, "--start", 1, "--end", 2, "--fade", 10,
             "--fade-shape", "equal-power", "-o", eq)  # fmt: skip
    got = sf.read(eq, dtype="float64")[0]
    assert np.allclose(got[:n], src[:n] * np.sin(ramp * np.pi / 2)[:, None], atol=2**-23)
    # A fade longer than half the span meets in the middle.
    g = fade_gains(np.arange(10), 10, 100, "linear")
    assert g.max() <= 1 and np.allclose(g, g[::-1]) and g[0] > 0


def test_never_overwrites_without_force(tmp_path, capsys, wav24):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    rc, _, err = run(capsys, "export", wav24, "--start", 0, "--end", 1, "-o", out)
    assert rc == 1 and err.startswith("earshot: error:") and "--force" in err
    assert out.read_bytes() == b"precious"
    rc, _, err = run(capsys, "export", wav24, "--start", 0, "--end", 1, "-o", out, "--force")
    assert rc == 0 and sf.info(out).frames == 48000
    rc, _, err = run(capsys, "export", wav24, "--start", 0, "--end", 1, "-o", wav24, "--force")
    assert rc == 1 and "the source recording itself" in err
    assert sf.info(wav24).frames == 5 * 48000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--start", 2, "--end", 1), "must end after it starts"),
        (("--start", 1, "--end", 1), "must end after it starts"),
        (("--start", -0.5, "--end", 1), "starts before the file"),
        (("--start", 4, "--end", 6), "only 5.000 s long"),
        (("--start", 5.5, "--end", 6), "starts at 5.5 s"),
        (("--start", 0, "--end", 1, "-o", "x.mp3"), "does not end in .wav"),
        (("--start", 0, "--end", 1, "-o", "clips/"), "no folder 'clips' to write the clip into"),
        (("--start", 0, "--end", 1, "-o", "door slam.wav/"), "is a file, not a folder"),
        (("--start", 0, "--end", 1, "--fade", -1), "--fade is 0 to"),
        (("--start", 0, "--end", "nan"), "must be a number"),
    ],
)
def test_bad_bounds_and_names_are_one_line_errors(tmp_path, capsys, wav24, args, words):
    os.chdir(tmp_path)
    rc, out, err = run(capsys, "export", wav24, *args)
    assert rc == 1 and out == ""
    assert err.startswith("earshot: error:") and words in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door slam.wav"]


def test_an_end_a_hair_past_the_file_means_its_end(wav24):
    src = open_source(wav24)
    assert span_frames(src, 4.0, 5.03) == (4 * 48000, 5 * 48000)
    assert span_frames(src, None, None) == (0, 5 * 48000)


@pytest.fixture
def catalogue(tmp_path, wav24):
    """A catalogue holding `wav24` with two windows (no model needed to look ids up); the
    second ends past the file, as a length estimated from a header can make it."""
    db = tmp_path / "c.sqlite"
    st = wav24.stat()
    record = FileRecord(str(wav24), st.st_size, st.st_mtime_ns, "h", 5.0, 48000, 2, "WAV",
                        "PCM_24")  # fmt: skip
    v = np.eye(8, dtype=np.float32)
    with Catalogue(db) as cat:
        cat.bind_model("m", 8, {"encoder": "tiny"})
        with cat.batch():
            file_id = cat.put_file(record, [(0.0, 3.0, v[0]), (2.0, 5.4, v[1])])
        segments = [s.segment_id for s in cat.file_segments(file_id)]
    return db, file_id, segments


def test_hits_by_catalogue_id(tmp_path, capsys, wav24, catalogue):
    db, file_id, (seg0, seg1) = catalogue
    doc = exported(capsys, "export", f"seg:{seg1}", "--db", db, "-o", tmp_path / "s.wav")
    assert (doc["start"], doc["end"], doc["frames"]) == (2.0, 5.0, 3 * 48000)
    want = sf.read(wav24, dtype="int32")[0][2 * 48000 :]
    assert np.array_equal(sf.read(tmp_path / "s.wav", dtype="int32")[0], want)
    doc = exported(
        capsys, "export", f"seg:{seg0}", "--end", 1, "--db", db, "-o", tmp_path / "t.wav"
    )
    assert (doc["start"], doc["end"]) == (0.0, 1.0)
    doc = exported(capsys, "export", f"file:{file_id}", "--start", 4, "--db", db, "-o", tmp_path)
    assert doc["path"].endswith("door slam_4-5.wav") and doc["frames"] == 48000
    clips = tmp_path / "clips"
    clips.mkdir()
    doc = exported(capsys, "export", f"seg:{seg0}", "--db", db, "-o", f"{clips}{os.sep}")
    assert doc["path"] == str(clips / "door slam_0-3.wav")


@pytest.mark.parametrize(
    ("hit", "words"),
    [
        ("file:999", "no file with id 999"),
        ("seg:999", "no segment with id 999"),
        ("12", "write file:12 or seg:12"),
        ("nowhere.wav", "no such file"),
    ],
)
def test_bad_ids_and_paths(tmp_path, capsys, catalogue, hit, words):
    db = catalogue[0]
    os.chdir(tmp_path)
    rc, _, err = run(capsys, "export", hit, "--db", db, "--start", 0, "--end", 1)
    assert rc == 1 and err.startswith("earshot: error:") and words in err


def test_text_output_says_what_was_written(tmp_path, capsys, wav24):
    rc, out, _ = run(capsys, "export", wav24, "--start", 1, "--end", 2, "-o", tmp_path / "o.wav")
    assert rc == 0
    assert "wrote" in out and "1.000 s (48000 frames)" in out and "48000 Hz, 2 ch" in out
