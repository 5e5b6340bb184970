"""Real human captions for label-only audio, mined from caption corpora by pattern.

UrbanSound8K says "dog_bark"; people write "a dog barks loudly in the distance". Clotho and
AudioCaps hold 80k such sentences without their audio. A sentence is taken for a label when it
matches the label's `include` pattern, none of the patterns that describe *other* sounds
(another label's include, the label's own `exclude`, and words that announce a second event:
"while", "then"...), and is short. The pick is deterministic: sorted by a hash of the text, so
adding a corpus row does not reshuffle every label.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from earshot.errors import EarshotError

# Words that announce a second sound event: a one-label clip must not learn them.
SECOND_EVENT = re.compile(
    r"\b(while|then|followed|before|after|meanwhile|as well as|along with|together with|"
    r"accompanied|in the background|alongside|interrupted|"
    # "... and a woman speaks", "... as people talk": a second subject joins in
    r"(and|as|with|over|under|plus)\s+(a|an|the|someone|somebody|people|some|other|another|"
    r"several|many|two|three|men|women|birds?|cars?|music))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MiningRule:
    include: re.Pattern
    exclude: re.Pattern | None = None


def compile_rules(rules: Mapping[str, Mapping[str, str]]) -> dict[str, MiningRule]:
    out = {}
    for label, rule in rules.items():
        try:
            include = re.compile(rule["include"], re.IGNORECASE)
            exclude = re.compile(rule["exclude"], re.IGNORECASE) if rule.get("exclude") else None
        except (KeyError, re.error) as e:
            raise EarshotError(f"mining rule for '{label}' is invalid: {e}") from None
        out[label] = MiningRule(include, exclude)
    return out


def read_corpus(path: Path, column: str) -> list[str]:
    """One column of a caption CSV, stripped, blank rows dropped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise EarshotError(f"cannot read caption corpus '{path}': {e}") from None
    if rows and column not in rows[0]:
        raise EarshotError(f"caption corpus '{path}' has no column '{column}'")
    return [(r[column] or "").strip() for r in rows if (r.get(column) or "").strip()]


def normalise(sentence: str) -> str:
    """Case, spacing and end punctuation folded: how captions are compared for overlap."""
    return re.sub(r"\s+", " ", sentence.strip().lower()).rstrip(" .!?")


def mine_captions(
    sentences: Iterable[str],
    rules: Mapping[str, MiningRule],
    per_label: int = 40,
    max_words: int = 14,
    forbidden: Iterable[str] = (),
    exclude: re.Pattern | None = None,
) -> dict[str, list[str]]:
    """label → up to `per_label` distinct sentences that describe only that label's sound.

    `forbidden` sentences (compared normalised) are never picked: the held-out queries.
    `exclude` rules a sentence out for every label (sounds none of the labels are).
    """
    banned = {normalise(s) for s in forbidden}
    seen: set[str] = set()
    unique = []
    for s in sentences:
        key = normalise(s)
        if key and key not in seen and key not in banned:
            seen.add(key)
            unique.append(s.strip())
    unique.sort(key=lambda s: hashlib.sha1(normalise(s).encode()).hexdigest())
    picked: dict[str, list[str]] = {label: [] for label in rules}
    for s in unique:
        if len(s.split()) > max_words or SECOND_EVENT.search(s) or s.count(",") > 1:
            continue
        if exclude is not None and exclude.search(s):
            continue
        matches = [label for label, rule in rules.items() if rule.include.search(s)]
        if len(matches) != 1:
            continue  # no label, or two sounds at once
        label = matches[0]
        rule = rules[label]
        if rule.exclude is not None and rule.exclude.search(s):
            continue
        if len(picked[label]) < per_label:
            picked[label].append(s)
    return picked


# Words a label's name shares with every other: not what tells sounds apart.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "into",
        "onto",
        "with",
        "and",
        "or",
        "to",
        "at",
        "by",
        "for",
        "from",
        "being",
        "is",
        "are",
        "some",
        "sound",
        "sounds",
        "noise",
        "note",
        "hit",
    ]
)


def label_words(label: str) -> list[str]:
    """The content words of a label's name, cut to a stem: "footsteps on gravel" →
    ["footstep", "gravel"], "glass breaking" → ["glass", "break"]."""
    words = [w for w in re.findall(r"[a-z]+", label.lower()) if w not in STOPWORDS]
    stems = []
    for w in words:
        for suffix in ("ing", "es", "ed", "s"):
            if w.endswith(suffix) and len(w) - len(suffix) >= 4:
                w = w[: -len(suffix)]
                break
        stems.append(w)
    return stems


def mine_by_label_words(
    sentences: Iterable[str],
    labels: Iterable[str],
    per_label: int = 5,
    max_words: int = 14,
    forbidden: Iterable[str] = (),
) -> dict[str, list[str]]:
    """label → up to `per_label` real sentences holding every content word of the label's
    name (as a word start), one event only; a sentence goes to the label it matches with the
    most words ("footsteps on gravel" before "footstep"), none where two tie.

    What `earshot evaluate` uses as real-caption queries for labels read from file names."""
    banned = {normalise(s) for s in forbidden}
    rules = {}
    for label in labels:
        stems = label_words(label)
        if stems:
            rules[label] = (len(stems), [re.compile(rf"\b{re.escape(s)}", re.I) for s in stems])
    unique: dict[str, str] = {}
    for s in sentences:
        key = normalise(s)
        if key and key not in banned and key not in unique:
            unique[key] = s.strip()
    ordered = sorted(unique.values(), key=lambda s: hashlib.sha1(normalise(s).encode()).hexdigest())
    picked: dict[str, list[str]] = {}
    for s in ordered:
        if len(s.split()) > max_words or SECOND_EVENT.search(s) or s.count(",") > 1:
            continue
        hits = [(n, label) for label, (n, pats) in rules.items() if all(p.search(s) for p in pats)]
        if not hits:
            continue
        best = max(n for n, _ in hits)
        top = [label for n, label in hits if n == best]
        if len(top) != 1:
            continue
        got = picked.setdefault(top[0], [])
        if len(got) < per_label:
            got.append(s)
    return picked
