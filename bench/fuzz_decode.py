"""Fuzz `earshot index` with malformed files of every kind, beside good ones (issue #19).

Writes a seeded folder of bad input (truncated WAV/AIFF/FLAC/Ogg/Opus/MP3/M4A/AAC, random byte
flips in the first 64 bytes, zero-length and header-only files, text/HTML/PNG/... bytes named
like audio, absurd sample rates and channel counts, NaN/inf/1e20 samples, names that are not
UTF-8, FIFOs, links to devices, to nothing, in a loop and out of the root, folders named like
audio, a 3-hour silent FLAC of a few hundred KB, bare ADTS AAC whose probed length overstates or
understates the real one) and good files of each format, then indexes it all with
`earshot index ROOT --db C --json` in a subprocess under a wall-time limit, polling the peak
RSS of its process tree (VmHWM of each process, VmRSS summed; killed above `--kill-mb`).

Checks (each failure is one line in "failures"; exit status 1 if any):
- the index run exits 0 (no PATH missing: see `earshot index --help`), prints no Python
  traceback, finishes within `--time-limit`;
- every file is accounted for: good files indexed, each bad one skipped with a reason (in the
  catalogue, or in the run's output for a name that is not UTF-8, which the catalogue cannot
  store); "either" kinds (byte flips, a cut MP3/Ogg/AAC that decodes as a shorter clip) may
  be indexed or skipped but never go unreported; folders named like audio are walked, not
  reported; no reason says "this is a bug" (an exception no check foresaw) or quotes a
  marker written into the bad files' bytes;
- the peak RSS of any one process, and of the whole tree, stays within `--rss-bound-mb`
  (default 1,500 MB: the model, torch and one file's windows; it depends on the model and
  the worker count, not on a file's length or header);
- `earshot skipped --json` lists every bad file with a storable name, with its reason;
- (unless `--no-rerun`) a second `earshot index` run finds everything unchanged and the
  skipped list the same.

Prints one JSON object (counts per kind, peak RSS, wall times, failures); progress on stderr.
`--quick` (~45 files, tiny model, a 10-minute silent FLAC) takes under a minute and is what
tests/test_fuzz.py runs; the default (~250 files, the packaged compact model) about 10 min on
2 busy cores, most of it embedding the 3-hour file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Written into the bad files' bytes: no skip reason may quote it (reasons are stored and served).
MARKER = "FUZZ-SECRET-7f3a"
BUG = "this is a bug"
RATE = 16000

# How a case must come out: "index" (in the catalogue, ok), "skip" (skipped with a reason),
# "either" (one of the two), "folder" (a folder named like audio: walked, neither).
EXPECTS = ("index", "skip", "either", "folder")


@dataclass
class Case:
    path: str  # absolute; a name that is not UTF-8 carries surrogate escapes, as Python names it
    kind: str
    expect: str
    storable: bool = True  # False: a name that is not UTF-8, reported by the run only
    seconds: float | None = None  # its real length, where the catalogue's must match it


def log(msg: str) -> None:
    print(f"[fuzz] {msg}", file=sys.stderr, flush=True)


# --- writing the files -------------------------------------------------------------------------


def tone_samples(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0):
    from earshot.testing.audio import tone

    return tone(seconds, rate, channels=channels, seed=seed, freq=330.0 + 50 * seed)


def write_sources(folder: Path) -> dict[str, Path]:
    """One good ~1.5 s file per format, the seeds of the truncated and flipped cases."""
    import soundfile as sf

    from earshot.testing.audio import write_av, write_tone

    folder.mkdir(parents=True)
    out = {}
    for i, (name, suffix, kw) in enumerate(
        (
            ("wav", ".wav", {"subtype": "PCM_16"}),
            ("aiff", ".aiff", {"subtype": "PCM_16"}),
            ("flac", ".flac", {}),
            ("ogg", ".ogg", {}),
            ("opus", ".opus", {}),
            ("mp3", ".mp3", {}),
        )
    ):
        rate = 48000 if name == "opus" else RATE
        out[name] = write_tone(folder / f"src{suffix}", 1.5, rate, seed=i, **kw)
    out["m4a"] = write_av(folder / "src.m4a", 1.5, RATE, seed=7)
    out["aac"] = write_av(folder / "src.aac", 1.5, RATE, seed=8)
    # A float WAV too (the NaN/overs cases are its siblings).
    sf.write(folder / "src_float.wav", tone_samples(1.0, seed=9), RATE, subtype="FLOAT")
    out["wav_float"] = folder / "src_float.wav"
    return out


def wav_bytes(
    data: bytes,
    rate: int,
    channels: int,
    bits: int = 16,
    tag: int = 1,
    declared: int | None = None,
    extra_chunks: bytes = b"",
) -> bytes:
    """A canonical RIFF/WAVE file around `data`, every header field as given (no checks)."""
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits
    )
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    body += b"data" + struct.pack("<I", size & 0xFFFFFFFF) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def pcm16(seconds: float, channels: int = 1, seed: int = 0) -> bytes:
    x = tone_samples(seconds, RATE, channels, seed)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def ieee_extended(value: float) -> bytes:
    """An AIFF sample rate: 80-bit IEEE 754 extended precision, big-endian."""
    if value <= 0:
        return b"\0" * 10
    exponent = int(np.floor(np.log2(value)))
    mantissa = int(value * 2 ** (63 - exponent))
    return struct.pack(">HQ", 16383 + exponent, mantissa)


def patch_aiff_rate(raw: bytes, rate: float) -> bytes:
    at = raw.index(b"COMM") + 8 + 8  # channels (2) frames (4) bits (2), then the rate
    return raw[:at] + ieee_extended(rate) + raw[at + 10 :]


def patch_flac_rate(raw: bytes, rate: int) -> bytes:
    """Set STREAMINFO's 20-bit sample rate (byte 18 of the file on)."""
    b = bytearray(raw)
    bits = int.from_bytes(b[18:21], "big")
    bits = (bits & 0x0F) | ((rate & 0xFFFFF) << 4)
    b[18:21] = bits.to_bytes(3, "big")
    return bytes(b)


