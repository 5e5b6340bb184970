"""The descriptions and tags sound libraries embed in their files, read into one record.

Sound designers' libraries carry their words inside the files: a Broadcast Wave `bext` chunk
(Description, Originator, date...), iXML (NOTE, SCENE/TAKE, and `<USER>` fields such as
Soundminer's FXNAME, CATEGORY, DESCRIPTION, KEYWORDS), RIFF LIST/INFO (INAM, ICMT, IKEY...),
ID3 (MP3, and WAV/AIFF with an ID3 chunk), Vorbis comments (FLAC, Ogg Vorbis, Opus) and MP4
atoms (M4A); and UCS file names (`DOORWood_Creak Slam_JD_MyLib.wav`). `read_metadata` reads
what a file has, the tag formats through mutagen (`metadata_tags`), the WAV/AIFF chunks through
our own chunk walker (`metadata_chunks`, on `headers.chunks`), and gives one `Metadata`
(`metadata_record`): its `as_dict()` is what the catalogue stores and a hit shows.

Reading metadata never fails the indexer: a chunk that is cut short, declares more bytes than
the file has, or holds junk gives no metadata, not an error. Every read is bounded (chunks
walked, bytes read per chunk, characters per value, values per record), so a hostile file costs
at most a few megabytes of reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from earshot.audio.metadata_chunks import read_aiff, read_riff
from earshot.audio.metadata_record import TEXT_FIELDS, Metadata
from earshot.audio.metadata_tags import read_mutagen

_UCS = re.compile(
    r"^(?P<cat_id>(?P<category>[A-Z]{2,6})(?P<subcategory>[A-Z][a-z][A-Za-z0-9]*))"
    r"(?:-(?P<user_category>[^_]+))?"
    r"_(?P<fx_name>[^_]+)_(?P<creator_id>[^_]+)_(?P<source_id>[^_]+)(?:_(?P<user_data>.+))?$"
)


def read_metadata(path: str | os.PathLike) -> Metadata:
    """Everything `path` carries that describes it (see the module docstring). Never raises
    for the file's content: what cannot be read is left out."""
    meta = Metadata()
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) == 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:] == b"WAVE":
                read_riff(f, meta)
            elif len(head) == 12 and head[:4] == b"FORM" and head[8:] in (b"AIFF", b"AIFC"):
                read_aiff(f, meta)
    except Exception:  # unreadable, or a walk that met something nobody foresaw
        pass
    if not (meta.sources and {"id3"} & set(meta.sources)):
        read_mutagen(path, meta)
    _read_ucs(os.path.basename(path), meta)
    return meta


def parse_ucs(name: str) -> dict[str, str] | None:
    """A Universal Category System file name → its parts; None unless it is one.

    `CatID_FXName_CreatorID_SourceID[_UserData].ext`, the CatID an uppercase category then a
    capitalised subcategory (`DOORWood`), optionally `-UserCategory`. Conservative: a name that
    does not have all four parts in that shape is not UCS.
    """
    stem = os.path.splitext(name)[0]
    m = _UCS.match(stem)
    if m is None:
        return None
    parts = {k: v.strip() for k, v in m.groupdict().items() if v and v.strip()}
    if len(parts) < 6 or not parts.get("fx_name"):  # cat_id, category, subcategory + 3
        return None
    return parts


def _read_ucs(name: str, meta: Metadata) -> None:
    ucs = parse_ucs(name)
    if ucs is None:
        return
    meta.ucs = ucs
    meta.source("ucs")
    meta.set("fx_name", ucs["fx_name"])
    meta.set("cat_id", ucs["cat_id"])
    meta.set("category", ucs["category"])
    meta.set("subcategory", ucs["subcategory"])


def search_text(meta: Mapping) -> str:
    """The words a stored record (`Metadata.as_dict()`) gives keyword search: its text fields,
    keywords and UCS parts, CamelCase CatIDs split ("DOORWood" → "DOOR Wood")."""
    parts: list[str] = []
    for name in TEXT_FIELDS:
        value = meta.get(name)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value:
            parts.append(str(value))
    ucs = meta.get("ucs")
    if isinstance(ucs, Mapping):
        for key in ("category", "subcategory", "fx_name", "user_category"):
            if ucs.get(key):
                parts.append(str(ucs[key]))
    for key in ("cat_id",):
        if meta.get(key):
            parts.append(str(meta[key]))
    return " ".join(dict.fromkeys(p for p in parts if p))
