"""The tag formats mutagen reads (ID3, Vorbis comments, MP4 atoms, APE...), into a `Metadata`.
A tag mutagen cannot parse gives nothing, never an error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from earshot.audio.metadata_record import MAX_RAW, NAMED_FIELDS, Metadata, clean

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


def parse_id3_bytes(data: bytes, meta: Metadata) -> None:
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
                name = NAMED_FIELDS.get(key.lower().replace(" ", ""))
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


def read_mutagen(path: str, meta: Metadata) -> None:
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
        name = NAMED_FIELDS.get(key.lower().replace(" ", "").replace("-", ""))
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
            field_name = NAMED_FIELDS.get(name.lower().replace(" ", ""))
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
