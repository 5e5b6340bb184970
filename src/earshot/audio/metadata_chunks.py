"""The text chunks of WAV (RIFF, RF64, BW64) and AIFF files: Broadcast Wave `bext`, iXML, RIFF
LIST/INFO, the AIFF text chunks and an embedded ID3 chunk, read into a `Metadata`.

Every read is bounded: at most MAX_CHUNKS chunks walked, MAX_CHUNK_BYTES read from one; a chunk
that is cut short, too large or holds junk gives nothing, and the others still read.
"""

from __future__ import annotations

import struct

from earshot.audio.headers import chunks
from earshot.audio.metadata_record import MAX_RAW, NAMED_FIELDS, Metadata, clean, decode_text
from earshot.audio.metadata_tags import parse_id3_bytes

MAX_CHUNKS = 512  # chunks walked in one RIFF/AIFF file before giving up
MAX_CHUNK_BYTES = 1 << 20  # a bext/iXML/INFO/ID3 chunk larger than this is not read
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


def _read_chunk(f, offset: int, size: int) -> bytes | None:
    """A chunk's bytes, or None where it is too big or cut short (a bad chunk: no metadata)."""
    if size > MAX_CHUNK_BYTES:
        return None
    f.seek(offset)
    data = f.read(size)
    return data if len(data) == size else None


def read_riff(f, meta: Metadata) -> None:
    for cid, size, offset in chunks(f, "<", MAX_CHUNKS):
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
                parse_id3_bytes(data, meta)
        except Exception:  # a bad chunk (e.g. iXML naming an unknown encoding): this one only
            continue


def read_aiff(f, meta: Metadata) -> None:
    names = {b"NAME": "title", b"AUTH": "artist", b"ANNO": "comment", b"(c) ": "copyright"}
    for cid, size, offset in chunks(f, ">", MAX_CHUNKS):
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
                parse_id3_bytes(data, meta)
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
        if key in NAMED_FIELDS:
            meta.set(NAMED_FIELDS[key], text)
            found = True
    # A free-text USER block ("Description: ...\nKeywords: ...") as some tools write it.
    user = root.find("USER")
    if user is not None and not len(user) and user.text:
        for line in user.text.splitlines():
            key, sep, value = line.partition(":")
            key = key.strip().lower().replace(" ", "")
            if sep and key in NAMED_FIELDS:
                meta.set(NAMED_FIELDS[key], value)
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
