"""Decoding speed and memory per format: libsndfile's formats beside PyAV's (M4A/AAC, ADTS).

Writes the same 44.1 kHz stereo signal (a tone + noise) as WAV, FLAC, Ogg Vorbis and MP3
(soundfile) and as M4A and bare AAC (PyAV), then decodes each with `earshot.audio.io.stream` to
mono 32 kHz, as indexing does, in rotating rounds (WAV, FLAC, ... / FLAC, ..., WAV / ...) so
every format sees the same drift in machine load. Reports each format's decoding speed in
seconds of audio per second, and its ratio to WAV as the median of per-round ratios.

Memory: each of WAV and M4A decodes a long file (default 20 min) in a fresh child process,
which reports its peak RSS after imports + a 1 s file and after the long file; streaming
should keep the difference near one block, not the file.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = 44100
FORMATS = ("wav", "flac", "ogg", "mp3", "m4a", "aac")


def write(path: Path, seconds: float) -> Path:
    from earshot.testing.audio import write_av, write_tone

    if path.suffix in (".m4a", ".aac"):
        return write_av(path, seconds, RATE, channels=2)
    return write_tone(path, seconds, RATE, channels=2)


def decode_seconds(path: Path) -> float:
    from earshot.audio.io import stream

    start = time.perf_counter()
    for _ in stream(path, 32000):
        pass
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(short: str, long: str) -> None:
    decode_seconds(Path(short))  # imports, codec set-up, one block
    before = peak_rss_mb()
    seconds = decode_seconds(Path(long))
    print(json.dumps({"rss_before_mb": before, "rss_after_mb": peak_rss_mb(), "s": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each timed file")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--long-minutes", type=float, default=20.0, help="the memory test's file")
    ap.add_argument("--quick", action="store_true", help="smoke test: short files, 2 rounds")
    ap.add_argument("--child", nargs=2, metavar=("SHORT", "LONG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    if args.quick:
        args.seconds, args.rounds, args.long_minutes = 5.0, 2, 0.5
    with tempfile.TemporaryDirectory(prefix="earshot-bench-decode-") as tmp:
        files = {f: write(Path(tmp) / f"x.{f}", args.seconds) for f in FORMATS}
        times: dict[str, list[float]] = {f: [] for f in FORMATS}
        for f in FORMATS:
            decode_seconds(files[f])  # warm-up
        for r in range(args.rounds):
            order = FORMATS[r % len(FORMATS) :] + FORMATS[: r % len(FORMATS)]
            for f in order:
                times[f].append(decode_seconds(files[f]))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        speed = {
            f: {
                "audio_s_per_s": round(args.seconds / statistics.median(t), 1),
                "seconds": [round(x, 4) for x in t],
                "ratio_to_wav": round(
                    statistics.median(w / x for w, x in zip(times["wav"], t, strict=True)), 3
                ),
            }
            for f, t in times.items()
        }
        memory = {}
        for f in ("wav", "m4a"):
            short = write(Path(tmp) / f"short.{f}", 1.0)
            long = write(Path(tmp) / f"long.{f}", args.long_minutes * 60)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(short), str(long)],
                capture_output=True,
                text=True,
                check=True,
            )
            reply = json.loads(done.stdout)
            memory[f] = {
                "file_mb": round(long.stat().st_size / 2**20, 1),
                "minutes": args.long_minutes,
                "peak_rss_growth_mb": round(reply["rss_after_mb"] - reply["rss_before_mb"], 1),
                "audio_s_per_s": round(args.long_minutes * 60 / reply["s"], 1),
            }
    print(
        json.dumps(
            {
                "benchmark": "earshot bench/bench_decode.py",
                "env": {
                    "cpus": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "seconds_per_file": args.seconds,
                    "rounds": args.rounds,
                    "input": f"{RATE} Hz stereo, decoded to mono 32 kHz",
                },
                "speed": speed,
                "memory": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
