"""Synthetic audio files for tests and benchmarks: seeded, written with soundfile in chunks.

Writing in chunks keeps a multi-minute file's generation in bounded memory, so a benchmark can
write an hour of audio without holding an hour of samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

_CHUNK_S = 10.0

_HTML = b"<html>\n<head><title>404 Not Found</title></head>\n<body>Not Found</body>\n</html>\n"


def tone(
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    freq: float = 440.0,
    seed: int = 0,
    amplitude: float = 0.5,
    noise: float = 0.01,
) -> np.ndarray:
    """The samples `write_tone` writes, before quantisation: (frames, channels) float64."""
    return np.concatenate(
        list(_tone_chunks(seconds, sample_rate, channels, freq, seed, amplitude, noise))
    )


def write_tone(
    path: str | Path,
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    freq: float = 440.0,
    subtype: str | None = None,
    format: str | None = None,
    seed: int = 0,
    amplitude: float = 0.5,
    noise: float = 0.01,
) -> Path:
    """Write a sine at `freq` plus a little seeded noise; returns the path.

    Channel c is quieter than channel c - 1 and has its own noise, so a mono mix differs from
    every channel. The format follows the suffix (".opus" means Ogg Opus, which only takes
    8, 12, 16, 24 and 48 kHz) unless `format`/`subtype` say otherwise.
    """
    chunks = _tone_chunks(seconds, sample_rate, channels, freq, seed, amplitude, noise)
    return _write_chunks(Path(path), chunks, sample_rate, channels, subtype, format)


def write_noise(
    path: str | Path,
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    subtype: str | None = None,
    format: str | None = None,
    seed: int = 0,
    level: float = 0.1,
) -> Path:
    """Write seeded white noise (standard deviation `level`, clipped to [-1, 1])."""
    chunks = _tone_chunks(seconds, sample_rate, channels, 0.0, seed, 0.0, level)
    return _write_chunks(Path(path), chunks, sample_rate, channels, subtype, format)


# Suffix → (PyAV container format, audio codec) for `write_av`.
_AV_WRITERS = {
    ".m4a": ("mp4", "aac"),
    ".mp4": ("mp4", "aac"),
    ".aac": ("adts", "aac"),
    ".wma": ("asf", "wmav2"),
}


def write_av(
    path: str | Path,
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    freq: float = 440.0,
    seed: int = 0,
    amplitude: float = 0.5,
    noise: float = 0.01,
    video: bool = False,
) -> Path:
    """Write `write_tone`'s signal with PyAV (FFmpeg): AAC in MP4 for .m4a/.mp4, bare ADTS AAC
    for .aac, WMA for .wma. `video=True` adds a small moving picture (an MP4 with sound)."""
    import av

    path = Path(path)
    container_format, codec = _AV_WRITERS[path.suffix.lower()]
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w", format=container_format) as out:
        audio = out.add_stream(codec, rate=sample_rate, layout=layout)
        audio.bit_rate = 64_000 * channels  # WMA insists on one
        picture = None
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for x in _tone_chunks(seconds, sample_rate, channels, freq, seed, amplitude, noise):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x.T, dtype=np.float32), format="fltp", layout=layout
            )
            frame.sample_rate = sample_rate
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
        if picture is not None:
            for i in range(max(1, round(seconds * 10))):
                image = np.full((32, 32, 3), (i * 20) % 256, dtype=np.uint8)
                for packet in picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
    return path


def chirp_mix(seconds: float = 10.0, sample_rate: int = 32000, seed: int = 0) -> np.ndarray:
    """A seeded, broadband test signal: (samples,) float32 in [-1, 1].

    An exponential chirp rising from 60 Hz to 12 kHz over the whole signal, a linear chirp
    falling from 9 kHz to 300 Hz, a 1 kHz tone burst of 0.1 s at every whole second, a decaying
    click every 0.37 s and seeded white noise: energy at every frequency and time, onsets and
    steady parts, so a front end or a tagger is checked across the spectrum. Computed in
    float64, returned as float32; the same arguments give the same samples.
    """
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    span = max(seconds, 1.0 / sample_rate)
    f0, f1 = 60.0, 12000.0
    k = np.log(f1 / f0) / span  # exponential chirp: phase = 2 pi f0 (e^{kt} - 1) / k
    x = 0.25 * np.sin(2 * np.pi * f0 * np.expm1(k * t) / k)
    g0, g1 = 9000.0, 300.0  # linear chirp: phase = 2 pi (g0 t + (g1 - g0) t^2 / (2 span))
    x += 0.15 * np.sin(2 * np.pi * (g0 * t + (g1 - g0) * t * t / (2 * span)))
    burst = (t % 1.0) < 0.1
    x += 0.2 * burst * np.sin(2 * np.pi * 1000.0 * t)
    since_click = t % 0.37
    x += 0.3 * np.exp(-since_click * 200.0) * np.sin(2 * np.pi * 3000.0 * since_click)
    x += 0.02 * np.random.default_rng(seed).standard_normal(n)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_truncated(source: str | Path, dest: str | Path, fraction: float) -> Path:
    """Copy the first `fraction` of `source`'s bytes to `dest`, as an interrupted download."""
    data = Path(source).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def make_corrupt_files(directory: str | Path) -> dict[str, Path]:
    """Every kind of bad input decoding must turn into AudioDecodeError, by name.

    Most fail on opening; "truncated_flac", "nan" and "inf" open fine and fail while decoding.
    "missing" is a path that is never created.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "missing": d / "missing.wav",
        "directory": d / "folder.wav",
        "empty": d / "empty.wav",
        "html": d / "page.wav",
        "text": d / "notes.mp3",
        "random": d / "noise.flac",
        "no_frames": d / "no_frames.wav",
        "cut_header": d / "cut_header.wav",
        "cut_ogg_header": d / "cut_header.ogg",
        "cut_mp3_header": d / "cut_header.mp3",
        "truncated_flac": d / "truncated.flac",
        "nan": d / "nan.wav",
        "inf": d / "inf.wav",
    }
    files["directory"].mkdir(exist_ok=True)
    files["empty"].write_bytes(b"")
    files["html"].write_bytes(_HTML)
    files["text"].write_text("shopping list: eggs, milk\n")
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    sf.write(files["no_frames"], np.zeros((0, 1)), 16000, subtype="PCM_16")

    full = d / "_full.wav"
    write_tone(full, 1.0, 16000)
    write_truncated(full, files["cut_header"], 20 / full.stat().st_size)  # "RIFF" and no fmt
    for key, suffix in (("cut_ogg_header", ".ogg"), ("cut_mp3_header", ".mp3")):
        write_tone(full.with_suffix(suffix), 3.0, 16000)
        write_truncated(full.with_suffix(suffix), files[key], 0.02)
    # Noise does not compress: the cut lands mid-stream, after several decodable blocks.
    write_noise(full.with_suffix(".flac"), 3.0, 16000, level=0.3)
    write_truncated(full.with_suffix(".flac"), files["truncated_flac"], 0.5)
    for suffix in (".wav", ".ogg", ".mp3", ".flac"):
        full.with_suffix(suffix).unlink()

    bad = tone(1.0, 16000, channels=2)
    bad[8000, 0] = np.nan
    sf.write(files["nan"], bad, 16000, subtype="FLOAT")
    bad = tone(1.0, 16000, channels=2)
    bad[12000, 1] = np.inf
    sf.write(files["inf"], bad, 16000, subtype="FLOAT")
    return files


def _tone_chunks(
    seconds: float,
    sample_rate: int,
    channels: int,
    freq: float,
    seed: int,
    amplitude: float,
    noise: float,
) -> Iterator[np.ndarray]:
    total = round(seconds * sample_rate)
    chunk = max(1, round(_CHUNK_S * sample_rate))
    gains = amplitude / (1.0 + 0.25 * np.arange(channels))  # (channels,)
    rng = np.random.default_rng(seed)
    for start in range(0, max(total, 1), chunk):
        n = min(chunk, total - start)
        t = (start + np.arange(n))[:, None] / sample_rate  # (n, 1)
        x = gains * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal((n, channels))
        yield np.clip(x, -1.0, 1.0)  # (n, channels)


def _write_chunks(
    path: Path,
    chunks: Iterator[np.ndarray],
    sample_rate: int,
    channels: int,
    subtype: str | None,
    format: str | None,
) -> Path:
    if format is None and path.suffix.lower() == ".opus":
        format, subtype = "OGG", subtype or "OPUS"
    with sf.SoundFile(path, "w", sample_rate, channels, subtype, format=format) as f:
        for x in chunks:
            f.write(x)
    return path


def write_adts(path: Path, parts: list[np.ndarray], rate: int = 16000) -> Path:
    """Bare ADTS AAC of `parts` in order: FFmpeg estimates its length from the first frames'
    bit rate, so silence then noise overstates it, noise then silence understates it."""
    import av

    with av.open(str(path), "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = 64000
        for x in parts:
            for i in range(0, len(x), 10 * rate):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(x[None, i : i + 10 * rate], dtype=np.float32),
                    format="fltp",
                    layout="mono",
                )
                frame.sample_rate = rate
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
