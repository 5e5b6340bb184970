"""The one record a file's embedded metadata is read into (`Metadata`), and how its values are
cleaned: every value one tidy, bounded string, the first source to give a field keeps it.
`earshot.audio.metadata` reads files into it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_VALUE_CHARS = 2000  # each value cut to this
MAX_RAW = 64  # raw key/values kept per file
MAX_KEYWORDS = 64

# Field names as tag formats spell them (Vorbis comments, iXML USER, ID3 TXXX, MP4 freeform),
# lower-cased → the normalised field.
NAMED_FIELDS = {
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
