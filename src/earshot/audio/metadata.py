"""The descriptions and tags sound libraries embed in their files, read into one record.

Sound designers' libraries carry their words inside the files: a Broadcast Wave `bext` chunk
(Description, Originator, date...), iXML (NOTE, SCENE/TAKE, and `<USER>` fields such as
Soundminer's FXNAME, CATEGORY, DESCRIPTION, KEYWORDS), RIFF LIST/INFO (INAM, ICMT, IKEY...),
ID3 (MP3, and WAV/AIFF with an ID3 chunk), Vorbis comments (FLAC, Ogg Vorbis, Opus) and MP4
atoms (M4A); and UCS file names (`DOORWood_Creak Slam_JD_MyLib.wav`). `read_metadata` reads
what a file has, the tag formats through mutagen, the WAV/AIFF chunks through a small walker of
our own, and gives one `Metadata`: its `as_dict()` is what the catalogue stores and a hit shows.

Reading metadata never fails the indexer: a chunk that is cut short, declares more bytes than
the file has, or holds junk gives no metadata, not an error. Every read is bounded (chunks
walked, bytes read per chunk, characters per value, values per record), so a hostile file costs
at most a few megabytes of reads.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

MAX_CHUNKS = 512  # chunks walked in one RIFF/AIFF file before giving up
MAX_CHUNK_BYTES = 1 << 20  # a bext/iXML/INFO/ID3 chunk larger than this is not read
MAX_VALUE_CHARS = 2000  # each value cut to this
MAX_RAW = 64  # raw key/values kept per file
MAX_KEYWORDS = 64
_TEXT_CHUNKS_RIFF = {b"bext", b"iXML", b"LIST", b"id3 ", b"ID3 "}
_TEXT_CHUNKS_AIFF = {b"NAME", b"AUTH", b"ANNO", b"(c) ", b"ID3 ", b"id3 ", b"APPL"}

# RIFF INFO ids → a normalised field (None: kept in raw only).
_INFO_FIELDS = {
    "INAM": "title",
    "ICMT": "comment",
    "IKEY": "keywords",
    "IART": "artist",
    "ISBJ": "subject",
    "IGNR": "genre",
    "ICRD": "date",
    "IPRD": "library",
    "ICOP": "copyright",
    "IENG": "engineer",
    "ISFT": "software",
    "ISRC": "source",
    "ITCH": "technician",
}
# Field names as tag formats spell them (Vorbis comments, iXML USER, ID3 TXXX, MP4 freeform),
# lower-cased → the normalised field.
_NAMED_FIELDS = {
    "description": "description",
    "desc": "description",
    "bwf_description": "description",
    "title": "title",
    "artist": "artist",
    "designer": "artist",
    "author": "artist",
    "creator": "artist",
    "comment": "comment",
    "comments": "comment",
    "note": "comment",
    "notes": "comment",
    "keywords": "keywords",
    "keyword": "keywords",
    "category": "category",
    "subcategory": "subcategory",
    "catid": "cat_id",
    "cat_id": "cat_id",
    "fxname": "fx_name",
    "fx_name": "fx_name",
    "library": "library",
    "album": "library",
    "genre": "genre",
    "date": "date",
    "copyright": "copyright",
    "originator": "originator",
    "bwf_originator": "originator",
    "manufacturer": "manufacturer",
    "microphone": "microphone",
    "micperspective": "mic_perspective",
    "recmedium": "rec_medium",
    "location": "location",
    "project": "project",
    "scene": "scene",
    "take": "take",
    "tape": "tape",
    "usercategory": "user_category",
    "vendorcategory": "vendor_category",
    "shortid": "short_id",
    "subject": "subject",
}
# ID3 frames → normalised fields.
_ID3_FRAMES = {
    "TIT2": "title",
    "TIT3": "description",
    "TPE1": "artist",
    "TCOM": "artist",
    "TALB": "library",
    "TCON": "genre",
    "TDRC": "date",
    "TYER": "date",
    "TCOP": "copyright",
}
# MP4 atoms → normalised fields.
_MP4_ATOMS = {
    "\xa9nam": "title",
    "\xa9ART": "artist",
    "\xa9cmt": "comment",
    "desc": "description",
    "ldes": "description",
    "\xa9gen": "genre",
    "\xa9alb": "library",
    "\xa9day": "date",
    "cprt": "copyright",
    "keyw": "keywords",
    "\xa9wrt": "artist",
}
# The text fields of a record, in the order `words()` puts them.
TEXT_FIELDS = (
    "description",
    "title",
    "fx_name",
    "keywords",
    "category",
    "subcategory",
    "comment",
    "subject",
    "genre",
    "library",
    "artist",
    "originator",
)
_UCS = re.compile(
    r"^(?P<cat_id>(?P<category>[A-Z]{2,6})(?P<subcategory>[A-Z][a-z][A-Za-z0-9]*))"
    r"(?:-(?P<user_category>[^_]+))?"
    r"_(?P<fx_name>[^_]+)_(?P<creator_id>[^_]+)_(?P<source_id>[^_]+)(?:_(?P<user_data>.+))?$"
)


@dataclass
class Metadata:
    """A file's embedded metadata, normalised; empty fields are "" / [] / None."""

    description: str = ""
    title: str = ""
    artist: str = ""
    originator: str = ""
    comment: str = ""
    keywords: list[str] = field(default_factory=list)
    category: str = ""
    subcategory: str = ""
    cat_id: str = ""
    fx_name: str = ""
    library: str = ""
    date: str = ""
    ucs: dict[str, str] | None = None
    extra: dict[str, str] = field(default_factory=dict)  # other normalised fields (genre...)
    sources: list[str] = field(default_factory=list)  # 'bext', 'ixml', 'info', 'id3', ...
    raw: dict[str, str] = field(default_factory=dict)  # 'bext:Description' → value, ...

    def set(self, name: str, value: object) -> None:
        """Set normalised field `name` unless it already has a value (first source wins)."""
        if name == "keywords":
            self.add_keywords(value)
            return
        text = clean(value)
        if not text:
            return
        if name in _STR_FIELDS:
            if not getattr(self, name):
                setattr(self, name, text)
        elif name not in self.extra and len(self.extra) < MAX_RAW:
            self.extra[name] = text

    def add_keywords(self, value: object) -> None:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            for word in re.split(r"[;,\n]+", clean(item)):
                word = word.strip()
                known = {k.casefold() for k in self.keywords}
                if word and word.casefold() not in known and len(self.keywords) < MAX_KEYWORDS:
                    self.keywords.append(word)

    def add_raw(self, key: str, value: object) -> None:
        text = clean(value)
        if text and key not in self.raw and len(self.raw) < MAX_RAW:
            self.raw[key] = text

    def source(self, name: str) -> None:
        if name not in self.sources:
            self.sources.append(name)

    def as_dict(self, raw: bool = True) -> dict:
        """The record as the catalogue stores it and the API shows it: empty fields left out.
        `raw=False`: without the raw key/values (what a hit carries)."""
        out: dict = {}
        for name in _STR_FIELDS:
            if value := getattr(self, name):
                out[name] = value
        if self.keywords:
            out["keywords"] = list(self.keywords)
        if self.ucs:
            out["ucs"] = dict(self.ucs)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        if self.sources:
            out["sources"] = list(self.sources)
        if raw and self.raw:
            out["raw"] = dict(self.raw)
        return out

    def __bool__(self) -> bool:
        return bool(self.as_dict())


