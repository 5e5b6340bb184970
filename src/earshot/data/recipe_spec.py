"""What a training recipe is once read (`Recipe`, `LabelSpec`): its sources and labels, and
what it gives training and evaluation: each label's captions (written, expanded through the
templates, mined from caption corpora), the held-out queries of the test and val splits, the
real-caption queries, the two-sound mixture captions, and a split as a `CaptionDataset`.

Reading a recipe's TOML, with its checks, is `data/recipe.py`.
"""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.data.datasets import CaptionDataset, Clip, DatasetError
from earshot.data.mining import (
    compile_rules,
    mine_by_label_words,
    mine_captions,
    read_corpus,
)
from earshot.data.splits import SPLIT_NAMES, SourceSpec, source_rows, stable_hash


def _pattern(text: str | None):
    import re

    try:
        return re.compile(text, re.IGNORECASE) if text else None
    except re.error as e:
        raise DatasetError(f"mining.exclude is not a valid pattern: {e}") from None


@dataclass(frozen=True)
class LabelSpec:
    name: str
    nouns: tuple[str, ...] = ()
    sentences: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    mine: dict[str, str] | None = None
    queries: tuple[str, ...] = ()
    val_queries: tuple[str, ...] = ()
    mix: bool = False  # may be mixed with other `mix` labels into two-sound clips
    plain: bool = False  # phrases used as written, not expanded through the templates
    # Read from a source's CSV (`auto_labels`): the label's own words are its noun phrase,
    # trained through the `auto` templates only, and held out as written as its test query.
    auto: bool = False


