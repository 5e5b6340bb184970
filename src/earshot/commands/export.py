"""`earshot export`: a span of a recording (a search hit, or any file) written out as a file."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from earshot.errors import EarshotError

EXPORT_HELP = "write a span of a recording (a search hit or a file) to a new file"
EXPORT_DESCRIPTION = (
    "Cut a span out of a recording, sample-accurately, at the file's own sample rate and "
    "channels, and write it in the same format (WAV, FLAC, AIFF, Ogg, MP3, CAF, W64, AU; M4A "
    "and WMA re-encoded through PyAV) or as WAV. HIT is a catalogue id as `earshot search` "
    "prints it: file:ID (the file; --start/--end default to its whole length) or seg:ID (a "
    "segment, i.e. the hit's span; --start/--end override it); anything else is a path to an "
    "audio file, catalogued or not. Without -o the clip is named <stem>_<start>-<end>.<ext> in "
    "the current folder. An existing file is never replaced without --force."
)
_ID = re.compile(r"(file|seg|segment):([0-9]{1,18})", re.IGNORECASE)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("hit", metavar="HIT|PATH", help="file:ID, seg:ID (as search prints), or a path")
    p.add_argument("--start", type=float, metavar="S", help="start of the span (s)")
    p.add_argument("--end", type=float, metavar="S", help="end of the span (s)")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file to write, or a folder to write <stem>_<start>-<end>.<ext> into; its suffix "
        "picks the format when --format is not given (.wav: WAV)",
    )
    p.add_argument(
        "--format",
        choices=["wav", "source"],
        help="wav, or source: the recording's own format (default: from -o's suffix, else source)",
    )
    p.add_argument(
        "--fade",
        type=float,
        default=0.0,
        metavar="MS",
        help="fade in and out over this many milliseconds (default: 0, none)",
    )
    p.add_argument(
        "--fade-shape",
        choices=["linear", "equal-power"],
        default="linear",
        help="the fades' curve (default: linear)",
    )
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument(
        "--db", help="catalogue for file:/seg: ids (default: the user data folder; env EARSHOT_DB)"
    )
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from earshot.audio.export import clip_name, plan_for, write_span
    from earshot.audio.recording import ExportError, open_source, span_frames
    from earshot.commands.search import printable

    path, start, end = _resolve(args)
    source = open_source(path)
    if end is not None and args.end is None:  # a segment's own end: never past the file's
        end = min(end, source.duration_s)
    first, last = span_frames(source, start, end)
    out = Path(args.output).expanduser() if args.output else None
    if out is not None and args.output.endswith(("/", os.sep)) and not out.is_dir():
        # `-o clips/` names a folder: not a file 'clips' (Path drops the trailing separator).
        raise ExportError(
            f"no folder '{out}' to write the clip into; create it first, or name a file"
            if not out.exists()
            else f"'{out}' is a file, not a folder to write the clip into"
        )
    fmt = args.format
    if fmt is None:
        fmt = _format_from_suffix(source, out)
    plan = plan_for(source, fmt)
    if out is None or out.is_dir():
        name = clip_name(source.path, first, last, source.sample_rate, plan.suffix)
        out = (out or Path(".")) / name
    elif out.suffix.lower() != plan.suffix and not _same_family(out.suffix, plan.suffix):
        raise ExportError(
            f"'{out.name}' does not end in {plan.suffix}, the {plan.format} this writes"
            + (" (the source's format cannot be written: it falls back to WAV)"
               if plan.note and fmt == "source" and plan.format == "WAV" else "")
            + "; name it so, or choose --format"
        )  # fmt: skip
    done = write_span(source, first, last, out, plan, args.fade, args.fade_shape, args.force)
    result = {
        "path": str(done.path),
        "source": source.path,
        "start": round(first / source.sample_rate, 6),
        "end": round(last / source.sample_rate, 6),
        "frames": done.frames,
        "sample_rate": done.sample_rate,
        "channels": done.channels,
        "format": done.format,
        "subtype": done.subtype,
        "fade_ms": args.fade,
        "note": done.note,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    seconds = done.frames / done.sample_rate
    print(
        f"wrote {printable(str(done.path))}: {seconds:.3f} s ({done.frames} frames) of "
        f"{printable(source.path)} from {result['start']:g} s, {done.sample_rate} Hz, "
        f"{done.channels} ch, {done.format} {done.subtype}"
    )
    if done.note:
        print(f"  note: {done.note}")
    return 0


def _resolve(args: argparse.Namespace) -> tuple[str, float | None, float | None]:
    """(path, start, end) from HIT: an id looked up in the catalogue, or a path."""
    m = _ID.fullmatch(args.hit.strip())
    if m is None:
        path = os.path.expanduser(args.hit)
        if not os.path.exists(path) and re.fullmatch(r"[0-9]+", args.hit.strip()):
            raise EarshotError(
                f"no file '{args.hit}': for a catalogue id write file:{args.hit} or seg:{args.hit}"
            )
        return path, args.start, args.end
    from earshot.api import catalogue_path
    from earshot.index.store import Catalogue

    kind, number = m.group(1).lower(), int(m.group(2))
    with Catalogue(catalogue_path(args.db), readonly=True) as cat:
        if kind == "file":
            info = cat.file(number)
            if info is None:
                raise EarshotError(f"no file with id {number} in the catalogue ({cat.path})")
            return info["path"], args.start, args.end
        row = cat.segments([number]).get(number)
        if row is None:
            raise EarshotError(f"no segment with id {number} in the catalogue ({cat.path})")
    start = row.start_s if args.start is None else args.start
    end = row.end_s if args.end is None else args.end
    return row.path, start, end


def _format_from_suffix(source, out: Path | None) -> str:
    if out is None or out.is_dir() or not out.suffix:
        return "source"
    if out.suffix.lower() in (".wav", ".wave") and not _same_family(out.suffix, source.suffix):
        return "wav"
    return "source"


def _same_family(a: str, b: str) -> bool:
    families = ({".aif", ".aiff", ".aifc"}, {".wav", ".wave"}, {".ogg", ".oga"})
    a, b = a.lower(), b.lower()
    return a == b or any(a in f and b in f for f in families)