_STR_FIELDS = (
    "description",
    "title",
    "artist",
    "originator",
    "comment",
    "category",
    "subcategory",
    "cat_id",
    "fx_name",
    "library",
    "date",
)


def clean(value: object) -> str:
    """A value as one tidy string: bytes decoded (UTF-8, else latin-1), NULs and control
    characters dropped, whitespace collapsed, cut to MAX_VALUE_CHARS."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = "; ".join(clean(v) for v in value if clean(v))
    if isinstance(value, bytes | bytearray):
        value = decode_text(bytes(value))
    text = str(value).replace("\x00", " ")
    text = "".join(c if c.isprintable() or c in "\t\n" else " " for c in text)
    text = re.sub(r"[ \t]+", " ", text)
    text = "\n".join(line.strip() for line in text.splitlines() if line.strip())
    return text[:MAX_VALUE_CHARS]


def decode_text(data: bytes) -> str:
    """Chunk bytes as text: up to the first NUL; UTF-8 where it is, else latin-1 (which
    decodes any byte), so a non-UTF-8 description still reads."""
    data = data.split(b"\x00", 1)[0]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --- the reader --------------------------------------------------------------------------


def read_metadata(path: str | os.PathLike) -> Metadata:
    """Everything `path` carries that describes it (see the module docstring). Never raises
    for the file's content: what cannot be read is left out."""
    meta = Metadata()
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) == 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:] == b"WAVE":
                _read_riff(f, meta)
            elif len(head) == 12 and head[:4] == b"FORM" and head[8:] in (b"AIFF", b"AIFC"):
                _read_aiff(f, meta)
    except Exception:  # unreadable, or a walk that met something nobody foresaw
        pass
    if not (meta.sources and {"id3"} & set(meta.sources)):
        _read_mutagen(path, meta)
    _read_ucs(os.path.basename(path), meta)
    return meta