@dataclass
class Recipe:
    path: Path
    root: Path
    sources: list[SourceSpec]
    labels: dict[str, LabelSpec]
    tag_captions: dict[str, tuple[str, ...]]
    noun_templates: tuple[str, ...]
    sentence_templates: tuple[str, ...]
    mixture_templates: tuple[str, ...]
    val_captions: int
    mining: dict[str, Any]
    auto_templates: tuple[str, ...] = ("the sound of {np}",)
    caption_spec: dict[str, Any] = field(default_factory=dict)
    auto_mining: dict[str, Any] = field(default_factory=dict)
    _mined: dict[str, list[str]] | None = field(default=None, repr=False)
    _auto_mined: dict[str, list[str]] | None = field(default=None, repr=False)

    # -- captions -------------------------------------------------------------------------
    def label_captions(self, label: str) -> list[str]:
        """Template-expanded and free-form captions of one label, in a fixed order."""
        spec = self.labels[label]
        if spec.plain:
            caps = [*spec.nouns, *spec.sentences]
        elif spec.auto:
            caps = [t.format(np=n) for n in spec.nouns for t in self.auto_templates]
        else:
            caps = [t.format(np=n) for n in spec.nouns for t in self.noun_templates]
            caps += [t.format(s=s) for s in spec.sentences for t in self.sentence_templates]
        caps += list(spec.captions)
        return list(dict.fromkeys(c[0].upper() + c[1:] if c else c for c in caps))

    def _corpus_sentences(self, corpora, warn: bool = True) -> list[str]:
        """The sentences of `[[path, column], ...]` below the recipe's root; a missing corpus
        is left out (with a warning unless not `warn`)."""
        sentences: list[str] = []
        for rel, column in corpora:
            path = self.root / rel
            if path.is_file():
                sentences += read_corpus(path, column)
            elif warn:
                warnings.warn(f"caption corpus {path} not found: mining without it", stacklevel=3)
        return sentences

    def mined(self) -> dict[str, list[str]]:
        """Corpus sentences per label (computed once; empty where no corpus is present)."""
        if self._mined is None:
            rules = {n: s.mine for n, s in self.labels.items() if s.mine}
            sentences = self._corpus_sentences(self.mining.get("corpora", []))
            self._mined = mine_captions(
                sentences,
                compile_rules(rules),
                per_label=int(self.mining.get("per_label", 40)),
                max_words=int(self.mining.get("max_words", 14)),
                forbidden=self.all_queries() + self.all_val_queries(),
                exclude=_pattern(self.mining.get("exclude")),
            )
        return self._mined

    def auto_mined(self) -> dict[str, list[str]]:
        """Real captions for the labels read from file names (`[auto_mining] corpora`):
        sentences holding every content word of a label's name, as `caption_queries` picks its
        queries but from other corpora (the training splits of Clotho and AudioCaps), so the
        text side learns how people caption these sounds. Labels held out of training (the
        zero-shot ones) get none; a sentence that matches one of them best goes to no label."""
        if self._auto_mined is None:
            spec = self.auto_mining
            self._auto_mined = {}
            if spec:
                auto = [n for n, s in self.labels.items() if s.auto]
                held = set().union(
                    *(s.zeroshot_labels | s.zeroshot_val_labels for s in self.sources)
                )
                sentences = self._corpus_sentences(spec.get("corpora", []))
                picked = mine_by_label_words(
                    sentences,
                    auto,
                    per_label=int(spec.get("per_label", 20)),
                    max_words=int(spec.get("max_words", 14)),
                    forbidden=self.all_queries() + self.all_val_queries(),
                )
                self._auto_mined = {k: v for k, v in picked.items() if k not in held}
        return self._auto_mined

    def training_captions(
        self, label: str, auto_mined: bool = True
    ) -> list[tuple[str, frozenset[str]]]:
        """Every caption a training clip of `label` may be paired with, with its tags."""
        own = frozenset([label])
        caps = [(c, own) for c in self.label_captions(label)]
        caps += [(c, own) for c in self.mined().get(label, [])]
        if auto_mined:
            caps += [(c, own) for c in self.auto_mined().get(label, [])]
        for tag in self.labels[label].tags:
            caps += [(c, frozenset([tag])) for c in self.tag_captions.get(tag, ())]
        return caps

    def all_queries(self) -> list[str]:
        return [q for spec in self.labels.values() for q in spec.queries]

    def all_val_queries(self) -> list[str]:
        return [q for spec in self.labels.values() for q in spec.val_queries]

    def queries(self) -> dict[str, list[str]]:
        """The held-out paraphrases per label (labels without any are left out)."""
        return {n: list(s.queries) for n, s in self.labels.items() if s.queries}

    def caption_queries(self) -> dict[str, list[str]]:
        """Real human captions (from `[caption_queries] corpora`) as held-out queries for the
        labels read from file names: sentences holding every content word of the label's name
        (data/mining.py `mine_by_label_words`), never a training caption or another query."""
        spec = self.caption_spec
        if not spec:
            return {}
        labels = [n for n, s in self.labels.items() if s.auto and s.queries]
        sentences = self._corpus_sentences(spec.get("corpora", []), warn=False)
        # Not the auto-mined training captions: those come from other corpora, and leaving them
        # out keeps the query set the same with or without [auto_mining].
        forbidden = [
            c for label in self.labels for c, _ in self.training_captions(label, auto_mined=False)
        ]
        forbidden += self.all_queries() + self.all_val_queries()
        return mine_by_label_words(
            sentences,
            labels,
            per_label=int(spec.get("per_label", 5)),
            max_words=int(spec.get("max_words", 14)),
            forbidden=forbidden,
        )

    def val_queries(self) -> dict[str, list[str]]:
        """The val split's paraphrases per label: what validation (and model selection) scores."""
        return {n: list(s.val_queries) for n, s in self.labels.items() if s.val_queries}

    def mixture_captions(self, per_pair: int = 6) -> list[tuple[str, frozenset[str]]]:
        """Captions for two-sound mixtures of `mix` labels: "a siren wails while a dog barks"."""
        mixable = sorted(n for n, s in self.labels.items() if s.mix)
        out = []
        for a, b in itertools.permutations(mixable, 2):
            sa, sb = self.labels[a], self.labels[b]
            options = [
                t.format(s1=s1, s2=s2, np1=n1, np2=n2)
                for t in self.mixture_templates
                for s1, s2 in itertools.product(sa.sentences or sa.nouns, sb.sentences or sb.nouns)
                for n1, n2 in [(sa.nouns[0] if sa.nouns else s1, sb.nouns[0] if sb.nouns else s2)]
            ]
            options = sorted(set(options), key=lambda c: stable_hash(c))[:per_pair]
            out += [(c[0].upper() + c[1:], frozenset([a, b])) for c in options]
        return out

    # -- splits ---------------------------------------------------------------------------
    def dataset(self, split: str) -> CaptionDataset:
        if split not in SPLIT_NAMES:
            raise DatasetError(
                f"a recipe's split is one of {', '.join(SPLIT_NAMES)}, not '{split}'"
            )
        clips: list[Clip] = []
        problems: Counter = Counter()
        for source in self.sources:
            for key, path, label, recording in source_rows(source, split, self.labels, problems):
                clip = self._clip(source, key, path, label, split, recording)
                if clip is None:
                    problems[f"{split} clips of labels without queries"] += 1
                    continue
                clips.append(clip)
        problems = Counter({k: v for k, v in problems.items() if v})
        if problems:
            warnings.warn(f"recipe {self.path.name} [{split}]: {dict(problems)}", stacklevel=2)
        if not clips:
            raise DatasetError(f"recipe '{self.path}' has no clips in split '{split}'")
        return CaptionDataset(f"recipe:{self.path.name}", split, tuple(clips), dict(problems))

    def _clip(
        self, source: SourceSpec, key: str, path: Path, label: str, split: str, recording: str
    ):
        tags = frozenset([label, *self.labels[label].tags, *source.tags])
        if split == "train":
            pairs = self.training_captions(label)
            pairs += [
                (c, frozenset([t])) for t in source.tags for c in self.tag_captions.get(t, ())
            ]
        elif split == "val" and self.labels[label].val_queries:
            pairs = [(q, frozenset([label])) for q in self.labels[label].val_queries]
        elif split == "val":
            caps = self.label_captions(label)
            step = max(1, len(caps) // max(1, self.val_captions))
            pairs = [(c, frozenset([label])) for c in caps[::step][: self.val_captions]]
        else:
            if not self.labels[label].queries:
                return None
            pairs = [(q, frozenset([label])) for q in self.labels[label].queries]
        pairs = list(dict((c, t) for c, t in pairs).items())
        return Clip(
            key,
            path,
            tuple(c for c, _ in pairs),
            label,
            tags=tags,
            caption_tags=tuple(t for _, t in pairs),
            weight=source.weight,
            recording=recording,
        )