def write_video_only(path: Path) -> Path:
    """An MP4 with a picture and no sound."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            image = np.full((32, 32, 3), i * 20, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def write_silent_flac(path: Path, seconds: float, rate: int = RATE) -> Path:
    import soundfile as sf

    with sf.SoundFile(path, "w", rate, 1, "PCM_16", format="FLAC") as f:
        block = np.zeros(60 * rate, dtype=np.int16)
        left = round(seconds * rate)
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return path


# Bytes of things that are not audio, each with the marker inside.
def junk_contents(rng: np.random.Generator) -> dict[str, bytes]:
    m = MARKER.encode()
    return {
        "text": b"shopping list: " + m + b"\neggs, milk\n" * 20,
        "html": b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>" + m + b"</body>",
        "png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + m + bytes(rng.integers(0, 256, 200, np.uint8)),
        "json": b'{"error": "' + m + b'", "items": [1, 2, 3]}',
        "zip": b"PK\x03\x04\x14\0\0\0\x08\0" + m + bytes(rng.integers(0, 256, 300, np.uint8)),
        "elf": b"\x7fELF\x02\x01\x01\0" + m + bytes(rng.integers(0, 256, 500, np.uint8)),
        "random": bytes(rng.integers(0, 256, 4096, np.uint8)),
    }


class Corpus:
    """Writes the cases under `root` (and link targets under `outside`), remembering each."""

    def __init__(self, work: Path, seed: int, quick: bool):
        self.root = work / "root"
        self.outside = work / "outside"
        self.scratch = work / "sources"
        self.rng = np.random.default_rng(seed)
        self.quick = quick
        self.cases: list[Case] = []
        self.notes: dict = {}
        self.root.mkdir(parents=True)
        self.outside.mkdir()

    def add(self, rel: str | bytes, kind: str, expect: str, data: bytes | None = None) -> str:
        assert expect in EXPECTS
        if isinstance(rel, bytes):
            path = os.path.join(os.fsencode(self.root), rel)
            storable = False
        else:
            path = str(self.root / rel)
            storable = True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        name = os.fsdecode(path)
        self.cases.append(Case(name, kind, expect, storable))
        return name

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def build(self) -> None:
        src = write_sources(self.scratch)
        raw = {k: p.read_bytes() for k, p in src.items()}
        self.good(src)
        self.truncated(raw)
        self.flipped(raw)
        self.empty_and_header_only(raw)
        self.not_audio()
        self.absurd_rates(raw)
        self.channel_counts()
        self.bad_samples()
        self.names(raw)
        self.not_files(raw)
        self.links(raw)
        self.folders(raw)
        self.long_and_lying()

    # -- the kinds --------------------------------------------------------------------------

    def good(self, src: dict[str, Path]) -> None:
        import soundfile as sf

        for name, path in src.items():
            self.add(f"good/{name}{path.suffix}", "good", "index", path.read_bytes())
        if self.quick:
            return
        # Edge cases that are fine: the extreme rates, many channels, a placeholder data size
        # (a streaming writer's), allowed overs (+20 dBFS float), denormal samples, 24 bit.
        for rate in (1000, 192000):
            x = tone_samples(0.5, rate, seed=3)
            p = self.add(f"good/rate_{rate}.wav", "good", "index")
            sf.write(p, x, rate, subtype="PCM_16")
        self.add("good/ch64.wav", "good", "index", wav_bytes(pcm16(0.25, 64), RATE, 64))
        self.add(
            "good/placeholder_size.wav",
            "good",
            "index",
            wav_bytes(pcm16(1.0), RATE, 1, declared=0xFFFFFFFF),
        )
        p = self.add("good/overs_x10.wav", "good", "index")
        sf.write(p, 10.0 * tone_samples(1.0, seed=4), RATE, subtype="FLOAT")
        p = self.add("good/denormal.wav", "good", "index")
        sf.write(p, np.full((RATE, 1), 1e-40, dtype=np.float32), RATE, subtype="FLOAT")
        p = self.add("good/pcm24.flac", "good", "index")
        sf.write(p, tone_samples(1.0, seed=5), RATE, subtype="PCM_24")
        # Audio under another format's name: decoded by content.
        self.add("good/flac_named.wav", "good", "index", src["flac"].read_bytes())
        self.add("good/m4a_named.mp3", "good", "index", src["m4a"].read_bytes())

    def truncated(self, raw: dict[str, bytes]) -> None:
        # A cut WAV/AIFF/FLAC is refused; a cut Ogg, Opus, MP3 or ADTS decodes as a shorter
        # clip (audio/io.py's docstring says why), so either outcome is right for those.
        strict = {"wav", "aiff", "flac", "wav_float"}
        fractions = (0.1, 0.5, 0.9) if self.quick else (0.03, 0.2, 0.4, 0.6, 0.8, 0.97)
        for name, data in raw.items():
            if self.quick and name not in ("wav", "aiff", "flac", "ogg", "mp3", "m4a", "aac"):
                continue
            for f in [float(self.rng.choice(fractions))] if self.quick else fractions:
                f = float(np.clip(f + self.rng.uniform(-0.02, 0.02), 0.005, 0.995))
                cut = data[: max(1, int(len(data) * f))]
                expect = "skip" if name in strict else "either"
                ext = _ext(name)
                self.add(f"truncated/{name}_{round(f * 100):02d}{ext}", "truncated", expect, cut)

    def flipped(self, raw: dict[str, bytes]) -> None:
        for name, data in raw.items():
            for i in range(self.pick(10, 1)):
                b = bytearray(data)
                for _ in range(int(self.rng.integers(1, 5))):
                    at = int(self.rng.integers(0, min(64, len(b))))
                    b[at] ^= int(self.rng.integers(1, 256))
                self.add(f"flipped/{name}_{i}{_ext(name)}", "flipped_header", "either", bytes(b))

    def empty_and_header_only(self, raw: dict[str, bytes]) -> None:
        import soundfile as sf

        exts = [".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".aiff", ".opus"]
        for ext in exts[: self.pick(8, 2)]:
            self.add(f"empty/zero{ext}", "zero_length", "skip", b"")
        # A header and no audio: the 44 bytes of a WAV promising 1 s, and files written with
        # no frames at all.
        self.add(
            "header_only/wav_44_bytes.wav",
            "header_only",
            "skip",
            wav_bytes(b"", RATE, 1, declared=2 * RATE),
        )
        self.add("header_only/m4a_ftyp_only.m4a", "header_only", "skip", raw["m4a"][:32])
        if self.quick:
            return
        for fmt, ext, subtype in (
            ("WAV", ".wav", "PCM_16"),
            ("AIFF", ".aiff", "PCM_16"),
            ("FLAC", ".flac", "PCM_16"),
            ("OGG", ".ogg", "VORBIS"),
        ):
            p = self.add(f"header_only/no_frames{ext}", "header_only", "skip")
            sf.write(p, np.zeros((0, 1)), RATE, format=fmt, subtype=subtype)
        self.add("header_only/flac_streaminfo.flac", "header_only", "skip", raw["flac"][:42])
        self.add(
            "header_only/mp3_id3_only.mp3",
            "header_only",
            "skip",
            b"ID3\x04\0\0\0\0\0\x10" + bytes(16),
        )

    def not_audio(self) -> None:
        contents = junk_contents(self.rng)
        exts = (".wav", ".mp3", ".flac", ".m4a")
        if self.quick:
            for (kind, data), ext in zip(list(contents.items())[:4], exts, strict=True):
                self.add(f"not_audio/{kind}{ext}", "not_audio", "skip", data)
            return
        for kind, data in contents.items():
            for ext in exts:
                self.add(f"not_audio/{kind}{ext}", "not_audio", "skip", data)
        self.add("not_audio/video_only.mp4", "not_audio", "skip")
        write_video_only(Path(self.cases[-1].path))

    def absurd_rates(self, raw: dict[str, bytes]) -> None:
        rates = (1, 0, 2**31) if self.quick else (0, 1, 999, 2_000_001, 2**31, 2**32 - 1)
        for rate in rates:
            data = wav_bytes(pcm16(1.0), rate, 1)
            self.add(f"rates/wav_{rate}hz.wav", "absurd_rate", "skip", data)
        if self.quick:
            return
        for rate in (1.0, 1e12):
            data = patch_aiff_rate(raw["aiff"], rate)
            self.add(f"rates/aiff_{rate:g}hz.aiff", "absurd_rate", "skip", data)
        self.add("rates/flac_1hz.flac", "absurd_rate", "skip", patch_flac_rate(raw["flac"], 1))

    def channel_counts(self) -> None:
        # Headers claiming absurd channel counts over a little data; bounded either way.
        counts = (65535,) if self.quick else (0, 1024, 4096, 65535)
        for n in counts:
            data = wav_bytes(pcm16(1.0), RATE, n, declared=2 * RATE)
            self.add(f"channels/wav_{n}ch.wav", "huge_channels", "either", data)

    def bad_samples(self) -> None:
        import soundfile as sf

        values = {"nan": np.nan, "inf": np.inf, "1e20": 1e20}
        if not self.quick:
            values.update({"neg_inf": -np.inf, "1e38": 1e38, "x1500": 1500.0})
        for name, value in values.items():
            x = tone_samples(1.0, seed=6)
            x[RATE // 2 :: 97] = value
            p = self.add(f"samples/{name}.wav", "bad_samples", "skip")
            sf.write(p, x, RATE, subtype="FLOAT")
        if not self.quick:
            x = tone_samples(1.0, seed=6)
            x[100] = 1e300
            p = self.add("samples/double_1e300.wav", "bad_samples", "skip")
            sf.write(p, x, RATE, subtype="DOUBLE")

    def names(self, raw: dict[str, bytes]) -> None:
        # Not UTF-8: skipped, reported by the run only (the catalogue stores UTF-8 text).
        self.add(b"names/caf\xe9.wav", "non_utf8_name", "skip", raw["wav"])
        self.add(b"names/\xff\xfe bad.flac", "non_utf8_name", "skip", b"\0" * 100)
        if self.quick:
            return
        self.add(b"names/latin1 \xe0 \xe9\xe8.ogg", "non_utf8_name", "skip", raw["ogg"])
        # Odd but valid UTF-8 names: indexed.
        self.add("names/new\nline.wav", "good", "index", raw["wav"])
        self.add("names/tab\tand \x1b[31mescape.flac", "good", "index", raw["flac"])
        self.add("names/🔊 émoji ünïcode.mp3", "good", "index", raw["mp3"])
        self.add("names/" + "x" * 240 + ".wav", "good", "index", raw["wav"])

    def not_files(self, raw: dict[str, bytes]) -> None:
        for rel in ("pipes/pipe.wav", "pipes/deeper/pipe.flac")[: self.pick(2, 1)]:
            path = self.add(rel, "fifo", "skip")
            os.mkfifo(path)

    def links(self, raw: dict[str, bytes]) -> None:
        def link(rel: str, target: str | Path, kind: str, expect: str) -> None:
            os.symlink(target, self.add(rel, kind, expect))

        devices = (("zero.wav", "/dev/zero"), ("null.flac", "/dev/null"))
        if not self.quick:
            devices += (("urandom.mp3", "/dev/urandom"),)
        for name, target in devices:
            link(f"links/{name}", target, "link_to_device", "skip")
        far_good = self.outside / "far_good.wav"
        far_good.write_bytes(raw["wav"][:-10] + b"\0" * 10)  # not a copy of any root file
        link("links/far_good.wav", far_good, "link_outside_root", "index")
        far_bad = self.outside / "far_bad.wav"
        far_bad.write_bytes(MARKER.encode() * 20)
        link("links/far_bad.wav", far_bad, "link_outside_root", "skip")
        link("links/dangling.wav", self.outside / "nothing-here.wav", "broken_link", "skip")
        link("links/loop_a.wav", self.root / "links" / "loop_b.wav", "broken_link", "skip")
        link("links/loop_b.wav", self.root / "links" / "loop_a.wav", "broken_link", "skip")
        if self.quick:
            return
        far_dir = self.outside / "album.flac"  # a folder outside, named like audio, linked in
        far_dir.mkdir()
        (far_dir / "track.wav").write_bytes(raw["wav"][:-20] + b"\0" * 20)
        link("links/album.flac", far_dir, "folder_named_audio", "folder")
        self.cases.append(
            Case(str(self.root / "links/album.flac/track.wav"), "link_outside_root", "index")
        )

    def folders(self, raw: dict[str, bytes]) -> None:
        self.add("folder.wav/", "folder_named_audio", "folder")  # trailing "/": see below
        self.cases[-1].path = self.cases[-1].path.rstrip("/")
        os.makedirs(self.cases[-1].path, exist_ok=True)
        self.add("folder.wav/inside.wav", "good", "index", raw["wav"][:-30] + b"\0" * 30)
        if not self.quick:
            os.makedirs(self.add("empty_folder.mp3", "folder_named_audio", "folder"))

    def long_and_lying(self) -> None:
        # Hours of silence compress to almost nothing: its header, not its size, says it is long.
        minutes = 10 if self.quick else 180
        p = self.add(f"long/silence_{minutes}min.flac", "long_silent", "index")
        self.cases[-1].seconds = minutes * 60.0
        write_silent_flac(Path(p), minutes * 60)
        self.notes["long_silent"] = {"minutes": minutes, "bytes": os.path.getsize(p)}
        # ADTS AAC has no length in its header: FFmpeg guesses from the first frames' bit rate.
        from earshot.testing.audio import write_adts

        rng = np.random.default_rng(11)
        loud_s, quiet_s = (5, 60) if self.quick else (5, 1200)
        noise = (0.4 * rng.standard_normal(loud_s * RATE)).astype(np.float32)
        silence = np.zeros(quiet_s * RATE, dtype=np.float32)
        for name, parts in (("overstated", [silence, noise]), ("understated", [noise, silence])):
            p = self.add(f"lying/{name}.aac", "adts_lying_length", "index")
            self.cases[-1].seconds = float(loud_s + quiet_s)
            write_adts(Path(p), parts, RATE)
            self.notes[f"adts_{name}"] = {"real_s": loud_s + quiet_s, "probed_s": _probe_s(p)}


def _ext(name: str) -> str:
    return {"wav_float": ".wav", "aiff": ".aiff"}.get(name, "." + name)


def _probe_s(path: str) -> float | None:
    from earshot.audio.io import probe
    from earshot.errors import AudioDecodeError

    try:
        return round(probe(path).duration_s, 1)
    except AudioDecodeError:
        return None


def shown(path: str) -> str:
    """How earshot prints a path (earshot.index.scan.shown): undecodable bytes as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# --- running earshot under limits --------------------------------------------------------------


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in kB; (0, 0) when it is gone."""
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return hwm, rss


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/PID/task/TID/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


class TreeMemory(threading.Thread):
    """Polls a process tree: the highest VmHWM of any one process, the highest VmRSS summed
    over the tree; kills the tree's process group if the sum passes `kill_kb`."""

    def __init__(self, pid: int, kill_kb: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.kill_kb, self.interval = pid, kill_kb, interval
        self.peak_process_kb = self.peak_tree_kb = 0
        self.processes_seen: set[int] = set()
        self.killed = False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            for p in _tree(self.pid):
                hwm, rss = _status_kb(p)
                if hwm or rss:
                    self.processes_seen.add(p)
                self.peak_process_kb = max(self.peak_process_kb, hwm)
                total += rss
            self.peak_tree_kb = max(self.peak_tree_kb, total)
            if total > self.kill_kb and not self.killed:
                self.killed = True
                _kill_group(self.pid)
            self.done.wait(self.interval)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def earshot(args: list[str], env: dict, time_limit: float, kill_mb: float, work: Path) -> dict:
    """Run `python -m earshot.cli ARGS` in its own session, under the limits."""
    out_path, err_path = work / "stdout.txt", work / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "earshot.cli", *args],
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,  # its own process group: killed whole on a limit
        )
        mem = TreeMemory(proc.pid, int(kill_mb * 1024))
        mem.start()
        timed_out = False
        try:
            code = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            code = proc.wait()
        wall = time.perf_counter() - start
        mem.done.set()
        mem.join()
    _kill_group(proc.pid)  # any straggler (a worker that outlived its parent)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    return {
        "exit_code": code,
        "wall_s": round(wall, 1),
        "timed_out": timed_out,
        "killed_for_memory": mem.killed,
        "traceback": "Traceback (most recent call last)" in stderr,
        "peak_process_mb": round(mem.peak_process_kb / 1024, 1),
        "peak_tree_mb": round(mem.peak_tree_kb / 1024, 1),
        "processes": len(mem.processes_seen),
        "stdout": stdout,
        "stderr_tail": stderr[-3000:],
    }


