"""Formats libsndfile does not read (M4A/AAC, MP4 with video, ADTS, WMA), decoded through PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest

from earshot.audio.io import load, probe, stream
from earshot.errors import AudioDecodeError
from earshot.index.scan import ScanProblems, scan
from earshot.testing.audio import tone, write_av, write_tone, write_truncated

SR = 16000


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * sample_rate / len(x)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# (name, rate, channels, video, format, codec)
CASES = [
    ("voice memo.m4a", 44100, 1, False, "MP4", "AAC"),
    ("stereo.M4A", 48000, 2, False, "MP4", "AAC"),
    ("bare.aac", 22050, 1, False, "AAC", "AAC"),
    ("old.wma", 44100, 2, False, "ASF", "WMAV2"),
    ("camera.mp4", 44100, 1, True, "MP4", "AAC"),
]


@pytest.mark.parametrize("name, rate, channels, video, fmt, codec", CASES)
def test_each_format_decodes_to_the_tone_it_holds(
    tmp_path, name, rate, channels, video, fmt, codec
):
    path = write_av(tmp_path / name, 2.0, rate, channels=channels, freq=440.0, video=video)
    info = probe(path)
    assert (info.format, info.subtype) == (fmt, codec)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)  # + the codec's frame padding
    x = load(path, SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == pytest.approx(2.0 * SR, abs=0.1 * SR)
    assert dominant_hz(x, SR) == pytest.approx(440.0, abs=2.0)
    # Channels are averaged: the mono mix of write_tone's channels, within the codec's loss.
    reference = tone(2.0, SR, channels=channels).mean(axis=1)
    assert rms(x) == pytest.approx(rms(reference), rel=0.08)


def test_stream_blocks_add_up_to_the_whole_file_at_its_own_rate(tmp_path):
    path = write_av(tmp_path / "x.m4a", 3.0, SR)
    whole = load(path, SR)
    for block_s in (0.1, 1.0, 30.0):
        blocks = list(stream(path, SR, block_s=block_s))
        if block_s < 1:
            assert len(blocks) > 10 and max(map(len, blocks)) < 0.2 * SR
        np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_resampled_stream_has_the_length_and_pitch_of_the_file(tmp_path):
    path = write_av(tmp_path / "x.m4a", 3.0, 44100, freq=1000.0)
    native = load(path, 44100)
    x = np.concatenate(list(stream(path, SR, block_s=0.5)))
    assert len(x) == pytest.approx(len(native) * SR / 44100, abs=2)
    assert dominant_hz(x, SR) == pytest.approx(1000.0, abs=2.0)


def test_content_decides_not_the_name(tmp_path):
    m4a = write_av(tmp_path / "x.m4a", 1.0, SR)
    disguised = m4a.rename(tmp_path / "exported.wav")  # an MP4 saved under a WAV name
    assert probe(disguised).format == "MP4"
    assert len(load(disguised, SR)) == pytest.approx(SR, abs=0.1 * SR)
    wav = write_tone(tmp_path / "y.wav", 1.0, SR)
    renamed = wav.rename(tmp_path / "really_wav.m4a")  # a WAV under an M4A name: libsndfile
    assert probe(renamed).format == "WAV"
    assert len(load(renamed, SR)) == SR


def test_bad_files_raise_audio_decode_error_saying_what_is_wrong(tmp_path):
    full = write_av(tmp_path / "full.m4a", 2.0, SR)
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    html = tmp_path / "download.m4a"
    html.write_bytes(b"<html><body>Not Found</body></html>")
    cut = write_truncated(full, tmp_path / "cut.m4a", 0.5)  # the index (moov) sits at the end
    cases = {
        empty: "empty file",
        html: "not a readable audio or video file (it looks like an HTML page)",
        cut: "corrupt or truncated audio/video file",
        tmp_path / "missing.m4a": "no such file",
        tmp_path: "is a directory",
    }
    for path, words in cases.items():
        for call in (probe, lambda p: stream(p, SR)):
            with pytest.raises(AudioDecodeError, match="cannot decode") as err:
                call(path)
            assert words in str(err.value), (path, str(err.value))
            assert str(path) in str(err.value)


def test_a_truncated_stream_yields_its_good_part_then_fails(tmp_path):
    full = write_av(tmp_path / "full.aac", 3.0, SR)
    cut = write_truncated(full, tmp_path / "cut.aac", 0.5)  # ADTS: frame after frame
    got = []
    with pytest.raises(AudioDecodeError, match="truncated or corrupt: decoding failed after"):
        for block in stream(cut, SR, block_s=0.25):
            got.append(block)
    assert 0.5 * SR < sum(map(len, got)) < 2.0 * SR


def test_a_video_without_sound_is_refused(tmp_path):
    path = tmp_path / "silent film.mp4"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), i * 40, dtype=np.uint8)
            for packet in picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in picture.encode(None):
            out.mux(packet)
    with pytest.raises(AudioDecodeError, match="has no audio track"):
        probe(path)


def test_the_scan_finds_them(tmp_path):
    for name in ("a.m4a", "b.MP4", "c.aac", "d.wma", "e.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(e.path.rsplit("/", 1)[1] for e in scan([tmp_path], ScanProblems()))
    assert found == ["a.m4a", "b.MP4", "c.aac", "d.wma", "e.wav"]
