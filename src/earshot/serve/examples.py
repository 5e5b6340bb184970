"""The page's example searches and format menus, from what this catalogue and model know.

Fixed example strings asked for sounds a model might never have heard of; these come from the
catalogue instead: the sound tags its files carry most (a tagging model's own vocabulary), else
the keywords and categories of its files' embedded metadata, then the commonest words of its file
names (a sound library's names say what the files are).
"""

from __future__ import annotations

import re
from collections import Counter

N_EXAMPLES = 6
# Words of file names that say nothing about the sound.
# fmt: off
_STOP = frozenset([
    "the", "and", "for", "with", "from", "take", "takes", "mix", "mono", "stereo", "left",
    "right", "final", "edit", "new", "old", "copy", "version", "ver", "alt", "untitled", "track",
    "audio", "sound", "sounds", "file", "recording", "rec", "wav", "flac", "mp3", "aif", "aiff",
    "ogg",
])
# fmt: on
_WORD = re.compile(r"[^\W\d_]{3,}")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def name_words(names: list[str], n: int = N_EXAMPLES) -> list[str]:
    """The `n` words found in most file names (a word counts once per file), commonest first."""
    counts: Counter[str] = Counter()
    for name in names:
        stem = name.rsplit(".", 1)[0]
        words = dict.fromkeys(w.lower() for w in _WORD.findall(_CAMEL.sub(" ", stem)))
        counts.update(w for w in words if w not in _STOP)
    return [word for word, _ in counts.most_common(n)]


def meta_words(records: list[dict], n: int = N_EXAMPLES) -> list[str]:
    """The `n` keywords and categories found in most files' embedded metadata (a library's own
    words for its sounds), commonest first."""
    counts: Counter[str] = Counter()
    for meta in records:
        ucs = meta.get("ucs") if isinstance(meta.get("ucs"), dict) else {}
        words = [*(meta.get("keywords") or ()), ucs.get("category") or meta.get("category")]
        found = dict.fromkeys(str(w).strip().lower() for w in words if w and str(w).strip())
        counts.update(list(found))  # a word counts once per file
    return [word for word, _ in counts.most_common(n)]


def examples(
    tag_menu: list[tuple[str, int]],
    names: list[str],
    records: list[dict] = (),
    n: int = N_EXAMPLES,
) -> dict:
    """{"source": "tags" | "metadata" | "names" | "none", "examples": [text, ...]}: the model's
    commonest tags, else the files' metadata keywords (then name words to fill up), else the
    words of their names."""
    if tag_menu:
        return {"source": "tags", "examples": [name.lower() for name, _ in tag_menu[:n]]}
    words = meta_words(list(records), n)
    source = "metadata" if words else "names"
    for word in name_words(names, 2 * n):
        if len(words) >= n:
            break
        if word not in words:
            words.append(word)
    return {"source": source if words else "none", "examples": words}


def facets(raw: dict[str, list[tuple]]) -> dict:
    """`Catalogue.facets()` as JSON: {"formats": [{"value": "wav", "files": 3}], ...}."""
    return {key: [{"value": v, "files": n} for v, n in rows] for key, rows in raw.items()}