def read_catalogue(db: Path) -> dict[str, tuple[str, str, float | None]]:
    """path → (status, reason, duration_s) of every file the catalogue holds."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT path, status, coalesce(skip_reason, ''), duration_s FROM files")
        return {p: (s, r, d) for p, s, r, d in rows}
    finally:
        conn.close()


def prepare_model(choice: str, work: Path) -> tuple[list[str], dict]:
    """The `--model` arguments and environment for `choice` (tiny | compact | general | DIR)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if choice == "tiny":
        from earshot.model.io import save_model
        from earshot.testing.models import tiny_model

        folder = work / "tiny-model"
        save_model(tiny_model(), folder)
        return ["--model", str(folder)], env
    return ["--model", choice], env


# --- judging -----------------------------------------------------------------------------------


def judge(
    cases: list[Case], run: dict, catalogue: dict[str, tuple[str, str, float | None]]
) -> tuple[dict, list[str], list[dict]]:
    """Per kind counts, failures, and each case's outcome."""
    failures: list[str] = []
    try:
        result = json.loads(run["stdout"])
    except ValueError:
        failures.append("the index run printed no JSON summary")
        result = {"skipped": []}
    run_skipped = {item["path"]: item["reason"] for item in result.get("skipped", [])}
    kinds: dict[str, dict] = {}
    details = []
    for c in cases:
        status, reason, duration = catalogue.get(c.path, (None, "", None))
        if status is None and shown(c.path) in run_skipped:
            status, reason = "skipped", run_skipped[shown(c.path)]
        outcome = {"ok": "indexed", "skipped": "skipped", None: "unreported"}[status]
        good = {
            "index": outcome == "indexed",
            "skip": outcome == "skipped",
            "either": outcome != "unreported",
            "folder": outcome == "unreported",
        }[c.expect]
        where = shown(c.path)
        if outcome == "skipped" and not reason.strip():
            good = False
            failures.append(f"{where}: skipped with no reason")
        if BUG in reason:
            good = False
            failures.append(f"{where}: an unforeseen failure: {reason}")
        if MARKER in reason:
            good = False
            failures.append(f"{where}: its skip reason quotes the file's bytes")
        if not good:
            failures.append(f"{where} ({c.kind}): expected {c.expect}, got {outcome} {reason!r}")
        off = outcome == "indexed" and c.seconds is not None and duration is not None
        if off and abs(duration - c.seconds) > max(1.0, 0.02 * c.seconds):
            good = False
            failures.append(f"{where}: catalogued as {duration:.1f} s long, is {c.seconds} s")
        k = kinds.setdefault(c.kind, {"files": 0, "indexed": 0, "skipped": 0, "unreported": 0})
        k["files"] += 1
        k[outcome] += 1
        if not good:
            k["wrong"] = k.get("wrong", 0) + 1
        details.append({"path": where, "kind": c.kind, "expect": c.expect, "outcome": outcome,
                        "reason": reason, "duration_s": duration})  # fmt: skip
    return kinds, failures, details


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~45 files, the tiny model: < 1 min")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", help="tiny | compact | general | DIR (default: compact; tiny quick)")
    ap.add_argument("--workers", type=int, default=2, help="earshot index --workers (default 2)")
    ap.add_argument(
        "--time-limit", type=float, help="seconds for the index run (default 1800; 50 quick)"
    )
    ap.add_argument("--rss-bound-mb", type=float, default=1500.0, help="peak RSS asserted")
    ap.add_argument("--kill-mb", type=float, default=4000.0, help="kill the run above this RSS")
    ap.add_argument("--no-rerun", action="store_true", help="skip the second, unchanged run")
    ap.add_argument("--details", metavar="FILE", help="write every case's outcome as JSON")
    ap.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = ap.parse_args()
    model = args.model or ("tiny" if args.quick else "compact")
    time_limit = args.time_limit or (50.0 if args.quick else 1800.0)
    rerun = not args.no_rerun

    tmp = None
    if args.keep:
        work = Path(args.keep).absolute()
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="earshot-fuzz-")
        work = Path(tmp.name).resolve()
    try:
        t0 = time.perf_counter()
        corpus = Corpus(work, args.seed, args.quick)
        corpus.build()
        gen_s = time.perf_counter() - t0
        log(f"wrote {len(corpus.cases)} cases in {gen_s:.1f} s; indexing with model {model}")
        model_args, env = prepare_model(model, work)
        db = work / "catalogue.sqlite"
        common = ["--db", str(db), *model_args]
        index_args = ["index", str(corpus.root), "--json", "--workers", str(args.workers)]
        first = earshot(index_args + common, env, time_limit, args.kill_mb, work)
        log(f"index run: exit {first['exit_code']} in {first['wall_s']} s")
        catalogue = read_catalogue(db)
        kinds, failures, details = judge(corpus.cases, first, catalogue)
        failures[:0] = run_failures("index", first, args.rss_bound_mb)

        listed = earshot(["skipped", "--json", "--db", str(db)], env, 60, args.kill_mb, work)
        failures += run_failures("skipped", listed, args.rss_bound_mb)
        skipped_cmd = check_skipped_command(listed, catalogue, corpus.cases, failures)

        second = None
        if rerun:
            second = earshot(index_args + common, env, time_limit, args.kill_mb, work)
            log(f"second index run: exit {second['exit_code']} in {second['wall_s']} s")
            failures += run_failures("second index", second, args.rss_bound_mb)
            check_rerun(second, catalogue, read_catalogue(db), failures)

        bad = [c for c in corpus.cases if c.expect in ("skip", "either") and c.kind != "good"]
        summary = {
            "ok": not failures,
            "quick": args.quick,
            "seed": args.seed,
            "model": model,
            "workers": args.workers,
            "files": {
                "cases": len(corpus.cases),
                "bad": len(bad),
                "good": sum(c.expect == "index" for c in corpus.cases),
                "folders": sum(c.expect == "folder" for c in corpus.cases),
                "generate_s": round(gen_s, 1),
            },
            "kinds": dict(sorted(kinds.items())),
            "index": _public(first),
            "memory": {
                "bound_mb": args.rss_bound_mb,
                "peak_process_mb": first["peak_process_mb"],
                "peak_tree_mb": first["peak_tree_mb"],
                "within_bound": max(first["peak_process_mb"], first["peak_tree_mb"])
                <= args.rss_bound_mb,
                # The kernel's figure for the largest process any run started, as a check on
                # the polled ones (a process too short-lived for the poll shows here).
                "max_child_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
                ),
            },
            "skipped_command": skipped_cmd,
            "rerun": None if second is None else _public(second),
            "notes": corpus.notes,
            "failures": failures,
        }
        if args.details:
            Path(args.details).write_text(json.dumps(details, indent=1))
        print(json.dumps(summary, indent=1))
        return 0 if not failures else 1
    finally:
        if tmp is not None:
            _unblock_fifos(work)
            tmp.cleanup()


