"""The text behind keyword search: what a file's FTS5 row holds (its name, folder, embedded
metadata and confident sound tags, split into words) and how any user text becomes a safe
MATCH expression (every FTS5 operator quoted, English endings stemmed to prefixes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

_SEPARATORS = re.compile(r"[_\-.\s]+")
_CAMEL = re.compile(
    r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])"
)
# The same runs of letters and digits that FTS5's unicode61 tokenizer calls tokens.
_TOKEN = re.compile(r"[^\W_]+")
# Dropped from a query unless nothing else is left: sentences like "a dog barks in the rain"
# are what the hybrid search passes, and these words name no sound.
_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or over the then there this "  # noqa: SIM905
    "to under while with".split()
)
_MAX_QUERY_TERMS = 32


def words(text: str) -> str:
    """`DogBark_02-loud` → "DogBark 02 loud Dog Bark": the words, then camelCase split."""
    plain = _SEPARATORS.sub(" ", text).strip()
    extra = [s for w in plain.split() if (s := _CAMEL.sub(" ", w)) != w]
    return " ".join([plain, *extra])


def fts_document(
    path: str, tags: Mapping[str, str], sound_tags: Sequence[str] = ()
) -> tuple[str, str, str]:
    """The (name, folder, tags) columns of a file's FTS row: name without extension; the tags
    column holds the embedded metadata's values, then the names of the sound tags the model is
    sure of (`confident_tags`). (Schema v4's `meta` column: `fts_meta`.)"""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    parts = [p for p in Path(folder).parts if p.strip("/\\")]
    return words(stem), " ".join(words(p) for p in parts), " ".join([*tags.values(), *sound_tags])


def fts_meta(meta: Mapping | None) -> str:
    """The `meta` column of a file's FTS row: the words of its embedded metadata record
    (description, title, FX name, keywords, categories... `metadata.search_text`), with
    CamelCase words such as a UCS CatID also split ("DOORWood" → "DOORWood DOOR Wood")."""
    if not meta:
        return ""
    from earshot.audio.metadata import search_text

    return words(search_text(meta))


def content_words(text: str) -> list[str]:
    """The words of `text` a keyword search looks for: lower-cased, once each, stopwords left
    out (all of them kept when that leaves none), at most the query's term limit."""
    found = list(dict.fromkeys(w.lower() for w in _TOKEN.findall(text)))
    return ([w for w in found if w not in _STOPWORDS] or found)[:_MAX_QUERY_TERMS]


_VOWELS = frozenset("aeiouy")


def stem(word: str) -> str:
    """The head of an English word that its other forms share, searched as a prefix so that a
    query's "barking", "slams" or "footsteps" also finds a name's "bark", "slam" or
    "footstep" (the keyword text is not stemmed: FTS5's unicode61 tokens). Only the plain
    endings -ing, -ed, -es, -s, leaving a head of 4+ letters with a vowel ("string" and "news"
    stay whole); a doubled last consonant loses one ("slammed" → "slam")."""
    w = word.lower()
    sibilant = w.endswith(("ches", "shes")) or (w.endswith("es") and w[-3:-2] in ("s", "x", "z"))
    if len(w) >= 6 and w.endswith("ing"):
        head = w[:-3]
    elif len(w) >= 5 and (w.endswith("ed") or sibilant):
        head = w[:-2]
    elif len(w) >= 5 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        head = w[:-1]
    else:
        return w
    if len(head) >= 5 and head[-1] == head[-2] and head[-1] not in _VOWELS | {"s", "l"}:
        head = head[:-1]
    return head if len(head) >= 4 and _VOWELS & set(head) else w


def query_terms(text: str) -> list[str]:
    """What a keyword search looks for in `text`: each content word's `stem`, searched as a
    prefix where it has 3+ letters and whole where shorter."""
    return [stem(w) for w in content_words(text)]


def fts_query(text: str) -> str | None:
    """A MATCH expression for any user text: its words, each quoted, OR-ed; None if no words.

    Quoting makes every FTS5 operator (AND, NEAR, *, ", :, ^, parentheses) a plain word; words of
    three or more letters also match as prefixes ("bark" finds "barking"), from their `stem`
    ("barking" finds "bark").
    """
    terms = []
    for word in query_terms(text):
        quoted = '"' + word.replace('"', '""') + '"'
        terms.append(quoted + "*" if len(word) >= 3 else quoted)
    return " OR ".join(terms) or None


def matching_tags(text: str, names: Sequence[str]) -> tuple[str, ...]:
    """Those of the tag `names` that the words of `text` name as its keyword search matches
    them (`fts_query`): some word of the tag begins with a query word's `stem` (3+ letters),
    or is it (shorter); in `names`' order. "a dog barking" names "Dog" and "Bark", not
    "Bow-wow"."""
    terms = query_terms(text)
    found = []
    for name in names:
        tokens = [t.lower() for t in _TOKEN.findall(name)]
        if any(t.startswith(w) if len(w) >= 3 else t == w for w in terms for t in tokens):
            found.append(name)
    return tuple(found)


def fts_phrase(text: str) -> str | None:
    """A MATCH expression for one exact phrase: its words in order, as one quoted FTS5 phrase
    (so no operator survives), the last word also a prefix when it has 3+ letters; None if
    `text` has no words."""
    found = [w.lower() for w in _TOKEN.findall(str(text))][:_MAX_QUERY_TERMS]
    if not found:
        return None
    quoted = '"' + " ".join(found).replace('"', '""') + '"'
    return quoted + "*" if len(found[-1]) >= 3 else quoted