def _chunks(f, big_endian: bool, size_limit: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, declared size, offset of the data) of each chunk after the 12-byte form header,
    at most MAX_CHUNKS; stops at the end of the file or at a chunk that runs past it."""
    fmt = ">I" if big_endian else "<I"
    at = 12
    end = min(size_limit, os.fstat(f.fileno()).st_size)
    data_size64 = None
    for _ in range(MAX_CHUNKS):
        if at + 8 > end:
            return
        f.seek(at)
        header = f.read(8)
        if len(header) < 8:
            return
        cid, size = header[:4], struct.unpack(fmt, header[4:])[0]
        if cid == b"ds64" and size >= 28:  # RF64: the data chunk's real size
            ds = f.read(28)
            if len(ds) == 28:
                data_size64 = struct.unpack("<Q", ds[8:16])[0]
        if cid == b"data" and size == 0xFFFFFFFF and data_size64 is not None:
            size = data_size64
        yield cid, size, at + 8
        at += 8 + size + (size & 1)  # chunks are padded to an even length


def _read_chunk(f, offset: int, size: int) -> bytes | None:
    """A chunk's bytes, or None where it is too big or cut short (a bad chunk: no metadata)."""
    if size > MAX_CHUNK_BYTES:
        return None
    f.seek(offset)
    data = f.read(size)
    return data if len(data) == size else None


def _read_riff(f, meta: Metadata) -> None:
    for cid, size, offset in _chunks(f, big_endian=False, size_limit=1 << 62):
        if cid not in _TEXT_CHUNKS_RIFF:
            continue
        data = _read_chunk(f, offset, size)
        if data is None:
            continue
        try:
            if cid == b"bext":
                _parse_bext(data, meta)
            elif cid == b"iXML":
                _parse_ixml(data, meta)
            elif cid == b"LIST" and data[:4] == b"INFO":
                _parse_info(data[4:], meta)
            elif cid in (b"id3 ", b"ID3 "):
                _parse_id3_bytes(data, meta)
        except Exception:  # a bad chunk (e.g. iXML naming an unknown encoding): this one only
            continue


