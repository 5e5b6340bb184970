"""Training recipes: several labelled folders + the language that describes their sounds.

A recipe is a TOML file (the default model's is `configs/default-data.toml`). It names
`labels.csv` folders (`[[source]]`), how each splits into train / val / test, and for every
label the words people use for it: noun phrases and sentences expanded through templates,
free-form captions, patterns that mine real human captions from caption corpora, the tags it
implies ("dog_bark" is also "dog" and "animal"), and two sets of held-out paraphrases, never
trained on: `queries`, which only the test split uses, so reported figures measure language the
model never saw, and `val_queries`, written apart from them, which the val split uses (where a
label has them) so that choosing the best epoch rewards wording that generalises, not only
recordings that do.

How a source's rows split into train / val / test (by row filters, and val by whole
recordings) is data/splits.py.

`load_dataset("recipe.toml", split)` returns the split as a `CaptionDataset` whose clips carry
tags and per-caption tags; the training loop treats a caption as matching every clip whose tags
include the caption's tags, so "music playing" matches the jazz tune and the street band alike.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import tomllib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.data.datasets import CaptionDataset, Clip, DatasetError
from earshot.data.mining import (
    compile_rules,
    mine_by_label_words,
    mine_captions,
    normalise,
    read_corpus,
)
from earshot.data.splits import SPLIT_NAMES, SourceSpec, is_zeroshot, source_rows, stable_hash


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


def _pattern(text: str | None):
    import re

    try:
        return re.compile(text, re.IGNORECASE) if text else None
    except re.error as e:
        raise DatasetError(f"mining.exclude is not a valid pattern: {e}") from None


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{what} must be a list of strings")
    return tuple(value)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"recipe '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DatasetError(f"cannot read recipe '{path}': {e}") from None
    doc = _with_included(doc, path)
    # [zeroshot] fraction: that share of the CSV labels (auto_labels) is never trained on
    zeroshot = float(doc.get("zeroshot", {}).get("fraction", 0.0))
    # [zeroshot] val_fraction: the next share of labels, held out of training for val
    zeroshot_val = float(doc.get("zeroshot", {}).get("val_fraction", 0.0))
    if not (0.0 <= zeroshot < 1.0 and zeroshot_val >= 0.0 and zeroshot + zeroshot_val < 1.0):
        raise DatasetError(
            f"recipe '{path}': zeroshot.fraction and val_fraction must be >= 0, sum below 1"
        )
    root = (path.parent / doc.get("root", ".")).resolve()
    if not root.is_dir():
        raise DatasetError(
            f"recipe '{path}' reads its audio from '{root}', which does not exist "
            f"(the default recipe expects the shared data folder beside the repository)"
        )
    labels = {}
    for name, spec in doc.get("labels", {}).items():
        unknown = set(spec) - {
            "np",
            "s",
            "captions",
            "tags",
            "mine",
            "queries",
            "val_queries",
            "mix",
            "plain",
        }
        if unknown:
            raise DatasetError(f"label '{name}' in '{path}' has unknown keys {sorted(unknown)}")
        labels[name] = LabelSpec(
            name,
            nouns=_strings(spec.get("np"), f"labels.{name}.np"),
            sentences=_strings(spec.get("s"), f"labels.{name}.s"),
            captions=_strings(spec.get("captions"), f"labels.{name}.captions"),
            tags=_strings(spec.get("tags"), f"labels.{name}.tags"),
            mine=spec.get("mine"),
            queries=_strings(spec.get("queries"), f"labels.{name}.queries"),
            val_queries=_strings(spec.get("val_queries"), f"labels.{name}.val_queries"),
            mix=bool(spec.get("mix", False)),
            plain=bool(spec.get("plain", False)),
        )
    sources = []
    for s in doc.get("source", []):
        val = s.get("val", {})
        test = s.get("test")
        carve = test if isinstance(test, dict) else {}
        if sorted(set(carve) - {"group", "fraction", "every_label"}):
            raise DatasetError(
                f"recipe '{path}': source '{s.get('name')}' test carve takes group, "
                f"fraction and every_label, got {sorted(carve)}"
            )
        unknown = sorted(set(val) - {"group", "fraction", "every_label"})
        if unknown:
            raise DatasetError(
                f"recipe '{path}': source '{s.get('name')}' val has unknown key(s) "
                f"{', '.join(unknown)} (known: group, fraction, every_label)"
            )
        sources.append(
            SourceSpec(
                name=s["name"],
                folder=root / s["folder"],
                label_column=s.get("label_column", "label"),
                train=s.get("train", "all"),
                test=None if carve else test,
                test_group=carve.get("group"),
                test_fraction=float(carve.get("fraction", 0.0)),
                test_every_label=int(carve.get("every_label", 0)),
                auto_labels=bool(s.get("auto_labels", False)),
                val_group=val.get("group"),
                val_fraction=float(val.get("fraction", 0.0)),
                val_every_label=bool(val.get("every_label", False)),
                tags=_strings(s.get("tags"), f"source {s['name']} tags"),
                weight=float(s.get("weight", 1.0)),
                label_map=dict(s.get("label_map", {})),
            )
        )
    if not sources:
        raise DatasetError(f"recipe '{path}' lists no [[source]]")
    for source in sources:
        if source.auto_labels:
            for name in _csv_labels(source):
                if name not in labels:
                    labels[name] = LabelSpec(name, nouns=(name,), queries=(name,), auto=True)
    # Only labels read from a CSV are held out: a described label is trained by its sources.
    held = frozenset(n for n, s in labels.items() if s.auto and is_zeroshot(n, zeroshot))
    held_val = frozenset(
        n
        for n, s in labels.items()
        if s.auto and n not in held and is_zeroshot(n, zeroshot + zeroshot_val)
    )
    sources = [
        dataclasses.replace(s, zeroshot_labels=held, zeroshot_val_labels=held_val)
        if s.auto_labels
        else s
        for s in sources
    ]
    t = doc.get("templates", {})
    recipe = Recipe(
        path=path,
        root=root,
        sources=sources,
        labels=labels,
        tag_captions={k: _strings(v, f"tags.{k}") for k, v in doc.get("tags", {}).items()},
        noun_templates=_strings(t.get("np", ["{np}"]), "templates.np"),
        sentence_templates=_strings(t.get("s", ["{s}"]), "templates.s"),
        mixture_templates=_strings(t.get("mixture", ["{s1} and {s2}"]), "templates.mixture"),
        auto_templates=_strings(t.get("auto", ["the sound of {np}"]), "templates.auto"),
        caption_spec=dict(doc.get("caption_queries", {})),
        auto_mining=dict(doc.get("auto_mining", {})),
        val_captions=int(doc.get("val_captions", 5)),
        mining=doc.get("mining", {}),
    )
    _drop_taken_auto_queries(recipe)
    check_queries_held_out(recipe)
    return recipe


def _drop_taken_auto_queries(recipe: Recipe) -> None:
    """An auto label whose words are already a training caption elsewhere ("animal sounds" is
    the `animal` tag's caption) cannot be held out as written: it keeps no test query."""
    auto = {n for n, s in recipe.labels.items() if s.auto}
    if not auto:
        return
    taken = {normalise(c) for c in itertools.chain.from_iterable(recipe.tag_captions.values())}
    for name in recipe.labels:
        if name not in auto:
            taken |= {normalise(c) for c, _ in recipe.training_captions(name)}
    for name in auto:
        own = {normalise(c) for c in recipe.label_captions(name)}
        if normalise(name) in taken or normalise(name) in own:
            spec = recipe.labels[name]
            recipe.labels[name] = LabelSpec(**{**spec.__dict__, "queries": ()})


def _with_included(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """`include = "other.toml"`: that recipe's sources, labels, tags, templates and mining
    come first; this file's add to them (a table's keys replace the included ones)."""
    name = doc.pop("include", None)
    if name is None:
        return doc
    base_path = path.parent / name
    try:
        base = _with_included(tomllib.loads(base_path.read_text(encoding="utf-8")), base_path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DatasetError(f"recipe '{path}' includes '{base_path}', which fails: {e}") from None
    if base.get("root", ".") != doc.get("root", base.get("root", ".")):
        raise DatasetError(f"recipe '{path}' and its include '{base_path}' name other roots")
    out = {**base, **{k: v for k, v in doc.items() if k not in ("source", "labels", "tags")}}
    out["source"] = [*base.get("source", []), *doc.get("source", [])]
    for table in ("labels", "tags", "templates", "mining"):
        if table in base or table in doc:
            out[table] = {**base.get(table, {}), **doc.get(table, {})}
    return out


def _csv_labels(source: SourceSpec) -> list[str]:
    """The labels of a source's CSV, in first-seen order (mapped by its label_map)."""
    from earshot.data.datasets import _read_csv

    seen: dict[str, None] = {}
    for r in _read_csv(source.folder / "labels.csv"):
        label = (r.get(source.label_column) or "").strip()
        if label:
            seen[source.label_map.get(label, label)] = None
    return list(seen)


def recipe_for(path: str | Path) -> Recipe:
    """`load_recipe`, once per file version: training reads a recipe for its train split, its
    val split and its mixtures, and mining 80k captions each time cost ~1.4 s."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return load_recipe(path)  # let it raise its own clear error
    return _cached_recipe(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _cached_recipe(path: str, mtime_ns: int, size: int) -> Recipe:
    return load_recipe(path)


def mixture_captions_for(dataset: str) -> list[tuple[str, frozenset[str]]]:
    """Two-sound captions of a training dataset, which must be a recipe with `mix` labels."""
    if not str(dataset).endswith(".toml"):
        raise DatasetError("mix_prob > 0 needs a recipe dataset (.toml) with `mix` labels")
    return recipe_for(dataset).mixture_captions()


def check_queries_held_out(recipe: Recipe, extra: Sequence[str] = ()) -> None:
    """Refuse a recipe whose held-out queries (test or val) also appear among its training
    captions, or whose val queries repeat a test query."""
    tests = {normalise(q): q for q in recipe.all_queries()}
    shared = sorted({q for q in recipe.all_val_queries() if normalise(q) in tests})
    if shared:
        raise DatasetError(
            f"recipe '{recipe.path}': val queries that repeat test queries: "
            + "; ".join(shared[:5])
        )
    queries = {**tests, **{normalise(q): q for q in recipe.all_val_queries()}}
    training = [c for label in recipe.labels for c, _ in recipe.training_captions(label)]
    training += [c for c, _ in recipe.mixture_captions()] + list(extra)
    # A source's `tags` bring their captions to every training clip of that source too.
    training += [c for s in recipe.sources for t in s.tags for c in recipe.tag_captions.get(t, ())]
    leaked = sorted({queries[k] for k in map(normalise, training) if k in queries})
    if leaked:
        raise DatasetError(
            f"recipe '{recipe.path}': held-out queries also used as training captions: "
            + "; ".join(leaked[:5])
        )