def _public(run: dict) -> dict:
    keep = ("exit_code", "wall_s", "timed_out", "killed_for_memory", "traceback",
            "peak_process_mb", "peak_tree_mb", "processes")  # fmt: skip
    out = {k: run[k] for k in keep}
    try:
        doc = json.loads(run["stdout"])
        out.update({k: doc[k] for k in ("added", "unchanged", "reused", "segments_added")})
        out["skipped"] = len(doc["skipped"])
    except (ValueError, KeyError):
        pass
    return out


def run_failures(name: str, run: dict, bound_mb: float) -> list[str]:
    out = []
    if run["timed_out"]:
        out.append(f"{name}: still running after its time limit (a hang?)")
    if run["killed_for_memory"]:
        out.append(f"{name}: killed for memory (a blow-up)")
    if run["exit_code"] != 0:
        out.append(f"{name}: exit status {run['exit_code']}: {run['stderr_tail'][-800:]}")
    if run["traceback"]:
        out.append(f"{name}: a Python traceback on stderr: {run['stderr_tail'][-1500:]}")
    peak = max(run["peak_process_mb"], run["peak_tree_mb"])
    if peak > bound_mb:
        out.append(f"{name}: peak RSS {peak} MB above the bound of {bound_mb} MB")
    return out


def check_skipped_command(listed: dict, catalogue: dict, cases: list[Case], failures: list) -> dict:
    """`earshot skipped --json` must list every skipped file the catalogue holds, with reasons,
    and so every bad file whose name it can store."""
    try:
        doc = json.loads(listed["stdout"])
        rows = {item["path"]: item["reason"] for item in doc["skipped"]}
    except (ValueError, KeyError, TypeError):
        failures.append("earshot skipped --json printed no list")
        return {"listed": None}
    stored = {p for p, (s, *_) in catalogue.items() if s == "skipped"}
    if set(rows) != stored:
        failures.append(f"earshot skipped lists {len(rows)} files, the catalogue {len(stored)}")
    if doc.get("count") != len(rows):
        failures.append("earshot skipped's count is not the length of its list")
    missing = [
        shown(c.path) for c in cases if c.expect == "skip" and c.storable and c.path not in rows
    ]
    for m in missing:
        failures.append(f"earshot skipped does not list {m}")
    if any(not r.strip() for r in rows.values()):
        failures.append("earshot skipped lists a file with no reason")
    return {"listed": len(rows), "count": doc.get("count"), "bad_files_unlisted": len(missing)}


def check_rerun(second: dict, before: dict, after: dict, failures: list) -> None:
    try:
        doc = json.loads(second["stdout"])
    except ValueError:
        failures.append("second index run printed no JSON summary")
        return
    if doc["added"] or doc["updated"] or doc["removed"] or doc["segments_added"]:
        failures.append(f"second index run changed the catalogue: {_public(second)}")
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))[:5]
        failures.append(f"second index run changed the catalogue's files: {changed}")


def _unblock_fifos(work: Path) -> None:
    """Remove the FIFOs first: a cleanup that opened one would block."""
    for dirpath, _, names in os.walk(work):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                if os.path.islink(p) or not os.path.isfile(p):
                    os.unlink(p)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
