"""The search box's syntax, as Freesound and Soundminer users know it; pure, no catalogue.

    rain on a tin roof -thunder "field recording" dur:<30 ext:wav sr:>=48000 ch:2

- `-word` / `-"some words"`: leave out files whose keyword document (file name, folder names,
  embedded metadata, confident sound tags: the whole `files_fts` row) holds the word / phrase;
- `"exact phrase"`: keep only files whose keyword document holds the phrase (FTS5 phrase);
- fields, `name:value` (the value may be quoted: `folder:"my foley"`):
  `dur:` seconds (`<30`, `<=30`, `>2.5`, `>=1`, `=4`, `4`, `1..5`, `..5`, `2..`; units `ms`, `s`,
  `m`/`min`), `ext:` / `format:` (`wav`, `wav,flac`), `tag:` (a sound tag; repeatable: all),
  `folder:` (a folder name or a path: `foley`, `sfx/foley`, `~/Sounds`, `/abs/path`),
  `sr:` (Hz: `48000`, `48k`, `>=44.1k`, ranges as dur), `ch:` (`2`, `>=2`, `mono`, `stereo`);
- the rest is the description the sound ranking reads. A negated part ("dogs, no people",
  "rain without thunder") is split off as `negative` for the semantic penalty.

Only those field names are fields: any other `word:word` stays in the description. A malformed
field value is a `QuerySyntaxError` naming it and the forms it takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from earshot.errors import SearchError


class QuerySyntaxError(SearchError):
    """A field or quote of the query that cannot be read."""


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range; None = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None

    def both(self, other: Range | None) -> Range:
        """The intersection of two ranges (`dur:>1 dur:<5`)."""
        if other is None:
            return self
        lo = max((v for v in (self.lo, other.lo) if v is not None), default=None)
        hi = min((v for v in (self.hi, other.hi) if v is not None), default=None)
        return Range(lo, hi)

    def contains(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)


@dataclass(frozen=True)
class ParsedQuery:
    text: str  # the description, as typed minus the operators (negated part included)
    positive: str  # the description without its negated part
    negative: str | None = None  # the negated part ("people" of "dogs, no people")
    phrases: tuple[str, ...] = ()  # required in the keyword document
    exclude: tuple[str, ...] = ()  # words or phrases that leave a file out
    duration: Range | None = None
    sample_rate: Range | None = None
    channels: Range | None = None
    formats: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    fields: dict = field(default_factory=dict, compare=False)  # raw field values, as typed

    def has_filters(self) -> bool:
        return bool(
            self.phrases
            or self.exclude
            or self.duration
            or self.sample_rate
            or self.channels
            or self.formats
            or self.tags
            or self.folders
        )


FIELDS = {
    "dur": "dur",
    "duration": "dur",
    "len": "dur",
    "length": "dur",
    "ext": "ext",
    "format": "ext",
    "type": "ext",
    "tag": "tag",
    "folder": "folder",
    "dir": "folder",
    "path": "folder",
    "sr": "sr",
    "samplerate": "sr",
    "rate": "sr",
    "ch": "ch",
    "channels": "ch",
}
_FORMS = {
    "dur": "dur:<30, dur:>=2.5, dur:1..5, dur:<500ms, dur:>2m",
    "sr": "sr:48000, sr:>=44.1k, sr:44100..96000",
    "ch": "ch:1, ch:2, ch:>=2, ch:mono, ch:stereo",
    "ext": "ext:wav, ext:wav,flac",
    "tag": 'tag:dog, tag:"Domestic animals, pets"',
    "folder": "folder:foley, folder:sfx/foley, folder:~/Sounds",
}
# One token: a field with an optionally quoted value, -"phrase", "phrase", or a bare word.
_TOKEN = re.compile(
    r"""
    (?P<neg>-)?(?P<field>[A-Za-z]+):(?:"(?P<qval>[^"]*)"|(?P<val>\S*))
  | (?P<xneg>-)?"(?P<phrase>[^"]*)"
  | (?P<word>\S+)
    """,
    re.VERBOSE,
)
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_COMPARE = re.compile(rf"^(<=|>=|<|>|=)?{_NUMBER}([a-z]*)$")
_SPAN = re.compile(rf"^(?:{_NUMBER}([a-z]*))?\.\.(?:{_NUMBER}([a-z]*))?$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0}
_RATE_UNITS = {"": 1.0, "hz": 1.0, "k": 1000.0, "khz": 1000.0}
_CHANNEL_WORDS = {"mono": 1, "stereo": 2}
# A negated part: "dogs, no people", "rain without thunder", "birds but not traffic".
_NEGATION = re.compile(
    r"(?:,|;)?\s+(?:but\s+)?(?:without|no|not|minus|except)\s+(?P<neg>\S.*)$", re.IGNORECASE
)


def parse_query(query: str) -> ParsedQuery:
    """Split a search-box string into its description, keyword operators and fields."""
    if query.count('"') % 2:
        raise QuerySyntaxError(
            f"unclosed quote in '{_short(query)}': an exact phrase is written between two "
            'double quotes, e.g. "door slam"'
        )
    words: list[str] = []
    phrases: list[str] = []
    exclude: list[str] = []
    ranges: dict[str, Range] = {}
    formats: list[str] = []
    tags: list[str] = []
    folders: list[str] = []
    raw: dict[str, list[str]] = {}
    for m in _TOKEN.finditer(query):
        if m.group("field") is not None and m.group("field").lower() in FIELDS:
            name = FIELDS[m.group("field").lower()]
            typed = m.group(0).lstrip("-")
            value = m.group("qval") if m.group("qval") is not None else m.group("val")
            value = value.strip()
            if m.group("neg"):
                raise QuerySyntaxError(
                    f"'{_short(m.group(0))}': a field cannot be negated; "
                    f"-word leaves out a word, and {name}: takes {_FORMS[name]}"
                )
            if not value:
                raise QuerySyntaxError(f"'{_short(typed)}' has no value: {_FORMS[name]}")
            raw.setdefault(name, []).append(value)
            if name in ("dur", "sr", "ch"):
                parsed = _range(name, value, typed)
                ranges[name] = parsed.both(ranges.get(name))
                lo, hi = ranges[name].lo, ranges[name].hi
                if lo is not None and hi is not None and lo > hi:
                    raise QuerySyntaxError(f"'{_short(typed)}': no value can match {name}: here")
            elif name == "ext":
                formats += [f.strip().lstrip(".").lower() for f in value.split(",") if f.strip()]
            elif name == "tag":
                tags.append(value)
            else:
                folders.append(value)
        elif m.group("phrase") is not None:
            text = " ".join(m.group("phrase").split())
            if text:
                (exclude if m.group("xneg") else phrases).append(text)
        else:
            word = m.group(0)
            if len(word) > 1 and word[0] == "-" and (word[1].isalnum()):
                exclude.append(word[1:])
            else:
                words.append(word)
    text = " ".join(words)
    positive, negative = split_negation(text)
    return ParsedQuery(
        text=text,
        positive=positive,
        negative=negative,
        phrases=tuple(dict.fromkeys(phrases)),
        exclude=tuple(dict.fromkeys(exclude)),
        duration=ranges.get("dur"),
        sample_rate=ranges.get("sr"),
        channels=ranges.get("ch"),
        formats=tuple(dict.fromkeys(formats)),
        tags=tuple(dict.fromkeys(tags)),
        folders=tuple(dict.fromkeys(folders)),
        fields=raw,
    )


def split_negation(text: str) -> tuple[str, str | None]:
    """("dogs", "people") for "dogs, no people"; (text, None) when nothing is negated, or when
    the negation has nothing before it ("no signal" is a description, not a negation)."""
    m = _NEGATION.search(" " + text)
    if m is None:
        return text, None
    before = (" " + text)[: m.start()].strip(" ,;")
    negated = m.group("neg").strip(" ,;.")
    if not before or not negated:
        return text, None
    return before, negated


def _range(name: str, value: str, typed: str) -> Range:
    """A field's value as an inclusive Range (a strict bound moves to the next value)."""
    v = value.strip().lower()
    if name == "ch" and v in _CHANNEL_WORDS:
        n = float(_CHANNEL_WORDS[v])
        return Range(n, n)
    units = _DURATION_UNITS if name == "dur" else _RATE_UNITS if name == "sr" else {"": 1.0}
    m = _SPAN.match(v)
    if m is not None and (m.group(1) or m.group(3)):
        lo = _number(m.group(1), m.group(2), units, name, typed)
        hi = _number(m.group(3), m.group(4), units, name, typed)
        return Range(lo, hi)
    m = _COMPARE.match(v)
    if m is None:
        raise QuerySyntaxError(_malformed(name, typed))
    op = m.group(1) or "="
    n = _number(m.group(2), m.group(3), units, name, typed)
    integer = name in ("sr", "ch")
    if op == "=":
        return Range(n, n)
    if op == "<=":
        return Range(None, n)
    if op == ">=":
        return Range(n, None)
    if op == "<":
        return Range(None, (math.ceil(n) - 1) if integer else math.nextafter(n, -math.inf))
    return Range((math.floor(n) + 1) if integer else math.nextafter(n, math.inf), None)


def _number(digits: str | None, unit: str | None, units: dict, name: str, typed: str):
    if digits is None:
        return None
    if (unit or "") not in units:
        raise QuerySyntaxError(_malformed(name, typed))
    return float(digits) * units[unit or ""]


def _malformed(name: str, typed: str) -> str:
    what = {
        "dur": "a duration is seconds",
        "sr": "a sample rate is Hz",
        "ch": "a channel count is a whole number",
    }[name]
    return f"cannot read '{_short(typed)}': {what}, e.g. {_FORMS[name]}"


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def fts_phrase(text: str) -> str | None:
    """An FTS5 MATCH expression for one exact phrase (its words, in order); None if no words.

    Quoted as one FTS5 string, so no operator in `text` is read as one."""
    found = re.findall(r"[^\W_]+", text.lower())
    if not found:
        return None
    return '"' + " ".join(found).replace('"', '""') + '"'
