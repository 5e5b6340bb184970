"""What serving a format browsers cannot play costs: the on-the-fly WAV transcode, and export.

Writes a long 48 kHz stereo 24-bit AIFF (default 10 minutes, 173 MB) to a temporary folder, then
in this one process, side by side:
  - `transcode_whole`: every byte of `/api/audio`'s WAV transcode (serve/playback.py), as a
    browser that plays the file to its end receives it: seconds, x real time, and the peak of
    Python-traced memory (NumPy buffers included) against the file's size;
  - `range_at_start` / `range_at_90pct`: one 1 MiB HTTP range at the start and at 90 % of the
    file, what a seek asks for (median of 5): a range decodes only its own frames, so the two
    should cost the same and a small fraction of `transcode_whole`;
  - `export_at_start` / `export_at_90pct`: `write_span` of 10 s as WAV, from the start and from
    90 % (what `earshot export` and `/api/clip` do), median of 3.
  - `pyav_range_1mib`: the same 1 MiB range at 90 % of a WMA and an AAC (M4A) file of the same
    length (PyAV's formats; 44.1 kHz stereo), as playback reads it (a seek by the container's
    timestamps) and decoded from the start as before (what export still does), median of 3,
    with the ratio; the two give the same bytes (checked here too).
Prints one JSON object; `--quick` uses a 30 s file (for the test suite).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pyav_range(path: Path, minutes: float) -> dict:
    """One 1 MiB range at 90 % of a PyAV-decoded file, seeking and from the start."""
    from earshot.audio.recording import open_source, read_frames
    from earshot.serve.playback import _to_pcm16
    from earshot.testing.audio import write_av

    write_av(path, minutes * 60, 44100, channels=2)
    source = open_source(path)
    first = int(source.frames * 0.9)
    last = first + 2**20 // 4  # 16-bit stereo frames in 1 MiB

    def read(seek: bool) -> bytes:
        return b"".join(
            _to_pcm16(x) for x in read_frames(source, first, last, dtype="float32", seek=seek)
        )

    assert read(True) == read(False), f"{path.name}: a seek gave other samples"
    seek_s = timed(lambda: read(True), 3)
    start_s = timed(lambda: read(False), 3)
    return {
        "seek_ms": round(seek_s * 1000, 1),
        "from_start_ms": round(start_s * 1000, 1),
        "from_start_over_seek": round(start_s / seek_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a 30 s file")
    args = parser.parse_args(argv)
    minutes = 0.5 if args.quick else args.minutes

    from earshot.audio.export import plan_for, write_span
    from earshot.audio.recording import open_source
    from earshot.serve.playback import WavTranscode
    from earshot.testing.audio import write_tone

    rate = 48000
    with tempfile.TemporaryDirectory(prefix="earshot-bench-playback-") as tmp:
        path = write_tone(
            Path(tmp) / "long.aiff", minutes * 60, rate, channels=2, subtype="PCM_24",
            format="AIFF",
        )  # fmt: skip
        size_mb = path.stat().st_size / 2**20
        source = open_source(path)
        wav = WavTranscode.of(source)

        def drain(first: int, last: int) -> int:
            return sum(len(b) for b in wav.iter_bytes(first, last))

        tracemalloc.start()
        t0 = time.perf_counter()
        sent = drain(0, wav.length - 1)
        whole_s = time.perf_counter() - t0
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert sent == wav.length

        mib = 2**20
        at90 = int(wav.length * 0.9)
        start_s = timed(lambda: drain(0, mib - 1), 5)
        end_s = timed(lambda: drain(at90, at90 + mib - 1), 5)

        plan = plan_for(source, "wav")
        first90 = int(source.frames * 0.9)
        span = 10 * rate
        counter = iter(range(10**6))

        def export(first: int) -> None:
            out = Path(tmp) / f"clip{next(counter)}.wav"
            write_span(source, first, min(first + span, source.frames), out, plan)
            out.unlink()

        export_start = timed(lambda: export(0), 3)
        export_end = timed(lambda: export(first90), 3)
        pyav = {name: pyav_range(Path(tmp) / name, minutes) for name in ("long.wma", "long.m4a")}

    result = {
        "benchmark": "playback",
        "file": {
            "format": "AIFF PCM_24",
            "sample_rate": rate,
            "channels": 2,
            "minutes": minutes,
            "size_mb": round(size_mb, 1),
        },
        "transcode_whole": {
            "seconds": round(whole_s, 3),
            "x_realtime": round(minutes * 60 / whole_s, 1),
            "wav_mb": round(wav.length / 2**20, 1),
            "peak_traced_mb": round(peak_mb, 1),
        },
        "range_1mib": {
            "at_start_ms": round(start_s * 1000, 2),
            "at_90pct_ms": round(end_s * 1000, 2),
            "whole_over_range_at_90pct": round(whole_s / end_s, 1),
        },
        "export_10s_wav": {
            "at_start_ms": round(export_start * 1000, 1),
            "at_90pct_ms": round(export_end * 1000, 1),
            "ratio_90pct_over_start": round(export_end / export_start, 2),
        },
        "pyav_range_1mib": pyav,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