def _read_aiff(f, meta: Metadata) -> None:
    names = {b"NAME": "title", b"AUTH": "artist", b"ANNO": "comment", b"(c) ": "copyright"}
    for cid, size, offset in _chunks(f, big_endian=True, size_limit=1 << 62):
        if cid not in _TEXT_CHUNKS_AIFF:
            continue
        data = _read_chunk(f, offset, size)
        if data is None:
            continue
        if cid in names:
            meta.add_raw(f"aiff:{cid.decode('latin-1').strip()}", data)
            meta.set(names[cid], data)
            meta.source("aiff")
        elif cid in (b"ID3 ", b"id3 "):
            try:
                _parse_id3_bytes(data, meta)
            except Exception:
                continue


def _parse_bext(data: bytes, meta: Metadata) -> None:
    """EBU Tech 3285: Description (256), Originator (32), OriginatorReference (32),
    OriginationDate (10), OriginationTime (8), TimeReference (uint64), Version, UMID (64),
    loudness (10), reserved (180), then CodingHistory to the end."""
    if len(data) < 256:
        return
    fields = (("Description", 0, 256), ("Originator", 256, 32), ("OriginatorReference", 288, 32),
              ("OriginationDate", 320, 10), ("OriginationTime", 330, 8))  # fmt: skip
    values = {name: clean(decode_text(data[at : at + n])) for name, at, n in fields}
    if len(data) > 602:
        values["CodingHistory"] = clean(decode_text(data[602:]))
    if len(data) >= 346:
        values["TimeReference"] = str(struct.unpack("<Q", data[338:346])[0])
    for name, value in values.items():
        if value and not (name == "TimeReference" and value == "0"):
            meta.add_raw(f"bext:{name}", value)
    if not any(values.get(n) for n in ("Description", "Originator", "OriginatorReference")):
        return
    meta.source("bext")
    description = values["Description"]
    meta.set("description", description)
    meta.set("originator", values["Originator"])
    if values.get("OriginationDate"):
        meta.set("date", " ".join(filter(None, (values["OriginationDate"],
                                                 values.get("OriginationTime")))))  # fmt: skip


def _parse_ixml(data: bytes, meta: Metadata) -> None:
    import xml.etree.ElementTree as ET

    # Python's expat refuses entity expansion bombs; ElementTree resolves no external entity.
    if b"<!ENTITY" in data:
        return
    try:
        root = ET.fromstring(data.split(b"\x00", 1)[0].strip())
    except ET.ParseError:
        return
    found = False
    for element in root.iter():
        if len(meta.raw) >= MAX_RAW:
            break
        text = clean(element.text)
        if not text or len(element):
            continue
        name = element.tag.upper() if isinstance(element.tag, str) else ""
        meta.add_raw(f"ixml:{name}", text)
        key = name.lower().replace("-", "_")
        if key in _NAMED_FIELDS:
            meta.set(_NAMED_FIELDS[key], text)
            found = True
    # A free-text USER block ("Description: ...\nKeywords: ...") as some tools write it.
    user = root.find("USER")
    if user is not None and not len(user) and user.text:
        for line in user.text.splitlines():
            key, sep, value = line.partition(":")
            key = key.strip().lower().replace(" ", "")
            if sep and key in _NAMED_FIELDS:
                meta.set(_NAMED_FIELDS[key], value)
                found = True
    if found or meta.raw.keys() & {"ixml:NOTE", "ixml:SCENE", "ixml:TAKE"}:
        meta.source("ixml")


def _parse_info(data: bytes, meta: Metadata) -> None:
    """The subchunks of a LIST/INFO chunk: 4-byte id, uint32 LE size, text, even padding."""
    at, found = 0, False
    while at + 8 <= len(data):
        cid = data[at : at + 4]
        size = struct.unpack("<I", data[at + 4 : at + 8])[0]
        if at + 8 + size > len(data):
            break  # cut short: what came before stays
        key = cid.decode("latin-1")
        value = clean(decode_text(data[at + 8 : at + 8 + size]))
        if value and key.isalnum():
            meta.add_raw(f"info:{key}", value)
            name = _INFO_FIELDS.get(key)
            if name:
                meta.set(name, value)
                found = True
        at += 8 + size + (size & 1)
    if found:
        meta.source("info")


