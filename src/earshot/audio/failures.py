"""What a file that will not decode is, in words for the person who has it: `why_unopenable`
(a file libsndfile will not open: unreadable, not audio at all, or audio that is corrupt or cut
short, told apart by its first bytes), `content_kind` (what a non-audio file looks like, an HTML
page, JSON, text, binary, quoting none of it), `describe` (an exception's own words) and `HINT`,
the fix most failures share. No reason ever quotes a file's content.
"""

from __future__ import annotations

import soundfile as sf

# First bytes of the containers libsndfile reads, used only to word an error: a file that
# starts like audio but will not open is "corrupt", anything else is "not an audio file".
AUDIO_MAGIC = (
    (b"RIFF", "WAV"),
    (b"RIFX", "WAV"),
    (b"RF64", "WAV"),
    (b"riff", "W64"),
    (b"FORM", "AIFF"),
    (b"fLaC", "FLAC"),
    (b"OggS", "Ogg"),
    (b"ID3", "MP3"),
    (b"caff", "CAF"),
    (b".snd", "AU"),
)

# libsndfile's words for some failures mislead: a truncated MP3 is reported as missing.
MISLEADING = ("File does not exist or is not a regular file",)

HINT = "re-export or re-download it"


def why_unopenable(path: str, error: Exception) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except PermissionError:
        return "permission denied; check the file's permissions"
    except OSError as e:
        return f"cannot read it ({describe(e)})"
    kind = sniff(head)
    if kind is None:
        return f"not an audio file ({content_kind(head)}); check what was saved under this name"
    detail = describe(error)
    if any(m in detail for m in MISLEADING):
        detail = "libsndfile cannot parse it"
    return f"corrupt or truncated {kind} file ({detail}); {HINT}"


def content_kind(head: bytes) -> str:
    """What a non-audio file's first bytes look like, in words that quote none of them."""
    if not head:
        return "no content could be read"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "it looks like an HTML page"
    if lowered.startswith((b"<?xml", b"<")):
        return "it looks like XML or HTML"
    if lowered.startswith((b"{", b"[")):
        return "it looks like JSON"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample; allow for that.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it looks like text"
    return "unrecognised binary data"


def sniff(head: bytes) -> str | None:
    for magic, kind in AUDIO_MAGIC:
        if head.startswith(magic):
            return kind
    # An MP3 without an ID3 tag starts straight with a frame: 11 set sync bits.
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3"
    return None


def describe(error: BaseException) -> str:
    if isinstance(error, sf.LibsndfileError):
        return error.error_string.strip()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
