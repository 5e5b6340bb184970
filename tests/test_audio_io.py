"""Decoding: every format, rate, channel count and bit depth, streaming, and every way to fail."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from earshot.audio.io import AudioInfo, load, probe, stream
from earshot.errors import AudioDecodeError
from earshot.testing.audio import make_corrupt_files, tone, write_noise, write_tone, write_truncated

SR = 32000
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * sample_rate / len(x)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def reference_mono(path: Path) -> np.ndarray:
    """The whole file in one read, averaged over channels: (frames,) float32."""
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1, dtype=np.float32)


# (suffix, file rate, lossless): Opus only takes 8/12/16/24/48 kHz.
FORMATS = [
    (".wav", SR, True),
    (".flac", SR, True),
    (".aiff", SR, True),
    (".ogg", SR, False),
    (".opus", 48000, False),
    (".mp3", SR, False),
]


@pytest.mark.parametrize(("suffix", "rate", "lossless"), FORMATS)
def test_each_format_round_trips(tmp_path, suffix, rate, lossless):
    path = write_tone(tmp_path / f"tone{suffix}", 2.0, rate, freq=1000.0)
    x = load(path, SR)
    assert x.dtype == np.float32 and x.ndim == 1
    if lossless:
        assert len(x) == 2 * SR
        np.testing.assert_allclose(x, tone(2.0, SR, freq=1000.0)[:, 0], atol=1.01 / 2**15)
    else:
        # libsndfile trims the codecs' priming and padding; allow a little slack anyway.
        assert abs(len(x) - 2 * SR) <= 64
        assert dominant_hz(x, SR) == pytest.approx(1000.0, abs=2.0)
        assert rms(x) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize(
    ("suffix", "subtype", "bits"),
    [
        (".wav", "PCM_U8", 8),
        (".wav", "PCM_16", 16),
        (".wav", "PCM_24", 24),
        (".wav", "PCM_32", 32),
        (".wav", "FLOAT", None),
        (".wav", "DOUBLE", None),
        (".flac", "PCM_S8", 8),
        (".flac", "PCM_24", 24),
        (".aiff", "PCM_S8", 8),
        (".aiff", "PCM_32", 32),
        (".aiff", "FLOAT", None),
    ],
)
def test_subtypes_decode_to_within_their_quantisation(tmp_path, suffix, subtype, bits):
    path = write_tone(tmp_path / f"x{suffix}", 0.5, SR, subtype=subtype)
    assert probe(path).subtype == subtype
    x = load(path, SR)
    step = 2.0 ** -(bits - 1) if bits else 0.0
    # + 1e-7: the float32 output's own rounding.
    np.testing.assert_allclose(x, tone(0.5, SR)[:, 0], rtol=0, atol=step + 1e-7)


@pytest.mark.parametrize("channels", [2, 5])
def test_channels_are_averaged(tmp_path, channels):
    path = write_tone(tmp_path / "multi.wav", 1.0, SR, channels=channels, subtype="FLOAT")
    mono = reference_mono(path)
    assert not np.allclose(mono, sf.read(path, dtype="float32")[0][:, 0])
    # The mean is taken as a mat-vec with 1/channels: exact for stereo, within an ulp beyond.
    np.testing.assert_allclose(load(path, SR), mono, rtol=0, atol=1e-7 if channels > 2 else 0)


def test_channels_are_averaged_before_resampling(tmp_path):
    path = write_tone(tmp_path / "stereo.wav", 1.0, 44100, channels=2)
    expected = soxr.resample(reference_mono(path), 44100, SR)
    np.testing.assert_allclose(load(path, SR), expected, atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_pitch(tmp_path, rate):
    path = write_tone(tmp_path / f"r{rate}.wav", 1.5, rate, freq=1000.0)
    frames = probe(path).frames
    x = load(path, SR)
    assert len(x) == round(frames * SR / rate)
    assert dominant_hz(x, SR) == pytest.approx(1000.0, abs=2.0)
    assert rms(x) == pytest.approx(rms(reference_mono(path)), rel=0.02)


@pytest.mark.parametrize("block_s", [0.01, 0.37, 1.0, 30.0])
def test_stream_without_resampling_is_exactly_the_whole_file(tmp_path, block_s):
    path = write_tone(tmp_path / "x.flac", 2.3, SR, channels=2)
    blocks = list(stream(path, SR, block_s=block_s))
    size = round(block_s * SR)
    assert all(len(b) == size for b in blocks[:-1]) and 0 < len(blocks[-1]) <= size
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), reference_mono(path))


@pytest.mark.parametrize("block_s", [0.01, 0.37, 1.0, 30.0])
def test_stream_with_resampling_matches_one_shot_resampling(tmp_path, block_s):
    path = write_tone(tmp_path / "x.wav", 2.3, 44100)
    streamed = np.concatenate(list(stream(path, SR, block_s=block_s)))
    expected = soxr.resample(reference_mono(path), 44100, SR)
    assert len(streamed) == len(expected) == round(2.3 * 44100 * SR / 44100)
    np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_stream_memory_is_bounded_by_the_block_not_the_file(tmp_path):
    seconds = 180
    path = write_tone(tmp_path / "long.wav", seconds, 48000, channels=2)
    decoded_bytes = seconds * SR * 4  # the whole signal as mono float32 at 32 kHz
    total = 0
    tracemalloc.start()
    try:
        for block in stream(path, SR, block_s=2.0):
            total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == seconds * SR
    assert peak < decoded_bytes / 4, f"peak {peak / 1e6:.1f} MB"


def test_many_channels_shrink_the_read_block(tmp_path, monkeypatch):
    monkeypatch.setattr("earshot.audio.io._MAX_BLOCK_SAMPLES", 5000)
    path = write_tone(tmp_path / "x.wav", 1.0, SR, channels=5)
    blocks = list(stream(path, SR, block_s=30.0))
    assert max(map(len, blocks)) == 1000
    np.testing.assert_allclose(np.concatenate(blocks), reference_mono(path), rtol=0, atol=1e-7)


def test_probe_reads_the_header(tmp_path):
    path = write_tone(tmp_path / "x.flac", 1.25, 22050, channels=2, subtype="PCM_24")
    assert probe(path) == AudioInfo(
        path=str(path),
        sample_rate=22050,
        channels=2,
        frames=round(1.25 * 22050),
        duration_s=round(1.25 * 22050) / 22050,
        format="FLAC",
        subtype="PCM_24",
    )


def test_odd_file_names_and_path_types(tmp_path):
    path = write_tone(tmp_path / "café ü – take #2.wav", 0.5, SR)
    np.testing.assert_array_equal(load(path, SR), load(str(path), SR))
    assert probe(str(path)).path == str(path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX names are bytes")
def test_a_name_that_is_not_utf8_decodes(tmp_path):
    path = write_tone(tmp_path / "x.wav", 0.5, SR)
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.wav")  # Latin-1 é
    os.rename(path, odd)
    assert probe(odd).frames == SR // 2 and len(load(odd, SR)) == SR // 2


def test_format_comes_from_content_not_the_name(tmp_path):
    flac = write_tone(tmp_path / "x.flac", 0.5, SR)
    renamed = flac.rename(tmp_path / "actually_flac.wav")
    assert probe(renamed).format == "FLAC"
    assert len(load(renamed, SR)) == SR // 2


@pytest.mark.parametrize("bad", [0, -1, 32000.0, True, "32000"])
def test_bad_sample_rate_is_a_value_error(tmp_path, bad):
    path = write_tone(tmp_path / "x.wav", 0.1, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        stream(path, bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_bad_block_size_is_a_value_error(tmp_path, bad):
    path = write_tone(tmp_path / "x.wav", 0.1, SR)
    with pytest.raises(ValueError, match="block_s"):
        stream(path, SR, block_s=bad)


# --- bad files -------------------------------------------------------------------------------

FAIL_ON_OPEN = [
    "missing",
    "directory",
    "empty",
    "html",
    "text",
    "random",
    "no_frames",
    "cut_header",
    "cut_ogg_header",
    "cut_mp3_header",
]
FAIL_WHILE_DECODING = ["truncated_flac", "nan", "inf"]


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> dict[str, Path]:
    return make_corrupt_files(tmp_path_factory.mktemp("corrupt"))


def test_corrupt_file_list_is_covered(corrupt):
    assert sorted(corrupt) == sorted(FAIL_ON_OPEN + FAIL_WHILE_DECODING)


@pytest.mark.parametrize("name", FAIL_ON_OPEN + FAIL_WHILE_DECODING)
def test_bad_files_raise_only_audio_decode_error_naming_the_file(corrupt, name):
    path = corrupt[name]
    with pytest.raises(AudioDecodeError) as info:
        load(path, SR)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert info.value.reason


@pytest.mark.parametrize("name", FAIL_ON_OPEN)
def test_files_that_will_not_open_fail_at_the_call(corrupt, name):
    with pytest.raises(AudioDecodeError):
        probe(corrupt[name])
    with pytest.raises(AudioDecodeError):
        stream(corrupt[name], SR)  # before any next(): a generator would defer it


@pytest.mark.parametrize("name", FAIL_WHILE_DECODING)
def test_files_that_fail_while_decoding_raise_from_the_iteration(corrupt, name):
    probe(corrupt[name])
    blocks = stream(corrupt[name], SR, block_s=0.1)
    with pytest.raises(AudioDecodeError):
        for _ in blocks:
            pass


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", "empty file (0 bytes)"),
        ("html", "not an audio file (it looks like an HTML page)"),
        ("text", "not an audio file (it looks like text)"),
        ("no_frames", "no audio frames"),
        ("cut_header", "corrupt or truncated WAV file"),
        ("cut_ogg_header", "corrupt or truncated Ogg file"),
        ("cut_mp3_header", "corrupt or truncated MP3 file"),
        ("truncated_flac", "truncated or corrupt"),
        ("nan", "NaN or infinite samples (first at 0.500 s)"),
        ("inf", "NaN or infinite samples (first at 0.750 s)"),
    ],
)
def test_reasons_say_what_is_wrong(corrupt, name, words):
    with pytest.raises(AudioDecodeError) as info:
        load(corrupt[name], SR)
    assert words in info.value.reason


def test_truncated_flac_yields_the_good_blocks_before_failing(corrupt):
    got = []
    with pytest.raises(AudioDecodeError, match="truncated or corrupt"):
        for block in stream(corrupt["truncated_flac"], 16000, block_s=0.1):
            got.append(block)
    assert sum(map(len, got)) >= 0.5 * 16000  # a 3 s file cut at half its bytes


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    path = write_tone(tmp_path / "locked.wav", 0.1, SR)
    path.chmod(0)
    with pytest.raises(AudioDecodeError, match="permission denied"):
        load(path, SR)


def test_a_fifo_is_refused_rather_than_blocking(tmp_path):
    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        load(path, SR)


@pytest.mark.parametrize(("suffix", "rate"), [(".ogg", SR), (".opus", 48000), (".mp3", SR)])
def test_truncated_files_decode_their_readable_part(tmp_path, suffix, rate):
    # Ogg ends at the last whole page, MP3 stops at the cut: neither header says more.
    full = write_noise(tmp_path / f"full{suffix}", 6.0, rate, level=0.3)
    cut = write_truncated(full, tmp_path / f"cut{suffix}", 0.5)
    x = load(cut, SR)
    assert 0.3 * 6 * SR < len(x) < 0.7 * 6 * SR
    assert rms(x) > 0.1


@pytest.mark.parametrize(
    ("suffix", "subtype", "channels"),
    [
        (".wav", "PCM_16", 1),
        (".wav", "FLOAT", 2),
        (".wav", "PCM_24", 2),
        (".aiff", "PCM_16", 2),
        (".aiff", "PCM_32", 1),
    ],
)
def test_truncated_wav_and_aiff_are_refused(tmp_path, suffix, subtype, channels):
    # libsndfile clamps their frame count to the bytes present; the header says how many more.
    full = write_noise(tmp_path / f"full{suffix}", 6.0, SR, channels=channels, subtype=subtype)
    cut = write_truncated(full, tmp_path / f"cut{suffix}", 0.5)
    for call in (probe, lambda p: stream(p, SR)):
        with pytest.raises(
            AudioDecodeError, match=r"truncated: the file holds 3\.0 s of the 6\.0 s"
        ):
            call(cut)


def test_a_wav_cut_inside_its_last_frame_is_not_truncated(tmp_path):
    full = write_noise(tmp_path / "full.wav", 1.0, SR, channels=2, subtype="PCM_24")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:-5])  # 5 of a 6-byte frame: a writer's rounding, nothing lost
    assert probe(cut).frames == SR - 1


def test_placeholder_sizes_of_streaming_writers_are_not_truncation(tmp_path):
    import struct

    full = write_noise(tmp_path / "full.wav", 1.0, SR)
    data = bytearray(full.read_bytes())
    at = data.find(b"data")
    for placeholder in (0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000):  # ffmpeg/piped, arecord, sox
        data[4:8] = data[at + 4 : at + 8] = struct.pack("<I", placeholder)
        path = tmp_path / f"streamed{placeholder:x}.wav"
        path.write_bytes(bytes(data))
        assert len(load(path, SR)) == SR


def test_wav_and_aiff_written_whole_pass_the_header_check(tmp_path):
    from earshot.audio.headers import data_shortfall

    for suffix in (".wav", ".aiff"):
        for subtype in ("PCM_16", "FLOAT"):
            path = write_noise(tmp_path / f"x{subtype}{suffix}", 0.5, SR, subtype=subtype)
            assert data_shortfall(str(path)) is None
    rf64 = write_noise(tmp_path / "x.rf64", 0.5, SR, format="RF64")
    assert data_shortfall(str(rf64)) is None
    cut = write_truncated(rf64, tmp_path / "cut.rf64", 0.5)
    assert data_shortfall(str(cut)) is not None


@pytest.mark.parametrize("rate", [1, 999, 2_000_001])
def test_a_sample_rate_no_recording_has_is_refused(tmp_path, rate):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros((2000, 1)), rate, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match=f"sample rate of {rate:,} Hz"):
        probe(path)
    with pytest.raises(AudioDecodeError, match="sample rate"):
        stream(path, SR)


@pytest.mark.parametrize("rate", [1000, 2_000_000])
def test_the_bounds_of_the_sample_rate_are_accepted(tmp_path, rate):
    path = tmp_path / "edge.wav"
    sf.write(path, np.zeros((4000, 1)), rate, subtype="PCM_16")
    assert probe(path).sample_rate == rate


@pytest.mark.parametrize("peak", [1e4, 1e20, 1e38])
def test_samples_far_beyond_full_scale_are_refused(tmp_path, peak):
    x = tone(1.0, SR)
    x[SR // 2] = peak
    path = tmp_path / "loud.wav"
    sf.write(path, x.astype(np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"beyond full scale .* at 0\.500 s"):
        load(path, SR)


def test_overs_of_a_float_file_within_60_db_decode(tmp_path):
    x = tone(1.0, SR) * 8.0  # +18 dBFS peaks: loud, not corrupt
    path = tmp_path / "hot.wav"
    sf.write(path, x.astype(np.float32), SR, subtype="FLOAT")
    assert np.abs(load(path, SR)).max() == pytest.approx(np.abs(x).max(), rel=1e-6)


@pytest.mark.parametrize(
    "content",
    [b"password=hunter2\n", b"<html><body>secret</body></html>", b"\x00\x01secretbytes"],
)
def test_reasons_never_quote_a_files_content(tmp_path, content):
    for suffix in (".wav", ".m4a", ".mp3"):
        path = tmp_path / f"x{suffix}"
        path.write_bytes(content * 4)
        with pytest.raises(AudioDecodeError) as info:
            load(path, SR)
        for word in ("hunter", "secret", "b'", "\\x"):
            assert word not in info.value.reason, info.value.reason


# --- real data -------------------------------------------------------------------------------


def _real_files(folder: str, n: int) -> list[Path]:
    if not (DATA / folder).is_dir():
        pytest.skip(f"real data not found at {DATA / folder}")
    return sorted((DATA / folder / "audio").iterdir())[:n]


@pytest.mark.realdata
def test_urbansound_clips_decode_to_four_seconds_at_32k():
    for path in _real_files("urbansound8k-derived", 3):
        info = probe(path)
        assert (info.format, info.sample_rate, info.channels) == ("OGG", 22050, 1)
        x = load(path, SR)
        assert len(x) == 4 * SR
        assert np.isfinite(x).all() and rms(x) > 1e-4


@pytest.mark.realdata
def test_fsdd_digits_decode_from_8k_flac():
    for path in _real_files("fsdd", 3):
        info = probe(path)
        assert (info.format, info.sample_rate) == ("FLAC", 8000)
        x = load(path, SR)
        assert len(x) == info.frames * 4
        assert np.isfinite(x).all() and rms(x) > 1e-4


def _streaming_flac(original: Path, path: Path) -> Path:
    """`original` with STREAMINFO's total_samples set to 0, "unknown", as a streaming encoder
    writes it: the low 36 bits of bytes 13..17 of the block data, after "fLaC" and the block's
    4-byte header."""
    data = bytearray(original.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    field = slice(8 + 13, 8 + 18)
    total = int.from_bytes(data[field], "big")
    assert total & ((1 << 36) - 1) == sf.info(str(original)).frames  # the field is the one
    data[field] = (total & ~((1 << 36) - 1)).to_bytes(5, "big")  # keep the 4 bits-per-sample bits
    path.write_bytes(bytes(data))
    return path


def test_a_streaming_flac_with_unknown_length_decodes_whole(tmp_path):
    # 12.3 s, stereo, 24-bit: several blocks, and a last FLAC frame shorter than the others
    # (libsndfile decodes up to that one and then fails with "Internal psf_fseek() failed").
    original = write_tone(tmp_path / "a.flac", 12.3, 44100, channels=2, subtype="PCM_24")
    path = _streaming_flac(original, tmp_path / "streamed.flac")
    assert probe(path) == AudioInfo(**{**vars(probe(original)), "path": str(path)})
    for rate in (44100, SR):
        np.testing.assert_allclose(load(path, rate), load(original, rate), rtol=0, atol=1e-6)
    blocks = list(stream(path, SR, block_s=2.0))  # streamed, a block at a time
    assert len(blocks) > 1 and sum(map(len, blocks)) == len(load(original, SR))


def test_a_streaming_flac_is_indexed_at_its_real_length(tmp_path):
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.testing.models import tiny_model

    lib = tmp_path / "lib"
    lib.mkdir()
    original = write_tone(tmp_path / "a.flac", 23.0, 22050)
    _streaming_flac(original, lib / "streamed.flac")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        s = Indexer(cat, tiny_model(), workers=0, progress=False).run([str(lib)])
        assert s.skipped == [] and s.added == 1
        (file_id,) = [cat.file_id_for_path(str(lib / "streamed.flac"))]
        assert cat.file(file_id)["duration_s"] == pytest.approx(23.0, abs=1e-6)
        assert cat.file_segments(file_id)[-1].end_s == pytest.approx(23.0, abs=0.05)


def test_libmpg123_warnings_name_their_file(tmp_path):
    # libmpg123 (inside libsndfile) writes its complaints about a damaged frame straight to
    # fd 2, without a file name; earshot says them again under the file's name.
    import subprocess
    import sys

    x = (np.random.default_rng(0).standard_normal(44100 * 3) * 0.1).astype(np.float32)
    good = tmp_path / "good.mp3"
    sf.write(good, x, 44100, format="MP3")
    data = bytearray(good.read_bytes())
    for i in np.random.default_rng(1).integers(2000, len(data) - 100, 40):
        data[i] ^= 0xFF
    bad = tmp_path / "damaged.mp3"
    bad.write_bytes(bytes(data))
    code = "import sys; from earshot.audio.io import load; load(sys.argv[1], 32000)"
    out = subprocess.run(
        [sys.executable, "-c", code, str(bad)], capture_output=True, text=True, check=True
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines and any("libmpg123" in line for line in lines), out.stderr
    assert all(line.startswith(f"earshot: warning: {bad}: ") for line in lines), out.stderr