def _parse_id3_bytes(data: bytes, meta: Metadata) -> None:
    import io

    try:
        from mutagen.id3 import ID3

        tags = ID3(io.BytesIO(data))
    except Exception:  # mutagen raises many types for bad tags
        return
    _from_id3(tags, meta)


def _from_id3(tags, meta: Metadata) -> None:
    found = False
    for frame in tags.values():
        fid = frame.FrameID
        try:
            if fid == "TXXX":
                key = str(frame.desc).strip()
                value = clean(list(frame.text))
                meta.add_raw(f"id3:TXXX:{key}", value)
                name = _NAMED_FIELDS.get(key.lower().replace(" ", ""))
                if name:
                    meta.set(name, value)
                    found = True
            elif fid == "COMM":
                value = clean(list(frame.text))
                desc = str(frame.desc).strip().lower()
                meta.add_raw(f"id3:COMM:{frame.desc}" if desc else "id3:COMM", value)
                meta.set("description" if desc == "description" else "comment", value)
                found = found or bool(value)
            elif fid in _ID3_FRAMES:
                value = clean([str(t) for t in frame.text])
                meta.add_raw(f"id3:{fid}", value)
                meta.set(_ID3_FRAMES[fid], value)
                found = found or bool(value)
        except (AttributeError, TypeError, ValueError):
            continue
    if found:
        meta.source("id3")


def _read_mutagen(path: str, meta: Metadata) -> None:
    """ID3, Vorbis comments, MP4 atoms and the other tag formats mutagen reads."""
    try:
        import mutagen

        f = mutagen.File(path)
    except Exception:  # a file mutagen cannot parse: no metadata from it
        return
    tags = getattr(f, "tags", None) if f is not None else None
    if not tags:
        return
    try:
        from mutagen.id3 import ID3
        from mutagen.mp4 import MP4Tags

        if isinstance(tags, ID3):
            _from_id3(tags, meta)
        elif isinstance(tags, MP4Tags):
            _from_mp4(tags, meta)
        else:
            _from_pairs(_pairs(tags), meta, type(f).__name__.lower())
    except Exception:
        return


def _pairs(tags) -> Iterable[tuple[str, object]]:
    """(key, value) of a Vorbis comment block or any other dict-like mutagen tags."""
    items = tags.items() if hasattr(tags, "items") else tags
    for i, item in enumerate(items):
        if i >= 4 * MAX_RAW:
            return
        key, value = item
        yield str(key), value


def _from_pairs(pairs: Iterable[tuple[str, object]], meta: Metadata, kind: str) -> None:
    found = False
    source = "vorbis" if kind in ("flac", "oggvorbis", "oggopus", "oggflac", "oggspeex") else kind
    for key, value in pairs:
        if isinstance(value, list | tuple):
            value = [v if isinstance(v, str | bytes) else str(v) for v in value]
        text = clean(value)
        meta.add_raw(f"{source}:{key}", text)
        name = _NAMED_FIELDS.get(key.lower().replace(" ", "").replace("-", ""))
        if name and text:
            meta.set(name, value if name == "keywords" else text)
            found = True
    if found:
        meta.source(source)


def _from_mp4(tags: Mapping, meta: Metadata) -> None:
    found = False
    for key, value in list(tags.items())[: 4 * MAX_RAW]:
        if key.startswith("----:"):  # freeform: ----:com.apple.iTunes:NAME
            name = key.rsplit(":", 1)[-1]
            values = [bytes(v).decode("utf-8", "replace") for v in value]
            meta.add_raw(f"mp4:{name}", values)
            field_name = _NAMED_FIELDS.get(name.lower().replace(" ", ""))
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                continue
            values = value
            meta.add_raw(f"mp4:{key}", values)
            field_name = _MP4_ATOMS.get(key)
        if field_name and clean(values):
            meta.set(field_name, values if field_name == "keywords" else clean(values))
            found = True
    if found:
        meta.source("mp4")


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
